"""Bad input never gets a 5xx: schemathesis drives every route from /openapi.json and checks each
answer against the document; explicit cases cover what a generator rarely finds (bodies over
the limit, deep and huge metadata, odd unicode, lying or broken headers, odd query values)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from api.openapi import build_document
from api.routes import ROUTES
from tests.integration.conftest import Api
from tests.integration.platform import Platform

# Any single request longer than this is a hang.
REQUEST_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 64 * 1024
E164 = {"from": "+14155550100", "to": "+14155550199"}
PLACEHOLDER_URL = "http://mock-comms.invalid"


# -- schemathesis over every documented route -----------------------------------------------------


@pytest.fixture(scope="module")
async def roomy(platform: Platform) -> str:
    """A key with room for every call these tests make (limits are tested elsewhere)."""
    return await platform.new_key(max_concurrent=100_000, max_cps=100_000)


# The document the API serves, built from the same route table; loaded at import time, as
# schemathesis's lazy loader (from_fixture) does not run on pytest 9. A test below checks that the
# served /openapi.json is this very document.
DOCUMENT = build_document(ROUTES, PLACEHOLDER_URL)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.exclude(path="/stream").parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_route_answers_5xx_or_outside_its_documented_schema(
    case, platform: Platform, roomy: str
) -> None:
    """Every route but the key stream (which never ends: test_key_stream covers it), with a
    valid key, positive and negative data."""
    auth = {"Authorization": f"Bearer {roomy}"}
    if case.path == "/calls/{call_id}/stream":
        end_if_open(platform, auth, (case.path_parameters or {}).get("call_id"))
    case.call_and_validate(
        base_url=platform.base_url,
        headers=auth,
        timeout=REQUEST_TIMEOUT_S,
        # A schema-valid event can still be refused by the state machine (422) and a
        # schema-valid header by rules the document does not state (see test_the_document_states_the_header_rules_the_api_enforces).
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )


def end_if_open(platform: Platform, auth: dict[str, str], call_id: Any) -> None:
    """A call's stream lasts as long as the call: end the call (one the generator made with
    call_initiated) so its stream answers in full instead of timing out."""
    if not isinstance(call_id, str):
        return
    with contextlib.suppress(ValueError):
        call_id = str(uuid.UUID(call_id))
        found = requests.get(
            f"{platform.base_url}/calls/{call_id}", headers=auth, timeout=REQUEST_TIMEOUT_S
        )
        if found.status_code == 200 and found.json()["status"] != "COMPLETED":
            requests.post(
                f"{platform.base_url}/events",
                headers=auth,
                json={"event": "call_ended", "call_id": call_id, "end_reason": "canceled"},
                timeout=REQUEST_TIMEOUT_S,
            )


async def test_the_fuzzed_document_is_the_one_the_api_serves(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    async with http.get(platform.base_url + "/openapi.json") as response:
        served = await response.json()
    assert served == build_document(ROUTES, platform.base_url)
    assert served | {"servers": DOCUMENT["servers"]} == DOCUMENT


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
async def api(http: aiohttp.ClientSession, platform: Platform, roomy: str) -> Api:
    return Api(http, platform, roomy)


async def send(
    api: Api, method: str, path: str, *, data: bytes | None = None, headers=None, **kwargs: Any
) -> tuple[int, Any, Any]:
    """One request on a connection of its own (a refused body may leave it unusable): (status,
    JSON body, headers). Fails on anything that is not JSON."""
    async with (
        asyncio.timeout(REQUEST_TIMEOUT_S),
        aiohttp.ClientSession() as session,
        session.request(
            method, api.url(path), data=data, headers=api.auth | (headers or {}), **kwargs
        ) as response,
    ):
        text = await response.text(errors="replace")
        assert response.content_type == "application/json", (response.status, text[:300])
        return response.status, json.loads(text), response.headers


async def raw(platform: Platform, request: bytes) -> tuple[int, str, bytes, dict[str, str]]:
    """Send bytes no HTTP client would send: (status, content type, body, headers) of the
    answer."""
    port = int(platform.base_url.rsplit(":", 1)[1])
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.lower(): value
                for name, _, value in (line.partition(": ") for line in lines[1:] if line)
            }
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
        finally:
            writer.close()
    status = int(lines[0].split()[1])
    return status, headers.get("content-type", "").split(";")[0], body, headers


def request_bytes(method: str, target: str, headers: list[bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += headers
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bearer(api: Api) -> bytes:
    return b"Authorization: Bearer " + api.key.encode()


def call_body(size: int) -> bytes:
    """A valid POST /calls body of exactly `size` bytes (padding in metadata)."""
    empty = json.dumps(E164 | {"metadata": {"pad": ""}}, separators=(",", ":")).encode()
    body = empty[:-3] + b"x" * (size - len(empty)) + empty[-3:]
    assert len(body) == size
    json.loads(body)
    return body


def assert_clear_refusal(status: int, body: Any, *statuses: int) -> None:
    assert status in statuses, (status, body)
    assert set(body) == {"error", "message"} and body["message"], body


# -- bodies over the limit ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/calls", "/events", "/api/events"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "gzip"])
async def test_a_body_over_the_limit_is_a_413_json(api: Api, path: str, framing: str) -> None:
    big = call_body(MAX_BODY_BYTES + 1)
    headers: dict[str, str] = {"Content-Type": "application/json"}
    data: Any = big
    if framing == "chunked":

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        data = chunks()
    elif framing == "gzip":
        # Small on the wire, over the limit once inflated (and far over: a decompression bomb).
        data = gzip.compress(call_body(MAX_BODY_BYTES + 1)[:-3] + b"y" * 5_000_000 + b'"}}')
        headers["Content-Encoding"] = "gzip"

    status, body, _ = await send(api, "POST", path, data=data, headers=headers)

    assert (status, body) == (
        413,
        {
            "error": "Request Entity Too Large",
            "message": f"Request body is larger than the limit of {MAX_BODY_BYTES} bytes",
        },
    )


async def test_a_body_of_exactly_the_limit_is_taken(api: Api) -> None:
    status, body, _ = await send(api, "POST", "/calls", data=call_body(MAX_BODY_BYTES))
    assert status == 201, body
    status, body, _ = await send(api, "POST", "/calls", data=call_body(MAX_BODY_BYTES + 1))
    assert status == 413, body


# -- deep and huge metadata -----------------------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    """An object `levels` deep: {"l": {"l": ... {"leaf": 1}}}."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"l": value}
    return value


