"""The kinds of timed work, registered in one place: each kind's timers (a Redis sorted set,
core/keys.py), the handler that works off a batch of them in a worker process, the upkeep check
that re-arms from PostgreSQL what Redis lost, and what a requeued dead letter of the kind does.
The worker's jobs and the scheduler hold no code of their own for any kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from calls.callbacks import Callbacks, resume_callbacks
from calls.moves import Moves, resume_moves
from calls.recordings import Recordings, resume_uploads
from calls.stores import Stores
from calls.timers import DueTimer
from core import keys


class Handler(Protocol):
    """Works off one kind's due timers in a worker process."""

    async def work(self, due: Sequence[DueTimer]) -> None:
        """Do what a batch of due timers asks (taken from Redis already)."""
        ...

    async def flush(self) -> None:
        """Add what it counted to the figures /metrics shows (a job calls it as it ends)."""
        ...


class Services(Protocol):
    """What a worker process opens once, from which each kind's handler is made."""

    moves: Moves
    recordings: Recordings
    callbacks: Callbacks


@dataclass(frozen=True, slots=True)
class Kind:
    # Its timers are the sorted set keys.timers(name), their members made in core/keys.py.
    name: str
    handler: Callable[[Services], Handler]
    # Upkeep: re-arm the work PostgreSQL has due whose timer Redis lost, at most `limit` a pass;
    # returns how many.
    resume: Callable[[Stores, int], Awaitable[int]]
    # A requeued dead letter (calls/dead_letters.py): try the call's spent work once more, raise
    # RetryFailed if it fails again. None: the kind's work is never spent.
    retry: Callable[[Services, str], Awaitable[None]] | None = None


KINDS: tuple[Kind, ...] = (
    Kind(keys.ADVANCE, lambda services: services.moves, resume_moves),
    Kind(
        keys.UPLOAD,
        lambda services: services.recordings,
        resume_uploads,
        lambda services, call_id: services.recordings.retry(call_id),
    ),
    Kind(
        keys.CALLBACK,
        lambda services: services.callbacks,
        resume_callbacks,
        lambda services, call_id: services.callbacks.retry(call_id),
    ),
)
BY_NAME = {kind.name: kind for kind in KINDS}
assert tuple(BY_NAME) == keys.TIMER_KINDS, "every kind of timer registered, once, in order"
