"""`/openapi.json` and `/docs` are served, the page is Swagger UI whose "Try it out" works under
the page's Content-Security-Policy, and real answers match the documented models."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from openapi_spec_validator import validate
from playwright.async_api import Page, Request, expect

from api import response_models
from tests.integration.conftest import Api


async def test_openapi_json_is_public_and_valid(api: Api) -> None:
    async with api.http.get(api.url("/openapi.json")) as response:
        assert response.status == 200
        spec = await response.json()
    validate(spec)
    assert spec["servers"] == [{"url": api.platform.base_url}]


async def test_docs_page_is_html_that_names_the_document(api: Api) -> None:
    async with api.http.get(api.url("/docs")) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "/openapi.json" in await response.text()


async def test_docs_page_lists_every_route_and_tries_get_calls_with_a_bearer_key(
    api: Api, page: Page
) -> None:
    _, created, _ = await api.create_call()
    async with api.http.get(api.url("/openapi.json")) as response:
        spec = await response.json()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))

    await page.goto(api.url("/docs"))
    # Every operation of the document is on the page, the event streams and the WebSocket too.
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            element = f"#operations-{operation['tags'][0]}-{operation['operationId']}"
            await expect(page.locator(element), path).to_have_count(1)

    await page.click("button.authorize")
    bearer = page.locator(".auth-container").filter(
        has=page.locator('input[aria-label="auth-bearer-value"]')
    )
    await bearer.locator("input").fill(api.key)
    await bearer.locator("button.authorize").click()
    await page.click("button.btn-done")
    operation = page.locator("#operations-calls-get_calls")
    await operation.locator(".opblock-summary-control").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()

    status = operation.locator(".live-responses-table tbody .response-col_status")
    await expect(status).to_have_text("200", timeout=10_000)
    await expect(operation.locator(".live-responses-table")).to_contain_text(created["call_id"])
    tried = [request for request in requests if "/calls?" in request.url]
    assert [request.headers.get("authorization") for request in tried] == [f"Bearer {api.key}"]
    # Nothing is fetched from elsewhere (no CDN, no validator badge).
    assert {urlsplit(request.url).netloc for request in requests} == {
        urlsplit(api.platform.base_url).netloc
    }
    assert not [text for text in console if "Content Security Policy" in text], console
    stored = await page.evaluate("() => JSON.stringify(localStorage) + document.cookie")
    assert api.key not in stored


async def test_real_answers_match_the_documented_models(api: Api) -> None:
    status, created, _ = await api.create_call()
    assert status == 201
    response_models.CreatedCall.model_validate(created)
    call = await api.wait_recorded(created["call_id"])
    response_models.Call.model_validate(call)
    _, page, _ = await api.request("GET", "/calls?limit=5")
    response_models.CallPage.model_validate(page)
    _, history, _ = await api.request("GET", f"/calls/{created['call_id']}/events")
    response_models.History.model_validate(history)
    _, metrics, _ = await api.request("GET", "/metrics")
    response_models.Metrics.model_validate(metrics)
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "video", "queue_id": "q"}
    )
    assert status == 201
    response_models.StoredEvent.model_validate(event)
    for method, path in (
        ("GET", f"/calls/{uuid.uuid4()}"),
        ("GET", "/calls/x"),
        ("POST", "/calls"),
    ):
        _, error, _ = await api.request(method, path)
        response_models.Error.model_validate(error)
    async with api.http.get(api.url("/health")) as response:
        response_models.Health.model_validate(await response.json())
    async with api.http.get(api.url("/ready")) as response:
        response_models.Ready.model_validate(await response.json())
    async with api.http.get(api.url("/")) as response:
        response_models.Index.model_validate(await response.json())
