"""The Twilio face's forms and queries: each refusal carries Twilio's code for it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import MultiDict, MultiDictProxy

from api.twilio_requests import CreateTwilioCall, ListTwilioCalls, parse_form
from core.errors import BadRequest

BASE = {
    "To": "+14155550199",
    "From": "+15005550006",
    "Url": "http://demo.twilio.com/docs/voice.xml",
}


def form(pairs: dict | list) -> MultiDictProxy:
    return MultiDictProxy(MultiDict(pairs.items() if isinstance(pairs, dict) else pairs))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"To": None}, 21201),
        ({"From": None}, 21213),
        ({"To": "12345"}, 21211),
        ({"From": "client:alice"}, 21212),
        ({"Url": "ftp://example.com/x"}, 21205),
        ({"Method": "PUT"}, 21209),
        ({"StatusCallbackMethod": "DELETE"}, 21209),
        ({"Timeout": "601"}, 21208),
        ({"Timeout": "soon"}, 21208),
        ({"ApplicationSid": "AP123"}, 21218),
        ({"StatusCallbackEvent": "hung-up"}, 20001),
        ({"Twiml": "x" * 4001}, 20001),
    ],
)
def test_each_bad_parameter_is_refused_with_twilios_code(change: dict, code: int) -> None:
    given = {k: v for k, v in (BASE | change).items() if v is not None}
    with pytest.raises(BadRequest) as refused:
        parse_form(CreateTwilioCall, form(given))
    assert refused.value.code == code
    assert next(iter(change)) in refused.value.message


def test_events_repeat_or_come_apart_by_spaces_and_default_to_completed() -> None:
    repeated = form(
        [
            *BASE.items(),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing answered"),
        ]
    )
    assert parse_form(CreateTwilioCall, repeated).statuses() == ["QUEUED", "RINGING", "ANSWERED"]
    assert parse_form(CreateTwilioCall, form(BASE)).statuses() == ["COMPLETED"]


def test_unknown_parameters_are_ignored_as_twilio_ignores_them() -> None:
    body = parse_form(
        CreateTwilioCall, form(BASE | {"Record": "true", "MachineDetection": "Enable"})
    )
    assert body.kept()["url"] == BASE["Url"]
    assert body.kept()["status_callback_method"] == "POST"


def test_start_time_bounds_are_inclusive_days_or_seconds() -> None:
    day = parse_form(
        ListTwilioCalls, form({"StartTime>": "2026-11-23", "StartTime<": "2026-11-24"})
    )
    assert day.created_since() == datetime(2026, 11, 23, tzinfo=UTC)
    assert day.created_before() == datetime(2026, 11, 25, tzinfo=UTC)
    exact = parse_form(ListTwilioCalls, form({"StartTime<": "2026-11-23T12:00:00Z"}))
    assert exact.created_before() == datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC)
    one_day = parse_form(ListTwilioCalls, form({"StartTime": "2026-11-23"}))
    assert (one_day.created_since(), one_day.created_before()) == (
        datetime(2026, 11, 23, tzinfo=UTC),
        datetime(2026, 11, 24, tzinfo=UTC),
    )
    assert one_day.filters() == {"StartTime": "2026-11-23"}


def test_page_size_is_served_at_twilios_cap_and_bad_filters_are_20001() -> None:
    assert parse_form(ListTwilioCalls, form({"PageSize": "5000"})).page_size == 1000
    for bad in ({"Status": "answered"}, {"StartTime>": "yesterday"}, {"Page": "-1"}):
        with pytest.raises(BadRequest) as refused:
            parse_form(ListTwilioCalls, form(bad))
        assert refused.value.code == 20001
