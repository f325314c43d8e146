"""Exponential backoff with jitter, for every retry the platform makes of its own work (uploads,
status callbacks)."""

from __future__ import annotations

import random

# Each delay is drawn within this fraction either side of its exponential value, so retries of
# work that failed together spread out instead of failing together again.
JITTER = 0.2


def backoff_ms(attempt: int, base_ms: float, rng: random.Random | None = None) -> float:
    """The wait after failed `attempt` (1, 2, ...): `base_ms`, twice that, four times... each
    ±20%."""
    return base_ms * 2 ** (attempt - 1) * (rng or random).uniform(1 - JITTER, 1 + JITTER)
