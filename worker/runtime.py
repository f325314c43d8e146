"""One event loop per worker process, on its own thread, holding the process's pools.

RQ runs an `async def` job with asyncio.run, a fresh loop per job, and an asyncpg pool cannot
outlive the loop it was made on. So jobs stay plain functions and hand their coroutines to this
long-lived loop; the pool and the Redis client are opened once per process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from redis import Redis as SyncRedis

from calls.callbacks import Callbacks
from calls.dead_letters import DeadLetters
from calls.moves import Moves
from calls.recordings import Recordings
from calls.stores import Stores, pools_of
from calls.timed_work import KINDS, Handler
from calls.timers import Timers
from calls.transitions import Transitions
from core.settings import Settings, get_settings

T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="worker-loop", daemon=True
        )
        self._thread.start()
        self.stores: Stores = self.run(Stores.open(settings, pools_of("worker", settings)))
        self.transitions = Transitions(self.stores)
        self.timers = Timers(self.stores.mux)
        self.dead_letters = DeadLetters(SyncRedis.from_url(settings.redis_dsn))
        self.recordings = Recordings(self.stores, dead_letters=self.dead_letters)
        self.moves = Moves(self.stores, self.transitions)
        self.callbacks = Callbacks(self.stores, self.dead_letters)
        # The callbacks of the transitions this process makes start here at once, not a
        # scheduler's pass later.
        self.transitions.send_callbacks = self.callbacks.start
        # The handler of each kind of timed work, by kind.
        self.handlers: dict[str, Handler] = {kind.name: kind.handler(self) for kind in KINDS}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the process's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        self.run(self.callbacks.aclose())
        self.run(self.recordings.aclose())
        self.run(self.transitions.publisher.close())
        self.run(self.stores.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's runtime, opened on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime
