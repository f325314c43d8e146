"""Every figure the benchmark reports, with issue 8's target for it, in one table; the loads
at which a figure is judged against its target; and `Figure`, one measured value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure is and what it must be: at least (`min`) or at most (`max`) `bound`."""

    label: str
    unit: str
    bound: float
    kind: Literal["min", "max"]


def _check(label: str) -> Target:
    """A correctness check: the count of problems a run's verification found must be 0."""
    return Target(label, "problems", 0, "max")


TARGETS: dict[str, Target] = {
    "post_calls_per_s": Target("POST /calls throughput, 64 clients", "/s", 1500, "min"),
    "post_calls_checked": _check("POST /calls run: calls completed once, recorded"),
    "post_calls_p99_ms_16c": Target("POST /calls p99 latency, 16 clients", "ms", 25, "max"),
    "post_latency_checked": _check("16-client run: calls completed once, recorded"),
    "post_calls_p99_ms_open_loop": Target("POST /calls p99 latency, open loop", "ms", 25, "max"),
    "open_loop_checked": _check("open-loop run: nothing lost, completed once"),
    "get_call_per_s": Target("GET /calls/{id} throughput, 64 clients", "/s", 6000, "min"),
    "post_events_per_s": Target("POST /events throughput, 64 clients", "/s", 2000, "min"),
    "post_events_checked": _check("POST /events run: answered events stored"),
    "e2e_calls_per_s": Target("calls created → completed with recording", "/s", 500, "min"),
    "e2e_checked": _check("end to end: zero lost, each completed once"),
    "timer_lateness_p99_ms": Target("timer lateness p99 (bucket bound)", "ms", 50, "max"),
    "timer_lateness_max_ms": Target("timer lateness max (bucket bound)", "ms", 250, "max"),
    "knee_calls_per_s": Target(
        "highest end-to-end rate sustained (none lost, lateness p99 ≤ 50 ms)", "/s", 1000, "min"
    ),
    "limits_checked": _check("limits held (20/s key; 10-active key)"),
    "sse_streams_open": Target("open SSE streams, one API process", "streams", 10_000, "min"),
    "sse_delivery_p99_ms": Target("SSE update delivered, p99", "ms", 100, "max"),
    "sse_api_rss_mib": Target("API RSS with the streams open (peak)", "MiB", 1024, "max"),
    "sse_checked": _check("SSE: every update once, in order; streams freed"),
    "purge_post_p99_ms": Target("POST /calls p99 (open loop) during a purge", "ms", 25, "max"),
    "purge_get_per_s": Target("GET /calls/{id} throughput during a purge", "/s", 6000, "min"),
    # Faster than calls are made at the end-to-end target, or the table would still grow.
    "purge_calls_per_s": Target("calls past retention deleted per second", "/s", 500, "min"),
    "callback_post_p50_extra_ms": Target(
        "POST /calls p50 with a status_callback, beyond one without", "ms", 1, "max"
    ),
    "callback_delivery_p99_ms": Target(
        "status callback received, from commit, p99", "ms", 250, "max"
    ),
    "callbacks_checked": _check("status callbacks: every transition received, in order"),
    # Under 1 s: a bucket bound of 1,000 ms (the histogram's) is what the target allows.
    "failover_lateness_max_ms": Target(
        "timer lateness max, each scheduler SIGKILLed in turn (bucket bound)", "ms", 1000, "max"
    ),
    "failover_checked": _check("failover: zero lost, each completed once"),
}


@dataclass(frozen=True, slots=True)
class Load:
    """How hard and how long the scenarios drive the platform."""

    duration_s: float  # each wrk and open-loop run
    open_loop_rate: float  # POST /calls per second, open loop
    e2e_rate: float  # calls per second end to end
    e2e_duration_s: float
    sse_streams: int
    sse_rate: float  # updates per second posted to the streams
    drain_timeout_s: float  # the longest to wait for a run's calls to finish
    knee_rates: tuple[float, ...]  # end-to-end rates tried in turn, for e2e_duration_s each
    callbacks_rate: float  # calls per second with a status callback
    failover_rate: float  # calls per second while the schedulers are killed in turn
    failover_duration_s: float


# The loads: only figures measured at them (or beyond) are judged against the targets.
FULL = Load(30, 1000, 500, 60, 10_000, 1000, 120, (500, 750, 1000, 1250, 1500), 250, 100, 30)
# A smoke run (--quick): every scenario for a few seconds; its figures are shown, not judged.
QUICK = Load(3, 1000, 100, 5, 500, 500, 60, (50, 100), 50, 100, 9)


@dataclass
class Figure:
    """One measured value of one configuration: a line of the result table and of the JSON."""

    key: str  # in TARGETS
    configuration: str
    value: float | None
    ceiling: float | None = None
    errors: int = 0
    # False when the load differs from the (--quick): shown, not judged.
    comparable: bool = True
    note: str = ""

    @property
    def target(self) -> Target:
        return TARGETS[self.key]

    @property
    def passed(self) -> bool | None:
        """None: not judged (no comparable load); else whether the value meets its target
        (a run with errors never does)."""
        if not self.comparable:
            return None
        if self.value is None or self.errors:
            return False
        bound = self.target.bound
        return self.value >= bound if self.target.kind == "min" else self.value <= bound

    @property
    def vs_ceiling(self) -> float | None:
        if self.ceiling is None or self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling

    def as_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "label": target.label,
            "configuration": self.configuration,
            "value": self.value,
            "unit": target.unit,
            "target": target.bound,
            "target_kind": "at least" if target.kind == "min" else "at most",
            "ceiling": round(self.ceiling, 2) if self.ceiling is not None else None,
            "vs_ceiling": round(self.vs_ceiling, 4) if self.vs_ceiling is not None else None,
            "errors": self.errors,
            "comparable": self.comparable,
            "passed": self.passed,
            "note": self.note,
        }
