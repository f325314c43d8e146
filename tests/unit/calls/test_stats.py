"""Windows, the rows that cover them, and the formulas of the supervisor's figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from calls.stats import (
    HOUR,
    MINUTE,
    agent_figures,
    ranges_of,
    window_figures,
    window_of,
)
from core.errors import BadRequest
from db.stats import FLAG_COLUMNS, QUEUE_COLUMNS, Range

NOW = datetime(2026, 3, 2, 9, 41, 27, 500_000, tzinfo=UTC)


def t(hour: int, minute: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_a_named_window_ends_with_the_minute_now_is_in() -> None:
    window = window_of("1h", None, None, NOW)
    assert (window.since, window.until, window.name) == (t(8, 42), t(9, 42), "1h")
    assert window_of(None, None, None, NOW).name == "1h"  # the default
    day = window_of("24h", None, None, NOW)
    assert day.until - day.since == timedelta(days=1)
    # A series' window ends with the bucket now is in.
    hourly = window_of("24h", None, None, NOW, HOUR)
    assert (hourly.since, hourly.until) == (t(10, day=1), t(10))


def test_since_is_floored_and_until_ceiled_to_the_step_and_until_defaults_to_now() -> None:
    window = window_of(None, t(9, 0) + timedelta(seconds=30), t(9, 10) + timedelta(seconds=1), NOW)
    assert (window.since, window.until, window.name) == (t(9, 0), t(9, 11), None)
    assert window_of(None, t(9, 0), None, NOW).until == t(9, 42)
    assert window_of(None, t(9, 0), t(9, 5), NOW, 5 * MINUTE).until == t(9, 5)


@pytest.mark.parametrize(
    ("window", "since", "until", "says"),
    [
        ("1h", t(9), None, "either window or since/until"),
        (None, None, t(9), "until needs since"),
        (None, t(9), t(9), "until must be after since"),
        (None, t(9), t(8), "until must be after since"),
        (None, t(9, day=1) - timedelta(days=31), t(9, day=2), "at most 31 days apart"),
    ],
)
def test_a_window_that_cannot_be_is_refused_naming_its_parameters(
    window: str | None, since: datetime | None, until: datetime | None, says: str
) -> None:
    with pytest.raises(BadRequest, match=says):
        window_of(window, since, until, NOW)


def test_thirty_one_days_exactly_are_a_window() -> None:
    window = window_of(None, t(9, day=1), t(9, day=1) + timedelta(days=31), NOW)
    assert window.until - window.since == timedelta(days=31)


def test_a_window_reads_whole_days_then_hours_then_minutes_at_its_edges() -> None:
    since, until = t(22, 50, day=1), t(2, 5, day=3)
    assert ranges_of(since, until) == [
        Range("minute", t(22, 50, day=1), t(23, day=1)),
        Range("hour", t(23, day=1), t(0, day=2)),
        Range("day", t(0, day=2), t(0, day=3)),
        Range("hour", t(0, day=3), t(2, day=3)),
        Range("minute", t(2, day=3), t(2, 5, day=3)),
    ]
    # Within one hour: minutes only; on hour bounds: hours only.
    assert ranges_of(t(9, 5), t(9, 50)) == [Range("minute", t(9, 5), t(9, 50))]
    assert ranges_of(t(9), t(12)) == [Range("hour", t(9), t(12))]


def sums(**given: int) -> dict[str, int]:
    return dict.fromkeys(QUEUE_COLUMNS, 0) | given


def test_the_figures_follow_the_industrys_formulas() -> None:
    figures = window_figures(
        sums(
            offered=9,
            answered=5,
            answered_in_sl=4,
            wait_ms=83_000,
            abandoned=3,
            short_abandoned=1,
            handled=4,
            handle_ms=405_000,
            short_call=1,
        )
    )
    assert figures == {
        "offered": 9,
        "answered": 5,
        "abandoned": 3,
        "short_abandoned": 1,
        "service_level_pct": 50.0,  # 4 of 9 - 1: short abandons are left out
        "abandon_rate_pct": 33.33,  # 3 of 9
        "asa_s": 16.6,
        "aht_s": 101.25,
        "flags": dict.fromkeys(FLAG_COLUMNS, 0) | {"short_call": 1},
    }


def test_percentages_and_averages_are_null_with_nothing_to_divide_by() -> None:
    assert window_figures(sums()) | {"flags": None} == {
        "offered": 0,
        "answered": 0,
        "abandoned": 0,
        "short_abandoned": 0,
        "service_level_pct": None,
        "abandon_rate_pct": None,
        "asa_s": None,
        "aht_s": None,
        "flags": None,
    }
    # Only short abandons: nothing the service level could be judged on.
    only_short = window_figures(sums(offered=2, abandoned=2, short_abandoned=2))
    assert (only_short["service_level_pct"], only_short["abandon_rate_pct"]) == (None, 100.0)
    idle = agent_figures({"agent_id": "a", "handled": 0, "handle_ms": 0, "holds": 0, "hold_ms": 0})
    assert (idle["aht_s"], idle["hold_s"]) == (None, 0.0)