@pytest.mark.parametrize("route", ["calls", "events"])
async def test_metadata_of_any_depth_is_stored_whole_or_refused_clearly(api: Api, route) -> None:
    accepted = []
    for levels in range(1, 41):
        metadata = nested(levels)
        if route == "calls":
            status, body, _ = await send(api, "POST", "/calls", json=E164 | {"metadata": metadata})
        else:
            status, body, _ = await send(
                api,
                "POST",
                "/events",
                json={
                    "event": "call_initiated",
                    "type": "voice",
                    "queue_id": "q",
                    "metadata": metadata,
                },
            )
        if status == 201:
            accepted.append(levels)
            _, stored, _ = await api.get_call(body["call_id"])
            assert stored["metadata"] == metadata, levels
        else:
            assert_clear_refusal(status, body, 400)
            assert "nested" in body["message"], body
    # Every depth up to a limit is taken, none past it, and 40 is past it.
    assert accepted == list(range(1, len(accepted) + 1)) and 20 <= len(accepted) < 40


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
async def test_json_nested_past_the_parsers_limit_is_a_400(api: Api, opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    depth = (MAX_BODY_BYTES - 100) // len(opening)
    metadata = opening * depth + b"1" + closing * depth
    if opening == b"[":
        metadata = b'{"a":' + metadata + b"}"
    data = b'{"from":"+14155550100","to":"+14155550199","metadata":' + metadata + b"}"
    status, body, _ = await send(api, "POST", "/calls", data=data[:MAX_BODY_BYTES])
    assert_clear_refusal(status, body, 400)


@pytest.mark.parametrize(
    "metadata",
    [
        # Thousands of small keys, just under the body limit.
        {f"k{i:05d}": i for i in range(4_600)},
        # Hundreds of long unicode values.
        {f"key-{i}": "📞☎️ مرحبا שלום " * 10 for i in range(200)},
        # One key of 60 000 characters.
        {"k" * 65_000: "v"},
    ],
    ids=["4600-keys", "unicode-values", "long-key"],
)
@pytest.mark.parametrize("route", ["calls", "events"])
async def test_metadata_near_the_body_limit_is_stored_whole(api: Api, metadata, route) -> None:
    if route == "calls":
        payload = E164 | {"metadata": metadata}
        path = "/calls"
    else:
        payload = {
            "event": "call_initiated",
            "type": "video",
            "queue_id": "q",
            "metadata": metadata,
        }
        path = "/events"
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert MAX_BODY_BYTES - 4_096 < len(data) <= MAX_BODY_BYTES, len(data)

    status, body, _ = await send(api, "POST", path, data=data)

    assert status == 201, body
    _, stored, _ = await api.get_call(body["call_id"])
    assert stored["metadata"] == metadata


# -- odd unicode in every string field ------------------------------------------------------------

ODD = {
    "emoji": "📞☎️👩🏽‍💻",
    "rtl": "\u202eمرحبا שלום\u202c",
    "combining": "e\u0301\u0327\u0308",
    "zero-width": "a\u200b\u200d\ufeffb",
    "astral-max": "\U0010ffff",
    "noncharacter": "\ufffe\uffff",
    "separators": "a\u2028b\u2029c\x85d",
    "controls": "\x01\x1f\x7f",
    "lone-high-surrogate": "x\ud800",
    "lone-low-surrogate": "\udc00x",
    "nul": "a\u0000b",
}
# What PostgreSQL cannot keep (NUL) and what is not text at all (lone surrogates).
NEVER_STORED = {"lone-high-surrogate", "lone-low-surrogate", "nul"}


def events_for(call_id: str) -> dict[str, dict[str, Any]]:
    """A valid event of each kind for one field to be replaced in."""
    return {
        "call_initiated": {"event": "call_initiated", "type": "voice", "queue_id": "q"},
        "call_routed": {"event": "call_routed", "call_id": call_id, "agent_id": "a"},
        "call_ended": {"event": "call_ended", "call_id": call_id, "end_reason": "completed"},
    }


# (event, field): free text is stored as sent; other fields must be refused naming the field.
STRING_FIELDS = [
    ("calls", "from", False),
    ("calls", "to", False),
    ("calls", "metadata.value", True),
    ("calls", "metadata.key", True),
    ("call_initiated", "queue_id", True),
    ("call_initiated", "event_id", True),
    ("call_initiated", "metadata.value", True),
    ("call_initiated", "metadata.key", True),
    ("call_initiated", "type", False),
    ("call_initiated", "call_id", False),
    ("call_initiated", "occurred_at", False),
    ("call_initiated", "from", False),
    ("call_initiated", "event", False),
    ("call_routed", "agent_id", True),
    ("call_routed", "call_id", False),
    ("call_ended", "end_reason", False),
]


@pytest.mark.parametrize(("target", "name", "free_text"), STRING_FIELDS)
async def test_odd_unicode_in_every_string_field_is_stored_exactly_or_refused(
    api: Api, target: str, name: str, free_text: bool
) -> None:
    for label, odd in ODD.items():
        if target == "calls":
            payload: dict[str, Any] = dict(E164)
            path = "/calls"
        else:
            call_id = await ingested_call(api)
            payload = events_for(call_id)[target]
            path = "/events"
        if name == "metadata.value":
            payload["metadata"] = {"note": odd}
        elif name == "metadata.key":
            payload["metadata"] = {odd: 1}
        else:
            payload[name] = odd
        # ensure_ascii: lone surrogates and NUL go as \ud800 and \u0000 escapes.
        data = json.dumps(payload, ensure_ascii=True).encode()

        status, body, _ = await send(api, "POST", path, data=data)

        if free_text and label not in NEVER_STORED:
            assert status == 201, (label, body)
            stored = await stored_value(api, body, name)
            assert stored == odd, (label, stored)
        else:
            assert_clear_refusal(status, body, 400)
            if label not in NEVER_STORED:
                assert name.split(".")[0] in body["message"], (label, body)


async def ingested_call(api: Api) -> str:
    status, body, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201, body
    return body["call_id"]


async def stored_value(api: Api, answer: dict[str, Any], name: str) -> Any:
    """The field as the platform gives it back afterwards."""
    _, call, _ = await api.get_call(answer["call_id"])
    if name == "metadata.value":
        return call["metadata"]["note"]
    if name == "metadata.key":
        return next(iter(call["metadata"]))
    if name in ("queue_id", "agent_id"):
        return call[name]
    _, history, _ = await api.request("GET", f"/calls/{answer['call_id']}/events")
    return history["data"][-1][name]


async def test_numbers_past_what_json_can_hold_exactly_never_get_a_500(api: Api) -> None:
    for number in (b"1e400", b"-1e400", b"123456789012345678901234567890", b"1e-400", b"-0"):
        data = b'{"from":"+14155550100","to":"+14155550199","metadata":{"n":' + number + b"}}"
        status, body, _ = await send(api, "POST", "/calls", data=data)
        assert status in (201, 400), (number, body)


# -- dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+25:00",
        "１２３４-01-01T00:00:00Z",
        "294277-01-01T00:00:00Z",
        "2026-01-01",
    ],
)
async def test_an_impossible_occurred_at_is_a_400_naming_it(api: Api, occurred_at: str) -> None:
    status, body, _ = await send(
        api,
        "POST",
        "/events",
        json={
            "event": "call_initiated",
            "type": "voice",
            "queue_id": "q",
            "occurred_at": occurred_at,
        },
    )
    assert_clear_refusal(status, body, 400)
    assert "occurred_at" in body["message"], body


