"""Retries wait twice as long each time, spread ±20%."""

from __future__ import annotations

import random

import pytest

from core.backoff import backoff_ms


@pytest.mark.parametrize(("attempt", "middle_ms"), [(1, 500), (2, 1_000), (3, 2_000), (6, 16_000)])
def test_each_wait_doubles_within_twenty_percent(attempt: int, middle_ms: float) -> None:
    rng = random.Random(attempt)

    waits = [backoff_ms(attempt, 500, rng) for _ in range(1_000)]

    assert all(middle_ms * 0.8 <= wait <= middle_ms * 1.2 for wait in waits)
    assert max(waits) - min(waits) > middle_ms * 0.3, "spread over the range"
