"""Every error is JSON `{error, message}` with the right status; never HTML, never a 500."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Api


async def raw(api: Api, method: str, path: str, *, data: bytes | None = None, headers=None):
    async with api.http.request(
        method, api.url(path), data=data, headers=headers or {}
    ) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), response.headers


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"),
        ({"Authorization": "Bearer invalid-key"}, "Invalid API key"),
        ({"X-API-Key": "invalid-key"}, "Invalid API key"),
        (
            {"Authorization": "Basic dGVzdA=="},
            "Authorization must be 'Bearer <key>', not 'Basic': send Authorization: Bearer"
            " <key>, or X-API-Key: <key>",
        ),
        (
            {"Authorization": "demo-key"},
            "Authorization must be 'Bearer <key>', not a bare key: send Authorization: Bearer"
            " <key>, or X-API-Key: <key>",
        ),
        (
            {"Authorization": "Bearer"},
            "Authorization must be 'Bearer <key>', not 'Bearer': send Authorization: Bearer"
            " <key>, or X-API-Key: <key>",
        ),
    ],
    ids=["none", "bad-bearer", "bad-x-api-key", "basic", "no-scheme", "no-key"],
)
async def test_calls_without_a_valid_key_are_401_saying_what_is_taken(
    api: Api, headers, message
) -> None:
    for method, path in (("GET", "/calls"), ("POST", "/calls"), ("GET", "/metrics")):
        status, body, answer = await raw(api, method, path, headers=headers)
        assert (status, body) == (401, {"error": "Unauthorized", "message": message})
        assert answer["WWW-Authenticate"] == 'Bearer realm="mock-comms"'
        assert "demo-key" not in body["message"]


async def test_the_seeded_keys_work_as_bearer_and_as_x_api_key(api: Api) -> None:
    for headers in ({"Authorization": "Bearer test-api-key-1"}, {"X-API-Key": "demo-key"}):
        status, _, _ = await raw(api, "GET", "/metrics", headers=headers)
        assert status == 200


async def test_health_ready_and_index_need_no_key(api: Api) -> None:
    status, body, _ = await raw(api, "GET", "/health")
    assert status == 200 and body["status"] == "healthy" and body["uptime"] >= 0
    assert body["timestamp"].endswith("Z")
    status, body, _ = await raw(api, "GET", "/ready")
    assert (status, body["checks"]) == (200, {"postgres": "ok", "redis": "ok"})
    status, _, _ = await raw(api, "GET", "/")
    assert status == 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"from": "+1234567890"', "Malformed JSON"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b"", "Request body must be a JSON object"),
        (b'"text"', "Request body must be a JSON object"),
        (b"{}", "Missing required fields: from, to"),
        (b'{"to": "+1234567890"}', "Missing required fields: from"),
        (b'{"from": "12345", "to": "+1234567890"}', "from must be an E.164 phone number"),
        (b'{"from": 1234567890, "to": "+1234567890"}', "from must be a string"),
        (
            b'{"from": "+1234567890", "to": "+1234567890", "metadata": [1]}',
            "metadata must be a JSON object",
        ),
        (
            b'{"from": "+1234567890", "to": "+1234567890", "metadata": "x"}',
            "metadata must be a JSON object",
        ),
        (
            b'{"from": "+1234567890", "to": "+1234567890", "colour": 1}',
            "colour is not a known field",
        ),
    ],
)
async def test_bad_bodies_are_400_naming_the_problem(api: Api, data: bytes, message: str) -> None:
    status, body, _ = await raw(api, "POST", "/calls", data=data, headers=api.auth)
    assert status == 400
    assert body["error"] == "Bad Request"
    assert message in body["message"]


async def test_bad_bodies_take_no_limit_slot(make_api) -> None:
    api = await make_api()  # defaults: 3 concurrent, 2 per second
    for _ in range(5):
        status, _, _ = await raw(api, "POST", "/calls", data=b"{}", headers=api.auth)
        assert status == 400
    assert [(await api.create_call())[0] for _ in range(2)] == [201, 201]


async def test_oversized_body_is_413(api: Api) -> None:
    data = (
        b'{"from": "+1234567890", "to": "+1234567890", "metadata": {"x": "' + b"a" * 70_000 + b'"}}'
    )
    status, body, _ = await raw(api, "POST", "/calls", data=data, headers=api.auth)
    assert status == 413
    assert body["error"] == "Request Entity Too Large"
    assert "65536" in body["message"]


async def test_what_cannot_be_a_call_id_is_400(api: Api) -> None:
    status, body, _ = await raw(api, "GET", "/calls/not%2Ba%2Bcall", headers=api.auth)
    assert (status, body["message"]) == (
        400,
        "call_id must be a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-',"
        " got 'not+a+call'",
    )


async def test_unknown_route_is_404_json(api: Api) -> None:
    status, body, _ = await raw(api, "GET", "/no/such/route")
    assert (status, body) == (
        404,
        {"error": "Not Found", "message": "No route for GET /no/such/route"},
    )


async def test_wrong_method_is_405_json_with_allow(api: Api) -> None:
    status, body, headers = await raw(api, "PUT", "/calls", headers=api.auth)
    assert status == 405
    assert body["error"] == "Method Not Allowed"
    assert {"GET", "POST", "DELETE"} <= set(headers["Allow"].split(", "))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page is too small"),
        ("limit=abc", "limit must be a whole number"),
        ("status=LOST", "status must be one of"),
    ],
)
async def test_bad_list_queries_are_400(api: Api, query: str, message: str) -> None:
    status, body, _ = await raw(api, "GET", f"/calls?{query}", headers=api.auth)
    assert status == 400
    assert message in body["message"]


async def test_every_response_carries_a_request_id_and_honours_the_callers(api: Api) -> None:
    _, _, headers = await raw(api, "GET", "/health", headers={"X-Request-ID": "trace-123"})
    assert headers["X-Request-ID"] == "trace-123"
    _, _, headers = await raw(api, "GET", "/no/such/route")
    assert len(headers["X-Request-ID"]) == 32