@pytest.mark.parametrize(
    "occurred_at",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:01"],
)
async def test_an_occurred_at_past_what_postgresql_stores_is_a_400(
    api: Api, occurred_at: str
) -> None:
    """Valid ISO 8601 with a zone that puts the instant before year 1 or after 9999 in UTC:
    pydantic takes it, asyncpg cannot encode it (DataError: date value out of range)."""
    status, body, _ = await send(
        api,
        "POST",
        "/events",
        json={
            "event": "call_initiated",
            "type": "voice",
            "queue_id": "q",
            "occurred_at": occurred_at,
        },
    )
    assert_clear_refusal(status, body, 400)


# -- headers that lie, are too big or are malformed -----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data", "expected"),
    [
        ("text/plain", json.dumps(E164).encode(), 201),
        ("application/x-www-form-urlencoded", json.dumps(E164).encode(), 201),
        ("application/x-www-form-urlencoded", b"from=%2B14155550100&to=%2B14155550199", 400),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=from\r\n\r\n+1\r\n--x--\r\n",
            400,
        ),
        ("application/json", b"<call from='+14155550100'/>", 400),
        ("application/json; charset=utf-16", json.dumps(E164).encode("utf-16"), 400),
        (
            "application/json; charset=latin-1",
            '{"from":"+14155550100","to":"+14155550199","metadata":{"n":"é"}}'.encode("latin-1"),
            400,
        ),
        ("application/json", b"\xef\xbb\xbf" + json.dumps(E164).encode(), 400),
        ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00", 400),
    ],
    ids=[
        "text",
        "form-type-json-body",
        "form",
        "multipart",
        "xml",
        "utf-16",
        "latin-1",
        "bom",
        "png",
    ],
)
async def test_a_content_type_that_lies_is_judged_by_the_body(
    api: Api, content_type: str, data: bytes, expected: int
) -> None:
    status, body, _ = await send(
        api, "POST", "/calls", data=data, headers={"Content-Type": content_type}
    )
    if expected == 201:
        assert status == 201, body
    else:
        assert_clear_refusal(status, body, 400)


