"""`knee`: the highest end-to-end rate the platform sustains. Runs end to end at each rate of
the load's ladder in turn (60 s each at the issue's load), until one fails: a call lost or not
completed once with its recording, the rate not held, or the timers' lateness p99 over 50 ms.
Reports the highest that held, and where the CPU went per call at each rate tried."""

from __future__ import annotations

from typing import Any

from bench import verify
from bench.scenarios.e2e import EndToEnd, run_end_to_end
from bench.session import Bench
from bench.targets import FULL

# A rate is held when this share of it is sustained (the open-loop client's own jitter aside).
HELD_SHARE = 0.98
LATENESS_P99_MS = 50


def held(run: EndToEnd) -> tuple[bool, str]:
    """Whether a run held its rate, and why not."""
    p99, _ = verify.lateness_bounds(run.late)
    if run.errors:
        return False, f"{run.errors} calls lost, failed or not completed once"
    if run.per_s < HELD_SHARE * run.rate:
        return False, f"sustained {run.per_s:.0f}/s of {run.rate:g}/s"
    if p99 is None or p99 > LATENESS_P99_MS:
        return False, f"timer lateness p99 {p99} ms"
    return True, f"held: lateness p99 ≤ {p99:g} ms"


def cpu_ms_per_call(run: EndToEnd) -> dict[str, float]:
    """Each process's CPU per call created, in ms (its share of a core over the creating
    period, divided by the rate): what a call costs where."""
    return {
        name: round(share / 100 * 1000 / run.rate, 3)
        for name, share in run.cpu.items()
        if share >= 0.5
    }


async def knee(b: Bench) -> None:
    """End to end at rising rates until one is not held: the highest held, CPU per call."""
    detail = b.detail("knee")
    tried: list[dict[str, Any]] = []
    best: float | None = None
    for rate in b.load.knee_rates:
        run = await run_end_to_end(b, rate, b.load.e2e_duration_s, f"knee {rate:g}/s")
        ok, why = held(run)
        per_call = cpu_ms_per_call(run)
        tried.append({"rate": rate, "held": ok, "why": why, "cpu_ms_per_call": per_call})
        b.say(
            f"  {'[green]' if ok else '[red]'}{rate:g}/s: {why}[/]; CPU per call (ms): "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in per_call.items())
        )
        await b.settle(f"knee {rate:g}/s", b.load.drain_timeout_s)
        if not ok:
            break
        best = rate
    detail["rates"] = tried
    comparable = b.load.e2e_duration_s >= FULL.e2e_duration_s and bool(tried)
    rates = ", ".join(f"{t['rate']:g}" for t in tried)
    last = tried[-1]["why"] if tried else "-"
    b.add(
        "knee_calls_per_s",
        best,
        comparable=comparable,
        note=f"tried {rates}/s, {b.load.e2e_duration_s:g} s each; the last: {last}",
    )
