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
        "knee",
        "limits",
        "sse",
        "callbacks",
        "failover",
        "purge",
    ]
    assert all(t.kind in ("min", "max") for t in TARGETS.values())
    assert QUICK.duration_s < FULL.duration_s and QUICK.sse_streams < FULL.sse_streams
    assert FULL.knee_rates[0] == FULL.e2e_rate and list(FULL.knee_rates) == sorted(FULL.knee_rates)
    assert QUICK.callbacks_rate < FULL.callbacks_rate == 250
    # Issue 20's load: 100 calls/s; a smoke run is shorter.
    assert QUICK.failover_duration_s < FULL.failover_duration_s
    assert FULL.failover_rate == 100


def test_a_failover_lateness_under_a_second_passes() -> None:
    # The histogram's bucket bounds: ≤ 1,000 ms is under the target's second; the next is 2.5 s.
    assert Figure("failover_lateness_max_ms", "tuned", 1000).passed is True
    assert Figure("failover_lateness_max_ms", "tuned", 2500).passed is False


def test_a_knee_rate_is_held_only_with_nothing_lost_the_rate_kept_and_timers_on_time() -> None:
    from types import SimpleNamespace

    from bench.scenarios.knee import cpu_ms_per_call, held

    def run(errors=0, per_s=500.0, p99=25.0, cpu=None):
        buckets = {"timers": 10, "p99_ms": p99, "max_ms": p99, "max_over_last_bucket": False}
        return SimpleNamespace(rate=500.0, per_s=per_s, errors=errors, late=buckets, cpu=cpu or {})

    assert held(run())[0]
    assert not held(run(errors=1))[0]
    assert not held(run(per_s=480))[0]
    assert not held(run(p99=100))[0]
    assert cpu_ms_per_call(run(cpu={"api": 50.0, "postgres": 100.0, "tiny": 0.1})) == {
        "api": 1.0,
        "postgres": 2.0,
    }