async def test_a_gzipped_body_is_read_and_an_unknown_encoding_is_ignored(api: Api) -> None:
    data = json.dumps(E164).encode()
    for headers, payload in (
        ({"Content-Encoding": "gzip"}, gzip.compress(data)),
        ({"Content-Encoding": "rot13"}, data),
    ):
        status, body, _ = await send(api, "POST", "/calls", data=payload, headers=headers)
        assert status == 201, (headers, body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_in_its_content_encoding_is_a_400(api: Api, encoding: str) -> None:
    """aiohttp raises RequestPayloadError from request.read() (api/handlers/common.py:25,
    json_body); the errors middleware maps it to a 500 and aiohttp then logs it again."""
    status, body, _ = await send(
        api,
        "POST",
        "/calls",
        data=json.dumps(E164).encode(),
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert_clear_refusal(status, body, 400)


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Encoding: br",  # aiohttp cannot decode it here (no Brotli)
        b"X-Control: a\x01b",
        b"Content-Length: abc",
        b"X-Huge: " + b"h" * 40_000,
        b"Transfer-Encoding: chunked, gzip",
        b"\r\n".join(b"X-Extra-%d: v" % i for i in range(300)),
    ],
    ids=[
        "br",
        "control-char",
        "bad-content-length",
        "40k-header",
        "bad-transfer-encoding",
        "300-headers",
    ],
)
async def test_headers_the_http_parser_refuses_get_a_4xx_never_a_5xx(
    api: Api, header: bytes
) -> None:
    """Refused by aiohttp's parser before any middleware: a plain-text 4xx is what it can do."""
    request = request_bytes("POST", "/calls", [bearer(api), header], json.dumps(E164).encode())
    if header.startswith(b"Content-Length"):
        request = request.replace(
            b"\r\nContent-Length: " + str(len(json.dumps(E164))).encode(), b""
        )
    status, _, _, _ = await raw(api.platform, request)
    assert 400 <= status < 500, status


