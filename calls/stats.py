"""The supervisor's figures: windows and buckets, and the industry's formulas over the sums the
rollups keep (db/stats.py). Every answer and live message computes them here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.clock import iso
from core.errors import BadRequest
from core.settings import Settings
from db.pool import Executor
from db.stats import FLAG_COLUMNS, Range, StatsFilter, fetch_queue_figures

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
WINDOWS = {"15m": 15 * MINUTE, "1h": HOUR, "24h": DAY}
DEFAULT_WINDOW = "1h"
# A bucket of a series, and the span of the rows that make it (the largest that divides it).
BUCKETS = {"1m": (MINUTE, "minute"), "5m": (5 * MINUTE, "minute"), "1h": (HOUR, "hour")}
# How far apart `since` and `until` may be.
MAX_WINDOW = timedelta(days=31)
# Points in one series: a day at 1m.
MAX_SERIES_POINTS = 1_440
# Queues or agents in one answer; `after` pages on.
MAX_PER_ANSWER = 1_000
_SPANS = (("day", DAY), ("hour", HOUR))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The start of the UTC-aligned `step` that `moment` falls in."""
    return _EPOCH + (moment - _EPOCH) // step * step


def ceil_to(moment: datetime, step: timedelta) -> datetime:
    floored = floor_to(moment, step)
    return floored if floored == moment else floored + step


@dataclass(frozen=True, slots=True)
class Window:
    """Calls that started in [since, until); `name` is the window asked for, if one was."""

    since: datetime
    until: datetime
    name: str | None = None

    def body(self) -> dict[str, Any]:
        return {"window": self.name, "since": iso(self.since), "until": iso(self.until)}


def window_of(
    window: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    step: timedelta = MINUTE,
) -> Window:
    """The window a request asks for, its ends on `step`s: a named one ends with the `step` now
    is in; `since` is floored and `until` (default now) ceiled. Raises BadRequest naming the
    parameters that are wrong."""
    if window is not None and (since is not None or until is not None):
        raise BadRequest("Give either window or since/until, not both")
    if since is None:
        if until is not None:
            raise BadRequest("until needs since")
        name = window or DEFAULT_WINDOW
        end = floor_to(now, step) + step
        return Window(floor_to(end - WINDOWS[name], step), end, name)
    start, end = floor_to(since, step), ceil_to(until or now, step)
    if end <= start:
        raise BadRequest("until must be after since")
    if end - start > MAX_WINDOW:
        raise BadRequest(f"since and until must be at most {MAX_WINDOW.days} days apart")
    return Window(start, end)


def ranges_of(since: datetime, until: datetime) -> list[Range]:
    """[since, until) (on minutes) as the fewest rows: whole days, then whole hours at the
    edges, then minutes."""

    def cover(low: datetime, high: datetime, spans: tuple[tuple[str, timedelta], ...]):
        if low >= high:
            return []
        if not spans:
            return [Range("minute", low, high)]
        (span, size), rest = spans[0], spans[1:]
        first, last = ceil_to(low, size), floor_to(high, size)
        if first >= last:
            return cover(low, high, rest)
        return [*cover(low, first, rest), Range(span, first, last), *cover(last, high, rest)]

    return cover(since, until, _SPANS)


def measured_against(settings: Settings) -> dict[str, Any]:
    """What every answer says the service level is judged by."""
    return {
        "service_level_s": settings.service_level_s,
        "service_level_target_pct": settings.service_level_target_pct,
    }


def _ratio(part: int, whole: int, scale: float = 1) -> float | None:
    return None if whole <= 0 else round(part * scale / whole, 2)


def window_figures(sums: Mapping[str, Any]) -> dict[str, Any]:
    """A window's figures from its sums (a row of db/stats.py): percentages and averages are
    null where there is nothing to divide by."""
    offered, answered, short = sums["offered"], sums["answered"], sums["short_abandoned"]
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": sums["abandoned"],
        "short_abandoned": short,
        # Short abandons are left out: the caller left before anyone could have answered.
        "service_level_pct": _ratio(sums["answered_in_sl"], offered - short, 100),
        "abandon_rate_pct": _ratio(sums["abandoned"], offered, 100),
        "asa_s": _ratio(sums["wait_ms"], answered, 0.001),
        "aht_s": _ratio(sums["handle_ms"], sums["handled"], 0.001),
        "flags": {flag: sums[flag] for flag in FLAG_COLUMNS},
    }


def queue_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """One queue of `GET /stats/queues` (and of a `stats` message)."""
    longest = row["longest_wait_ms"]
    return (
        {"queue_id": row["queue_id"]}
        | window_figures(row)
        | {
            "waiting_now": row["waiting_now"],
            "longest_wait_s": None if longest is None else round(longest / 1000, 2),
            "on_hold_now": row["on_hold_now"],
        }
    )


def agent_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """One agent of `GET /stats/agents`."""
    return {
        "agent_id": row["agent_id"],
        "handled": row["handled"],
        "aht_s": _ratio(row["handle_ms"], row["handled"], 0.001),
        "holds": row["holds"],
        "hold_s": round(row["hold_ms"] / 1000, 2),
    }


async def read_queues(
    conn: Executor, key_id: str, window: Window, where: StatsFilter, time_scale: float, limit: int
) -> list[dict[str, Any]]:
    """The figures of the key's queues over `window` (and now), at most `limit` of them."""
    rows = await fetch_queue_figures(
        conn,
        key_id,
        ranges_of(window.since, window.until),
        where,
        time_scale=time_scale,
        limit=limit,
    )
    return [queue_figures(row) for row in rows]
