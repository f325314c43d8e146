"""`/openapi.json` and `/docs` are served, and real answers match the documented models."""

from __future__ import annotations

import uuid

from openapi_spec_validator import validate

from api import models
from tests.integration.conftest import Api


async def test_openapi_json_is_public_and_valid(api: Api) -> None:
    async with api.http.get(api.url("/openapi.json")) as response:
        assert response.status == 200
        spec = await response.json()
    validate(spec)
    assert spec["servers"] == [{"url": api.platform.base_url}]


async def test_docs_page_renders_the_document(api: Api) -> None:
    async with api.http.get(api.url("/docs")) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "/openapi.json" in await response.text()


async def test_real_answers_match_the_documented_models(api: Api) -> None:
    status, created, _ = await api.create_call()
    assert status == 201
    models.CreatedCall.model_validate(created)
    call = await api.wait_recorded(created["call_id"])
    models.Call.model_validate(call)
    _, page, _ = await api.request("GET", "/calls?limit=5")
    models.CallPage.model_validate(page)
    _, history, _ = await api.request("GET", f"/calls/{created['call_id']}/events")
    models.History.model_validate(history)
    _, metrics, _ = await api.request("GET", "/metrics")
    models.Metrics.model_validate(metrics)
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "video", "queue_id": "q"}
    )
    assert status == 201
    models.StoredEvent.model_validate(event)
    for method, path in (
        ("GET", f"/calls/{uuid.uuid4()}"),
        ("GET", "/calls/x"),
        ("POST", "/calls"),
    ):
        _, error, _ = await api.request(method, path)
        models.Error.model_validate(error)
    async with api.http.get(api.url("/health")) as response:
        models.Health.model_validate(await response.json())
    async with api.http.get(api.url("/ready")) as response:
        models.Ready.model_validate(await response.json())
    async with api.http.get(api.url("/")) as response:
        models.Index.model_validate(await response.json())
