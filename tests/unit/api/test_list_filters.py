"""GET /calls filters beyond status: flag, type and queue_id."""

from __future__ import annotations

import pytest

from api.request_models import ListCalls, parse_query
from core.errors import BadRequest
from core.lifecycle import Status
from core.rules import Flag

FLAGS = "wait_sla_exceeded, hold_limit_exceeded, short_call, rerouted"


def query_refusal(query: dict[str, str]) -> str:
    with pytest.raises(BadRequest) as refused:
        parse_query(ListCalls, query)
    return refused.value.message


def test_filters_default_to_none() -> None:
    query = parse_query(ListCalls, {})

    assert (query.flag, query.type, query.queue_id) == (None, None, None)


@pytest.mark.parametrize("flag", list(Flag))
def test_every_flag_is_a_filter(flag: Flag) -> None:
    assert parse_query(ListCalls, {"flag": flag.value}).flag is flag


@pytest.mark.parametrize("flag", ["sla", "SHORT_CALL", "short-call", ""])
def test_unknown_flag_is_refused_naming_the_known_ones(flag: str) -> None:
    assert query_refusal({"flag": flag}) == f"flag must be one of {FLAGS}"


@pytest.mark.parametrize("call_type", ["voice", "video"])
def test_type_voice_or_video_is_a_filter(call_type: str) -> None:
    assert parse_query(ListCalls, {"type": call_type}).type == call_type


@pytest.mark.parametrize("call_type", ["fax", "Voice", ""])
def test_another_type_is_refused(call_type: str) -> None:
    assert query_refusal({"type": call_type}) == "type must be one of voice, video"


def test_queue_id_is_a_filter() -> None:
    assert parse_query(ListCalls, {"queue_id": "sales-emea"}).queue_id == "sales-emea"


def test_empty_queue_id_is_refused() -> None:
    assert query_refusal({"queue_id": ""}) == "queue_id must not be empty"


def test_queue_id_longer_than_a_label_is_refused() -> None:
    assert query_refusal({"queue_id": "q" * 101}) == "queue_id is too long"


def test_filters_combine_with_status_and_paging() -> None:
    query = parse_query(
        ListCalls,
        {
            "page": "2",
            "limit": "5",
            "status": "COMPLETED",
            "flag": "short_call",
            "type": "video",
            "queue_id": "support",
        },
    )

    assert (query.page, query.limit, query.status) == (2, 5, Status.COMPLETED)
    assert (query.flag, query.type, query.queue_id) == (Flag.SHORT_CALL, "video", "support")


def test_every_bad_filter_is_named_in_one_refusal() -> None:
    assert query_refusal({"status": "DONE", "flag": "late", "queue_id": "", "type": "fax"}) == (
        "status must be one of QUEUED, RINGING, ANSWERED, ON_HOLD, UNANSWERED, COMPLETED; "
        f"flag must be one of {FLAGS}; "
        "queue_id must not be empty; "
        "type must be one of voice, video"
    )