async def test_a_header_over_8_kib_still_reaches_the_app(api: Api) -> None:
    """A 10 KiB header (a big cookie or token) is refused by aiohttp's parser in plain text,
    unlike a long request line, for which the app raises max_line_size to 32 KiB (api/app.py)
    so it reaches validation and its JSON error; max_field_size stays at 8190."""
    request = request_bytes("GET", "/calls", [bearer(api), b"X-Trace-Context: " + b"t" * 10_000])
    status, content_type, body, _ = await raw(api.platform, request)
    assert (status, content_type) == (200, "application/json"), (status, body[:200])


async def test_a_hundred_headers_are_fine(api: Api) -> None:
    headers = {f"X-Extra-{i}": "v" * 50 for i in range(100)}
    status, body, _ = await send(api, "POST", "/calls", json=E164, headers=headers)
    assert status == 201, body


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {400}),
        ("k" * 256, {400}),
        ("k" * 255, {201}),
        (" spaced key ", {201}),
        # Either answer is fine for a key beyond ASCII: kept and replayed, or refused clearly.
        ("📞-order-☎", {201, 400}),
        ("\u202eرقم", {201, 400}),
    ],
    ids=["empty", "256", "255", "spaces", "emoji", "rtl"],
)
async def test_idempotency_keys_of_any_shape_replay_or_are_refused_clearly(
    api: Api, value: str, expected: set[int]
) -> None:
    key = value.replace("k", uuid.uuid4().hex[0], 1) if value.startswith("k") else value
    body = json.dumps(E164).encode()
    first = await send(api, "POST", "/calls", data=body, headers={"Idempotency-Key": key})
    assert first[0] in expected, first[1]
    if first[0] == 400:
        assert_clear_refusal(*first[:2], 400)
        assert "Idempotency-Key" in first[1]["message"]
        return
    again = await send(api, "POST", "/calls", data=body, headers={"Idempotency-Key": key})
    assert again[0] == 201, again[1]
    assert again[1]["call_id"] == first[1]["call_id"]
    assert again[2]["Idempotent-Replayed"] == "true"


