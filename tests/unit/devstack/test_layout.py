"""A layout names its processes the way the tests, the benchmark and their logs refer to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.layout import Layout, start_layout


def test_a_layout_names_the_first_of_a_kind_plainly_and_numbers_workers_from_one() -> None:
    assert Layout(apis=2, workers=3, schedulers=2).members() == [
        ("api", "api"),
        ("api2", "api"),
        ("worker1", "worker"),
        ("worker2", "worker"),
        ("worker3", "worker"),
        ("scheduler", "scheduler"),
        ("scheduler2", "scheduler"),
    ]
    assert Layout(workers=0).members() == [("api", "api"), ("scheduler", "scheduler")]
    assert Layout(2, 3, 2).describe() == "2 API processes, 3 workers, 2 schedulers"


def test_each_api_process_needs_a_port_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 API processes need as many ports"):
        start_layout(Layout(apis=2), {}, tmp_path, [3000])
