"""The API process keeps the cyclic collector's full passes rare: with 10,000 streams open each
one stalled every request and stream for up to a second."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from api.__main__ import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_api_raises_the_collector_thresholds_and_freezes_what_startup_made(
    restored_gc: None,
) -> None:
    tune_gc()

    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] >= 10_000  # Python's 700 ran a pass every few requests
    assert gc.get_freeze_count() > 0
