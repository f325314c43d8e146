"""What the benchmark checks as it goes, and how it reads its figures off what it measured:
every call completed exactly once, with its recording, its history numbered 1..n and its path
one the lifecycle allows; nothing lost; limits held; every stream update once and in order;
timer lateness from the platform's histogram. Pure functions over rows the bench reads back
(bench/readback.py), so each rule is tested on its own (tests/unit/bench/)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.stats import percentile

SIMULATED_PATHS = {
    "QUEUED>RINGING>ANSWERED>COMPLETED",
    "QUEUED>RINGING>UNANSWERED>COMPLETED",
}


@dataclass
class CallCheck:
    """The verdict on a set of calls: counts of each kind of fault, with a few examples."""

    expected: int = 0
    found: int = 0
    done: int = 0
    lost: int = 0
    unfinished: int = 0
    no_recording: int = 0
    bad_history: int = 0
    completed_twice: int = 0
    bad_path: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)
    # Seconds from a call's creation to its recording stored (PostgreSQL's clock).
    lifetimes_s: list[float] = field(default_factory=list)
    first_created: datetime | None = None
    last_created: datetime | None = None
    last_uploaded: datetime | None = None

    @property
    def problems(self) -> int:
        return (
            self.lost
            + self.unfinished
            + self.no_recording
            + self.bad_history
            + self.completed_twice
            + self.bad_path
        )

    def breakdown(self) -> str:
        """The kinds of fault found, e.g. "; 410 unfinished" (empty when none)."""
        kinds = ("lost", "unfinished", "no_recording", "bad_history", "completed_twice", "bad_path")
        found = [f"{getattr(self, k):,} {k.replace('_', ' ')}" for k in kinds if getattr(self, k)]
        return "; " + ", ".join(found) if found else ""

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    def summary(self) -> dict[str, Any]:
        lifetimes = sorted(self.lifetimes_s)
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "expected",
                "found",
                "done",
                "lost",
                "unfinished",
                "no_recording",
                "bad_history",
                "completed_twice",
                "bad_path",
                "unexpected",
            )
        }
        out["problems"] = self.problems
        out["examples"] = self.examples
        if lifetimes:
            out["created_to_recorded_ms"] = {
                "p50": round(percentile(lifetimes, 50) * 1000, 1),
                "p99": round(percentile(lifetimes, 99) * 1000, 1),
                "max": round(lifetimes[-1] * 1000, 1),
            }
        return out


def judge_rows(
    rows: Iterable[Mapping[str, Any]],
    expected_ids: set[str] | None,
    *,
    need_recording: bool = True,
) -> CallCheck:
    check = CallCheck()
    seen: set[str] = set()
    for row in rows:
        call_id = row["call_id"]
        seen.add(call_id)
        check.found += 1
        if expected_ids is not None and call_id not in expected_ids:
            check.unexpected += 1
        created = row["created_at"]
        if check.first_created is None or created < check.first_created:
            check.first_created = created
        if check.last_created is None or created > check.last_created:
            check.last_created = created
        if row["status"] != "COMPLETED":
            check.unfinished += 1
            check.note(f"{call_id}: still {row['status']}")
            continue
        ok = True
        if need_recording:
            if row["recording_status"] != "uploaded" or not row["has_url"]:
                check.no_recording += 1
                check.note(f"{call_id}: recording {row['recording_status']}")
                ok = False
            elif row["uploaded_at"] is not None:
                check.lifetimes_s.append((row["uploaded_at"] - created).total_seconds())
                if check.last_uploaded is None or row["uploaded_at"] > check.last_uploaded:
                    check.last_uploaded = row["uploaded_at"]
        n = row["n"] or 0
        if (
            not (
                n == row["seq"] and row["lo"] == 1 and row["hi"] == n and row["distinct_seqs"] == n
            )
            or not row["chain_ok"]
        ):
            check.bad_history += 1
            check.note(f"{call_id}: history {row['path']} (seq {row['seq']})")
            ok = False
        if row["completions"] != 1:
            check.completed_twice += 1
            check.note(f"{call_id}: {row['completions']} completions")
            ok = False
        if row["kind"] == "simulated" and row["path"] not in SIMULATED_PATHS:
            check.bad_path += 1
            check.note(f"{call_id}: path {row['path']}")
            ok = False
        check.done += ok
    if expected_ids is not None:
        check.expected = len(expected_ids)
        missing = expected_ids - seen
        check.lost = len(missing)
        for call_id in list(missing)[:3]:
            check.note(f"{call_id}: answered 201 but not in PostgreSQL")
    else:
        check.expected = check.found
    return check


# -- timer lateness from the Prometheus histogram ------------------------------------------

_BUCKET = re.compile(r'^mockcomms_timer_lateness_seconds_bucket\{le="([^"]+)"\}\s+(\S+)', re.M)
_COUNT = re.compile(r"^mockcomms_timer_lateness_seconds_count\s+(\S+)", re.M)


def lateness_buckets(prometheus_text: str) -> dict[float, float]:
    """Cumulative bucket counts by upper bound in seconds (inf for +Inf)."""
    return {
        (math.inf if le == "+Inf" else float(le)): float(count)
        for le, count in _BUCKET.findall(prometheus_text)
    }


def lateness_figures(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """p99 and max of the timers fired between two readings, as bucket upper bounds (ms)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return {"timers": 0, "p99_ms": None, "max_ms": None, "buckets": {}}
    p99 = next(b for b, c in zip(bounds, counts, strict=True) if c >= 0.99 * total)
    # The highest bucket that gained anything: its bound is what the max is known to be under.
    highest = bounds[0]
    previous = 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative > previous:
            highest = bound
        previous = cumulative
    as_ms = lambda b: None if math.isinf(b) else round(b * 1000, 3)  # noqa: E731
    return {
        "timers": int(total),
        "p99_ms": as_ms(p99),
        "max_ms": as_ms(highest),
        "max_over_last_bucket": math.isinf(highest),
        "buckets": {
            ("+Inf" if math.isinf(b) else f"{b * 1000:g}ms"): int(c)
            for b, c in zip(bounds, counts, strict=True)
        },
    }


