"""The table of targets and how a figure is judged against its own."""

from __future__ import annotations

import math

import pytest

from bench.scenarios import SCENARIOS
from bench.targets import FULL, QUICK, TARGETS, Figure


def test_a_throughput_passes_at_or_above_its_target() -> None:
    assert Figure("post_calls_per_s", "tuned", 1500).passed is True
    assert Figure("post_calls_per_s", "tuned", 1499.9).passed is False


def test_a_latency_passes_at_or_below_its_target() -> None:
    assert Figure("post_calls_p99_ms_16c", "default", 25).passed is True
    assert Figure("post_calls_p99_ms_16c", "default", 25.1).passed is False
    assert Figure("timer_lateness_max_ms", "default", math.inf).passed is False


def test_errors_or_no_value_fail_whatever_the_value() -> None:
    assert Figure("get_call_per_s", "tuned", 9000, errors=1).passed is False
    assert Figure("timer_lateness_p99_ms", "tuned", None).passed is False


def test_a_figure_at_another_load_is_shown_but_not_judged() -> None:
    assert Figure("e2e_calls_per_s", "tuned", 100, comparable=False).passed is None


def test_a_check_passes_only_with_no_problem() -> None:
    assert Figure("e2e_checked", "tuned", 0).passed is True
    assert Figure("e2e_checked", "tuned", 1).passed is False


def test_the_share_of_the_ceiling_and_the_json_name_the_configuration() -> None:
    figure = Figure("post_events_per_s", "default", 3000, ceiling=6000)

    record = figure.as_json()

    assert figure.vs_ceiling == 0.5
    assert record["configuration"] == "default"
    assert (record["target"], record["target_kind"], record["unit"]) == (2000, "at least", "/s")


def test_an_unknown_figure_has_no_target() -> None:
    with pytest.raises(KeyError):
        _ = Figure("made_up", "tuned", 1).passed


def test_every_scenario_is_named_and_the_quick_load_is_lighter() -> None:
    assert list(SCENARIOS) == [
        "post_calls",
        "post_latency",
        "open_loop",
        "get_call",
        "post_events",
        "e2e",
        "limits",
        "sse",
        "callbacks",
    ]
    assert all(t.kind in ("min", "max") for t in TARGETS.values())
    assert QUICK.duration_s < FULL.duration_s and QUICK.sse_streams < FULL.sse_streams
    assert QUICK.callbacks_rate < FULL.callbacks_rate == 250
