"""The benchmark's scenarios, one module each, in the order a run takes them; each drives one
figure of issue 8 (and its bare ceiling, right before it, so the two share the machine's mood),
checks what it made, and records figures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.scenarios.callbacks import callbacks
from bench.scenarios.e2e import end_to_end
from bench.scenarios.failover import failover
from bench.scenarios.get_call import get_call
from bench.scenarios.knee import knee
from bench.scenarios.limits import limits
from bench.scenarios.open_loop import open_loop_latency
from bench.scenarios.post_calls import post_calls
from bench.scenarios.post_events import post_events
from bench.scenarios.post_latency import post_latency
from bench.scenarios.purge import purge
from bench.scenarios.sse import sse
from bench.session import Bench

SCENARIOS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "post_calls": post_calls,
    "post_latency": post_latency,
    "open_loop": open_loop_latency,
    "get_call": get_call,
    "post_events": post_events,
    "e2e": end_to_end,
    "knee": knee,
    "limits": limits,
    "sse": sse,
    "callbacks": callbacks,
    "failover": failover,
    # Last: the purge it starts goes on after it.
    "purge": purge,
}
