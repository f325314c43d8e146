"""Every kind of timed work is registered once, with its handler and its upkeep check."""

from __future__ import annotations

import inspect
from pathlib import Path

from calls.timed_work import KINDS
from core import keys

ROOT = Path(__file__).resolve().parents[3]


def test_every_kind_of_timer_is_registered_once_in_order() -> None:
    assert [kind.name for kind in KINDS] == list(keys.TIMER_KINDS)


def test_each_kind_has_a_handler_and_an_upkeep_check() -> None:
    for kind in KINDS:
        assert callable(kind.handler), kind.name
        assert inspect.iscoroutinefunction(kind.resume), kind.name


def test_the_worker_job_and_the_scheduler_hold_no_code_of_any_kind() -> None:
    for path in ("worker/jobs.py", "scheduler/dispatch.py", "scheduler/upkeep.py"):
        source = (ROOT / path).read_text()
        for name in ("ADVANCE", "UPLOAD", "CALLBACK", '.split(":'):
            assert name not in source, (path, name)
