"""The checks the benchmark applies to what a run made: each fault is found and counted once."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.verify import (
    LimitsCheck,
    events_stored_problems,
    gap_overshoot,
    judge_callbacks,
    judge_rows,
    lateness_bounds,
    lateness_buckets,
    lateness_figures,
    max_lifetime_s,
    max_overlap,
    most_in_window,
    row_from_api,
    stream_faults,
    sustained_rate,
)

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DEFAULTS = {
    "TIME_SCALE": "1.0",
    "RING_DELAY_MAX_MS": "2000",
    "ANSWER_DELAY_MAX_MS": "5000",
    "TALK_DELAY_MAX_MS": "4000",
    "UNANSWERED_DELAY_MAX_MS": "2000",
}


def call(call_id: str = "c1", **changed: Any) -> dict[str, Any]:
    """A simulated call that went well: answered, completed once, recorded 0.5 s after."""
    return {
        "call_id": call_id,
        "kind": "simulated",
        "status": "COMPLETED",
        "seq": 4,
        "has_url": True,
        "created_at": T0,
        "recording_status": "uploaded",
        "uploaded_at": T0 + timedelta(seconds=0.5),
        "n": 4,
        "lo": 1,
        "hi": 4,
        "distinct_seqs": 4,
        "completions": 1,
        "path": "QUEUED>RINGING>ANSWERED>COMPLETED",
        "chain_ok": True,
    } | changed


def test_a_call_that_completed_once_with_its_recording_passes() -> None:
    check = judge_rows([call()], {"c1"})

    assert (check.found, check.done, check.problems, check.expected) == (1, 1, 0, 1)
    assert check.lifetimes_s == [0.5]
    assert check.summary()["created_to_recorded_ms"]["p50"] == 500.0


def test_a_call_answered_201_but_not_stored_is_lost() -> None:
    check = judge_rows([call("c1")], {"c1", "c2"})

    assert check.lost == 1
    assert check.problems == 1
    assert "c2: answered 201 but not in PostgreSQL" in check.examples


def test_an_unfinished_call_counts_once_and_is_not_judged_further() -> None:
    check = judge_rows([call(status="RINGING", completions=0, path="QUEUED>RINGING")], None)

    assert (check.unfinished, check.bad_history, check.completed_twice, check.problems) == (
        1,
        0,
        0,
        1,
    )
    assert check.expected == 1


def test_a_completed_call_without_its_recording_is_a_problem() -> None:
    check = judge_rows([call(recording_status="pending")], {"c1"})

    assert check.no_recording == 1
    assert check.done == 0
    assert check.breakdown() == "; 1 no recording"


def test_a_recording_is_not_asked_for_when_the_run_does_not_need_one() -> None:
    check = judge_rows([call(recording_status=None, has_url=False)], None, need_recording=False)

    assert check.problems == 0


def test_a_history_with_a_gap_or_a_broken_chain_is_bad() -> None:
    gap = call("gap", n=3, distinct_seqs=3, lo=1, hi=4)
    broken = call("broken", chain_ok=False)
    repeated = call("repeated", n=5, distinct_seqs=4, hi=4)

    check = judge_rows([gap, broken, repeated], None)

    assert check.bad_history == 3
    assert check.done == 0


def test_a_call_completed_twice_is_found() -> None:
    check = judge_rows([call(completions=2)], None)

    assert check.completed_twice == 1
    assert check.problems == 1


def test_a_simulated_call_on_a_path_the_lifecycle_does_not_take_is_found() -> None:
    check = judge_rows([call(path="QUEUED>ANSWERED>COMPLETED")], None)

    assert check.bad_path == 1


def test_an_ingested_call_may_take_any_path() -> None:
    check = judge_rows(
        [call(kind="ingested", path="QUEUED>COMPLETED", n=2, seq=2, hi=2, distinct_seqs=2)], None
    )

    assert check.problems == 0


def test_a_call_of_the_key_that_was_not_asked_for_is_unexpected_but_no_fault() -> None:
    check = judge_rows([call("c1"), call("other")], {"c1"})

    assert check.unexpected == 1
    assert check.problems == 0


def test_first_and_last_creation_and_last_upload_are_kept() -> None:
    later = call("c2", created_at=T0 + timedelta(seconds=2), uploaded_at=T0 + timedelta(seconds=3))

    check = judge_rows([later, call("c1")], None)

    assert check.first_created == T0
    assert check.last_created == T0 + timedelta(seconds=2)
    assert check.last_uploaded == T0 + timedelta(seconds=3)


def test_a_call_seen_through_the_api_is_judged_by_its_history() -> None:
    events = [
        {"seq": 1, "status": "QUEUED", "previous_status": None},
        {"seq": 2, "status": "RINGING", "previous_status": "QUEUED"},
        {"seq": 3, "status": "UNANSWERED", "previous_status": "RINGING"},
        {"seq": 4, "status": "COMPLETED", "previous_status": "UNANSWERED"},
    ]
    good = row_from_api("c1", {"created_at": "2026-12-05T12:00:00.000Z"}, events)
    skipped = row_from_api("c2", {}, [events[0], events[2], events[3]])

    check = judge_rows([good, skipped], None)

    assert good["created_at"] == T0
    assert good["path"] == "QUEUED>RINGING>UNANSWERED>COMPLETED"
    assert (check.done, check.bad_history) == (1, 1)


PROMETHEUS = """
# TYPE mockcomms_timer_lateness_seconds histogram
mockcomms_timer_lateness_seconds_bucket{le="0.025"} %d
mockcomms_timer_lateness_seconds_bucket{le="0.05"} %d
mockcomms_timer_lateness_seconds_bucket{le="0.25"} %d
mockcomms_timer_lateness_seconds_bucket{le="+Inf"} %d
mockcomms_timer_lateness_seconds_count %d
"""


def histogram(*cumulative: int) -> dict[float, float]:
    return lateness_buckets(PROMETHEUS % (*cumulative, cumulative[-1]))


def test_lateness_buckets_are_read_by_their_upper_bound() -> None:
    assert histogram(1, 2, 3, 4) == {0.025: 1.0, 0.05: 2.0, 0.25: 3.0, math.inf: 4.0}


def test_lateness_p99_and_max_are_the_bucket_bounds_of_the_timers_fired_between_readings() -> None:
    before = histogram(50, 50, 50, 50)
    # 1,000 timers since: 985 within 25 ms, 10 more within 50 ms, 5 more within 250 ms.
    after = histogram(1035, 1045, 1050, 1050)

    late = lateness_figures(before, after)

    assert late["timers"] == 1000
    assert (late["p99_ms"], late["max_ms"], late["max_over_last_bucket"]) == (50.0, 250.0, False)
    assert lateness_bounds(late) == (50.0, 250.0)


def test_a_timer_beyond_the_last_bucket_makes_the_max_infinite() -> None:
    late = lateness_figures(histogram(0, 0, 0, 0), histogram(99, 99, 99, 100))

    assert late["max_over_last_bucket"]
    assert lateness_bounds(late) == (25.0, math.inf)


def test_no_timer_fired_gives_no_lateness_figure() -> None:
    late = lateness_figures(histogram(7, 7, 7, 7), histogram(7, 7, 7, 7))

    assert late == {"timers": 0, "p99_ms": None, "max_ms": None, "buckets": {}}
    assert lateness_bounds(late) == (None, None)


def test_the_longest_lifetime_follows_the_timings_and_the_time_scale() -> None:
    assert max_lifetime_s(DEFAULTS.__getitem__) == 11.0
    scaled = DEFAULTS | {"TIME_SCALE": "0.05"}
    assert math.isclose(max_lifetime_s(scaled.__getitem__), 0.55)


def test_transitions_past_their_longest_delay_are_counted() -> None:
    gaps = [("QUEUED", 1500.0), ("RINGING", 5200.0), ("ANSWERED", 4100.0), ("QUEUED", None)]

    gap = gap_overshoot(gaps, DEFAULTS.__getitem__)

    assert gap == {"transitions": 3, "over": 2, "p99": 200.0, "max": 200.0}


def test_the_sustained_rate_is_stretched_only_by_a_backlog_beyond_a_calls_lifetime() -> None:
    # 600 calls over 60 s; the last recording came 11 s after the load: no backlog.
    assert sustained_rate(600, 60, 71, 11) == 10
    # ...21 s after: 10 s of backlog stretch the 60 s.
    assert sustained_rate(600, 60, 81, 11) == 600 / 70
    assert sustained_rate(600, 60, None, 11) == 10


def test_overlap_counts_calls_active_at_once_an_end_before_a_start_at_one_instant() -> None:
    s = lambda n: T0 + timedelta(seconds=n)  # noqa: E731
    lives = [(s(0), s(2)), (s(1), s(3)), (s(2), s(4)), (s(2.5), None)]

    assert max_overlap(lives) == 3


def test_the_most_in_any_window_of_a_second() -> None:
    times = [0.0, 0.1, 0.5, 0.99, 1.5]

    assert most_in_window(times) == 4
    # A window shortened by 20 ms of clock skew no longer holds 0.0 and 0.99 together.
    assert most_in_window(times, 1.0, 0.02) == 3


def test_limits_problems_count_each_broken_rule() -> None:
    held = LimitsCheck(10, 20, 0, 5, 10, 20, 0)
    assert held.problems == 0
    broken = LimitsCheck(10, 20, wrong_answers=2, refusals_expected=0, most_active=11,
                         most_in_a_second=21, leases_left=1)  # fmt: skip
    assert broken.problems == 6


def test_stream_faults_find_disorder_repeats_and_a_missing_first_message() -> None:
    received = [[1, 2], [1, 3, 2], [1, 2, 2], [2], []]

    assert stream_faults(received) == (2, 1)


def test_events_stored_may_exceed_the_answered_by_one_per_connection() -> None:
    assert events_stored_problems(100, 100, 64) == 0
    assert events_stored_problems(100, 164, 64) == 0
    assert events_stored_problems(100, 165, 64) == 65
    assert events_stored_problems(100, 90, 64) == 10


# Status callbacks: every transition received, in order per call.


def test_callbacks_all_received_in_order_have_no_problems_and_their_latencies() -> None:
    committed = {("a", 1): 1_000.0, ("a", 2): 1_100.0, ("b", 1): 1_050.0}
    received = [("a", 1, 1_010.0), ("b", 1, 1_060.0), ("a", 2, 1_130.0)]

    check = judge_callbacks(committed, received)

    assert (check.problems, check.delivered, check.expected) == (0, 3, 3)
    assert sorted(check.latencies_ms) == [10.0, 10.0, 30.0]


def test_a_callback_never_received_is_lost() -> None:
    check = judge_callbacks({("a", 1): 0.0, ("a", 2): 0.0}, [("a", 1, 5.0)])

    assert (check.lost, check.problems) == (1, 1)
    assert check.examples == ["a: seq 2 never received"]


def test_a_copy_after_a_later_seq_is_out_of_order_and_one_before_is_a_repeat() -> None:
    committed = {("a", 1): 0.0, ("a", 2): 0.0}
    received = [("a", 1, 1.0), ("a", 1, 2.0), ("a", 2, 3.0), ("a", 1, 4.0)]

    check = judge_callbacks(committed, received)

    assert (check.repeated, check.out_of_order, check.lost) == (2, 1, 0)
    assert check.latencies_ms == [1.0, 3.0], "counted from the first copy"


def test_a_callback_of_another_run_is_unexpected_not_a_problem() -> None:
    check = judge_callbacks({("a", 1): 0.0}, [("z", 1, 1.0), ("a", 1, 2.0)])

    assert (check.unexpected, check.problems) == (1, 0)