async def test_an_idempotency_key_that_is_not_utf8_is_a_400(api: Api) -> None:
    """The header's bytes reach asyncpg as surrogate escapes (calls/service.py:63, _replay ->
    db/calls.py fetch_idempotent_call): UnicodeEncodeError, a 500."""
    request = request_bytes(
        "POST",
        "/calls",
        [bearer(api), b"Content-Type: application/json", b"Idempotency-Key: \xff\xfeorder"],
        json.dumps(E164).encode(),
    )
    status, content_type, body, _ = await raw(api.platform, request)
    assert status == 400 and content_type == "application/json", (status, body)


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"X-API-Key: \xe9t\xe9"])
async def test_a_key_that_is_not_utf8_is_a_401(api: Api, header: bytes) -> None:
    """hash_secret (db/keys.py:18) encodes the secret as UTF-8, which a surrogate-escaped
    header cannot be: UnicodeEncodeError, a 500 instead of a 401."""
    status, content_type, body, _ = await raw(
        api.platform, request_bytes("GET", "/calls", [header])
    )
    assert (status, content_type) == (401, "application/json"), (status, body)
    assert json.loads(body) == {"error": "Unauthorized", "message": "Invalid API key"}


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer\tkey",
        "bearer nope",
        "Token abc",
        "Bearer " + "k" * 4_000,
        "Bearer é",
    ],
)
async def test_odd_authorization_headers_are_a_401_json(api: Api, authorization: str) -> None:
    status, body, _ = await send(api, "GET", "/calls", headers={"Authorization": authorization})
    assert status == 401, body
    assert body["error"] == "Unauthorized"


@pytest.mark.parametrize(
    "value", [b"r" * 129, b"has space", b"caf\xc3\xa9", b"\xff\xfe", b"a/b?c", b"\xf0\x9f\x93\x9e"]
)
async def test_a_request_id_that_is_not_a_plain_token_is_replaced(api: Api, value: bytes) -> None:
    status, _, _, headers = await raw(
        api.platform,
        request_bytes("GET", "/health", [b"X-Request-ID: " + value]),
    )
    assert status == 200
    given = headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", given), given