def row_from_api(
    call_id: str, call: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """What judge_rows needs of a call seen through the API (GET /calls/{id} answered it
    COMPLETED with a recording_url; `events` from GET /calls/{id}/events)."""
    seqs = [e.get("seq") for e in events]
    chain_ok = all(
        events[i].get("previous_status") == events[i - 1].get("status")
        for i in range(1, len(events))
    )
    return {
        "call_id": call_id,
        "kind": "simulated",
        "status": "COMPLETED",
        "seq": len(events),
        "has_url": True,
        "created_at": _parse_time(call.get("created_at")),
        "recording_status": "uploaded",
        "uploaded_at": None,
        "n": len(events),
        "lo": min(seqs, default=None),
        "hi": max(seqs, default=None),
        "distinct_seqs": len(set(seqs)),
        "completions": sum(e.get("status") == "COMPLETED" for e in events),
        "path": ">".join(str(e.get("status")) for e in events),
        "chain_ok": chain_ok,
    }


def _parse_time(value: Any) -> datetime:
    """An API timestamp; a missing one sorts first (and compares with the others: aware)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.min.replace(tzinfo=UTC)


# -- the lifecycle's timings --------------------------------------------------------------

Setting = Callable[[str], str]


def longest_delays_ms(setting: Setting) -> dict[str, float]:
    """The longest a call may stay in each timed state, after TIME_SCALE."""
    get = lambda name: float(setting(name))  # noqa: E731
    scale = get("TIME_SCALE")
    return {
        "QUEUED": get("RING_DELAY_MAX_MS") * scale,
        "RINGING": get("ANSWER_DELAY_MAX_MS") * scale,
        "ANSWERED": get("TALK_DELAY_MAX_MS") * scale,
        "UNANSWERED": get("UNANSWERED_DELAY_MAX_MS") * scale,
    }


def max_lifetime_s(setting: Setting) -> float:
    """The longest a simulated call lives when no timer is late (ring, answer, talk)."""
    longest = longest_delays_ms(setting)
    last = max(longest["ANSWERED"], longest["UNANSWERED"])
    worst_ms = longest["QUEUED"] + longest["RINGING"] + last
    return worst_ms / 1000


def gap_overshoot(gaps: Iterable[tuple[str, float | None]], setting: Setting) -> dict[str, Any]:
    """How far each timed transition came after the longest delay its stage allows, from
    (from_status, ms since the call's previous transition) pairs: an estimate of timer
    lateness independent of the platform's own histogram. A timer that fired on time shows 0
    or less, so this is about a lower bound of lateness (give or take the previous
    transition's commit time)."""
    longest_ms = longest_delays_ms(setting)
    over = sorted(
        float(gap_ms) - longest_ms[status]
        for status, gap_ms in gaps
        if gap_ms is not None and status in longest_ms
    )
    return {
        "transitions": len(over),
        "over": sum(1 for v in over if v > 0),
        "p99": round(max(0.0, percentile(over, 99)), 1) if over else 0.0,
        "max": round(max(0.0, over[-1]), 1) if over else 0.0,
    }


def sustained_rate(done: int, duration_s: float, span_s: float | None, max_life_s: float) -> float:
    """Calls done per second of the load, stretched by any backlog beyond the longest a call
    can live when nothing waits (`span_s`: first creation to last recording)."""
    effective_s = max(duration_s, span_s - max_life_s) if span_s else duration_s
    return done / effective_s if effective_s else 0.0


# -- limits ------------------------------------------------------------------------------


def max_overlap(intervals: Iterable[tuple[datetime, datetime | None]]) -> int:
    """The most intervals open at one instant (an open end never closes); an end counts
    before a start at the same instant."""
    points = []
    for start, end in intervals:
        points.append((start.timestamp(), 1))
        if end is not None:
            points.append((end.timestamp(), -1))
    points.sort(key=lambda p: (p[0], p[1]))
    running = best = 0
    for _, step in points:
        running += step
        best = max(best, running)
    return best


def most_in_window(times_s: Sequence[float], window_s: float = 1.0, skew_s: float = 0.0) -> int:
    """The most of the sorted `times_s` within any `window_s` (shortened by `skew_s`)."""
    most = lo = 0
    for hi, t in enumerate(times_s):
        while times_s[lo] <= t - (window_s - skew_s):
            lo += 1
        most = max(most, hi - lo + 1)
    return most


@dataclass
class LimitsCheck:
    """One limit driven past: what the API answered and what PostgreSQL and Redis show."""

    max_active: int
    max_cps: int
    wrong_answers: int  # anything but a 201 or a 429 with the limit's own message
    refusals_expected: int  # 429s with the message of the limit driven past
    most_active: int
    most_in_a_second: int
    leases_left: int

    @property
    def problems(self) -> int:
        return (
            self.wrong_answers
            + (self.most_active > self.max_active)
            + (self.most_in_a_second > self.max_cps)
            + (self.leases_left > 0)
            + (self.refusals_expected == 0)  # offered past the limit, it must have refused some
        )


# -- streams -----------------------------------------------------------------------------


def stream_faults(received: Iterable[Sequence[int]]) -> tuple[int, int]:
    """(streams whose seqs came out of order or twice, streams whose first message was not
    the call's seq 1) over each stream's received seqs."""
    disorder = gaps = 0
    for seqs in received:
        if not seqs:
            continue
        disorder += list(seqs) != sorted(set(seqs))
        gaps += seqs[0] != 1
    return disorder, gaps


def events_stored_problems(answered: int, stored: int, connections: int) -> int:
    """wrk stops mid-request at the end, so up to one request per connection may be stored
    without an answer; anything else is a fault."""
    return 0 if answered <= stored <= answered + connections else abs(stored - answered)


def lateness_bounds(late: dict[str, Any]) -> tuple[float | None, float | None]:
    """(p99, max) of lateness_figures as figures: beyond the last bucket is infinite, and no
    timer fired at all gives None."""
    p99 = late["p99_ms"]
    if p99 is None and late["timers"]:
        p99 = math.inf
    highest = math.inf if late.get("max_over_last_bucket") else late["max_ms"]
    return p99, highest


@dataclass
class CallbackCheck:
    """The verdict on a run's status callbacks: every transition's delivery received, in seq
    order per call, and how long after its commit the first copy came."""

    expected: int = 0
    delivered: int = 0
    lost: int = 0
    out_of_order: int = 0
    # Copies of a delivery received before (at least once: not a problem).
    repeated: int = 0
    unexpected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # The same by seq: the first callback of a call is set off by the API, the later ones by
    # the workers' own transitions, so they travel different paths.
    latencies_by_seq: dict[int, list[float]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.lost + self.out_of_order

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms)
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("expected", "delivered", "lost", "out_of_order", "repeated", "unexpected")
        }
        out["problems"] = self.problems
        out["examples"] = self.examples
        if latencies:
            out["commit_to_receipt_ms"] = _spread(latencies)
            out["commit_to_receipt_ms_by_seq"] = {
                seq: _spread(sorted(values))
                for seq, values in sorted(self.latencies_by_seq.items())
            }
        return out


def _spread(sorted_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(sorted_ms, 50), 1),
        "p99": round(percentile(sorted_ms, 99), 1),
        "max": round(sorted_ms[-1], 1),
    }


def judge_callbacks(
    committed: Mapping[tuple[str, int], float], received: Iterable[tuple[str, int, float]]
) -> CallbackCheck:
    """`committed`: each transition that must be called back, (call id, seq) -> its commit
    (epoch ms); `received`: what the receiver got, in the order it came, as (call id, seq,
    epoch ms). A copy that comes after a later seq of its call is out of order."""
    check = CallbackCheck(expected=len(committed))
    first: dict[tuple[str, int], float] = {}
    latest: dict[str, int] = {}
    for call_id, seq, at_ms in received:
        if (call_id, seq) not in committed:
            check.unexpected += 1
            continue
        if seq < latest.get(call_id, 0):
            check.out_of_order += 1
            if len(check.examples) < 5:
                check.examples.append(f"{call_id}: seq {seq} after seq {latest[call_id]}")
        latest[call_id] = max(seq, latest.get(call_id, 0))
        if (call_id, seq) in first:
            check.repeated += 1
        else:
            first[(call_id, seq)] = at_ms
    for key, committed_ms in committed.items():
        if key in first:
            check.delivered += 1
            latency_ms = first[key] - committed_ms
            check.latencies_ms.append(latency_ms)
            check.latencies_by_seq.setdefault(key[1], []).append(latency_ms)
        else:
            check.lost += 1
            if len(check.examples) < 5:
                check.examples.append(f"{key[0]}: seq {key[1]} never received")
    return check