@pytest.fixture(scope="module")
async def completed(platform: Platform, roomy: str) -> str:
    """A completed call, whose stream ends at once."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, platform, roomy)
        _, created, _ = await api.create_call()
        await api.wait_for(created["call_id"], lambda c: c["status"] == "COMPLETED")
        return created["call_id"]


BAD_SEQS = [
    b"-1",
    b"abc",
    b"1.5",
    b"9999999999",
    b" 1",
    b"1 ",
    b"\xef\xbc\x91",
    b"0x1",
    b"\xff",
    b"1,2",
]


# HTTP strips the whitespace around a header value, so " 1" is a good id there.
@pytest.mark.parametrize(
    ("via", "value"),
    [("header", v) for v in BAD_SEQS if v == v.strip()] + [("query", v) for v in BAD_SEQS],
)
async def test_a_bad_last_event_id_is_a_400_json(api: Api, completed: str, via, value) -> None:
    path = f"/calls/{completed}/stream"
    headers = [bearer(api)]
    if via == "header":
        headers.append(b"Last-Event-ID: " + value)
    else:
        path += "?last_event_id=" + "".join(f"%{b:02X}" for b in value)
    status, content_type, body, _ = await raw(api.platform, request_bytes("GET", path, headers))
    assert (status, content_type) == (400, "application/json"), (status, body)
    assert "Last-Event-ID" in json.loads(body)["message"]


# -- query values on every route that takes some ---------------------------------------------------


@pytest.mark.parametrize(
    ("target", "statuses"),
    [
        ("/calls?page=99999999999999999999999", {400}),
        ("/calls?limit=99999999999999999999999", {200}),
        ("/calls?limit=-1", {400}),
        ("/calls?page=%00", {400}),
        ("/calls?%FF=1", {400}),  # not a parameter the list takes
        ("/calls?status=%F0%9F%93%9E", {400}),
        ("/api/calls?type=%E2%80%AEvoice", {400}),
        ("/api/calls?flag=&status=", {200, 400}),
        ("/metrics?format=xml", {400}),
        ("/metrics?format=%FF", {400}),
        ("/metrics?format=prometheus&format=json", {200}),
        ("/ws?call_id=%FF", {400}),
        ("/ws?call_id=", {400}),
        ("/ws?call_id={00000000-0000-0000-0000-000000000000}", {404}),
        ("/ws?call_id=00000000000000000000000000000000", {404}),
        ("/ws?call_id=" + "a" * 5_000, {400}),
        ("/calls/00000000-0000-0000-0000-000000000000/stream?last_event_id=", {400, 404}),
        ("/stream?access_token=%FF%FE", {401}),
        ("/stream?access_token=a%00b", {401}),
        ("/calls/%FF%FE", {400}),
        ("/calls/%00", {400}),
        ("/calls/..%2F..%2Fmetrics", {400, 404}),
    ],
)
async def test_odd_query_and_path_values_are_answered_in_json_never_5xx(
    api: Api, target: str, statuses: set[int]
) -> None:
    # Only for the token tests is the key left out: it would win over access_token.
    headers = [] if "access_token" in target else [bearer(api)]
    status, content_type, body, _ = await raw(api.platform, request_bytes("GET", target, headers))
    assert status in statuses, (status, body[:300])
    assert content_type in ("application/json", "text/plain"), content_type
    if content_type == "application/json" and status >= 400:
        assert set(json.loads(body)) == {"error", "message"}


def parameter(path: str, method: str, name: str) -> dict[str, Any] | None:
    for spec in DOCUMENT["paths"][path][method]["parameters"]:
        if spec["name"] == name:
            return spec
    return None


def test_the_document_states_the_header_rules_the_api_enforces() -> None:
    """What schemathesis's positive_data_acceptance check found (ST202, "schema-valid request
    rejected"): the document offers any string where the API takes fewer, so a client built
    from it sends requests the API refuses with a 400. The rules are in api/handlers/calls.py
    (IDEMPOTENCY_KEY_MAX) and api/handlers/streams.py (_SEQ); api/openapi.py documents both
    headers as a bare {"type": "string"} and the ?last_event_id= query not at all."""
    idempotency = parameter("/calls", "post", "Idempotency-Key")
    last_event_id = parameter("/calls/{call_id}/stream", "get", "Last-Event-ID")
    assert idempotency is not None and last_event_id is not None
    assert (
        idempotency["schema"].get("minLength"),
        idempotency["schema"].get("maxLength"),
    ) == (1, 255), idempotency
    assert last_event_id["schema"].get("pattern") == "^[0-9]{1,9}$", last_event_id
    assert parameter("/calls/{call_id}/stream", "get", "last_event_id") is not None


# -- event streams against their documented events ---------------------------------------------------


def test_a_call_streams_events_its_document_describes(
    platform: Platform, roomy: str, completed: str
) -> None:
    """Each event of a call's stream is checked against the document's `itemSchema`: named
    `call`, an id, and `data` a JSON Message (schemathesis validates the JSON against it)."""
    case = schema["/calls/{call_id}/stream"]["GET"].Case(path_parameters={"call_id": completed})
    case.call_and_validate(
        base_url=platform.base_url,
        headers={"Authorization": f"Bearer {roomy}", "Last-Event-ID": "0"},
        timeout=REQUEST_TIMEOUT_S,
        checks=[schemathesis.checks.response_schema_conformance],
    )


async def test_the_key_stream_sends_only_events_its_document_describes(
    api: Api, completed: str
) -> None:
    """The key stream never ends, so schemathesis cannot read it whole: its events are read
    here and each checked against the document's `itemSchema` and, for their data, the schema
    it names."""
    item = DOCUMENT["paths"]["/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"][
        "itemSchema"
    ]
    root = {"components": DOCUMENT["components"]}
    events: list[dict[str, Any]] = []
    async with api.http.get(api.url("/stream"), headers=api.auth) as response:
        assert response.status == 200
        _, created, _ = await api.create_call()
        fields: dict[str, Any] = {}
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields:
                    events.append(fields)
                    fields = {}
                if events and json.loads(events[-1]["data"]).get("status") == "COMPLETED":
                    break
    assert events[0]["event"] == "ready"
    assert any(e["event"] == "call" for e in events)
    for event in events:
        jsonschema_rs.validate(root | item, event)
        (kind,) = [k for k in item["oneOf"] if k["properties"]["event"]["const"] == event["event"]]
        data_schema = kind["properties"]["data"]["contentSchema"]
        jsonschema_rs.validate(root | data_schema, json.loads(event["data"]))
    assert created["call_id"] in {json.loads(e["data"]).get("call_id") for e in events}
