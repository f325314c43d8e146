"""A web app on another origin uses the API from a browser: CORS_ORIGINS answers its preflights
and lets it read the useful headers, and the stream_url and websocket_url a create returns open
as they are (their token opens that call's streams alone, never carrying the key)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.integration.conftest import Api
from tests.integration.platform import Platform, free_port
from tests.integration.test_realtime import SseReader

# What the app's page runs: create a call with the key in a header, read the answer's headers,
# then follow the call through the URLs it was given until it completes.
APP_SCRIPT = """
async ([api, key]) => {
  const created = await fetch(api + "/calls", {
    method: "POST",
    headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json",
              "Idempotency-Key": "browser-1", "X-Request-ID": "from-the-page"},
    body: JSON.stringify({from: "+14155550100", to: "+14155550199"}),
  });
  const call = await created.json();
  const headers = {};
  for (const name of ["X-Request-ID", "RateLimit-Limit", "RateLimit-Remaining",
                      "RateLimit-Policy"]) {
    headers[name] = created.headers.get(name);
  }
  const follow = (open) => new Promise((resolve, reject) => {
    const statuses = [];
    const timer = setTimeout(() => reject(new Error("timed out: " + statuses)), 20000);
    open((data, close) => {
      statuses.push(JSON.parse(data).status);
      if (statuses.at(-1) === "COMPLETED") { clearTimeout(timer); close(); resolve(statuses); }
    }, (error) => { clearTimeout(timer); reject(new Error("stream failed: " + error)); });
  });
  const sse = follow((onMessage, onError) => {
    const source = new EventSource(call.stream_url);
    source.addEventListener("call", (e) => onMessage(e.data, () => source.close()));
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) onError("sse"); };
  });
  const ws = follow((onMessage, onError) => {
    const socket = new WebSocket(call.websocket_url);
    socket.onmessage = (e) => {
      if (JSON.parse(e.data).status) onMessage(e.data, () => socket.close());
    };
    socket.onerror = () => onError("websocket");
  });
  return {status: created.status, call, headers, sse: await sse, ws: await ws};
}
"""

# A second create beyond the key's one concurrent call: the page reads why, and when to retry.
LIMITED_SCRIPT = """
async ([api, key]) => {
  const post = () => fetch(api + "/calls", {
    method: "POST",
    headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    body: JSON.stringify({from: "+14155550100", to: "+14155550199"}),
  });
  await post();
  const refused = await post();
  return {status: refused.status, retryAfter: refused.headers.get("Retry-After"),
          limit: refused.headers.get("RateLimit-Limit")};
}
"""

# Any request from an origin the platform does not name fails in the browser.
FOREIGN_SCRIPT = """
async ([api, key]) => {
  try {
    await fetch(api + "/calls", {headers: {"Authorization": "Bearer " + key}});
    return "answered";
  } catch (error) {
    return "refused";
  }
}
"""


@pytest.fixture
async def app_origin() -> AsyncIterator[tuple[str, int]]:
    """A web app's own server (an empty page on another port: another origin)."""
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>app</title>", content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", port
    await runner.cleanup()


@pytest.fixture
async def cors_platform(
    platform_factory: Callable[..., Awaitable[Platform]], app_origin: tuple[str, int]
) -> Platform:
    origin, _ = app_origin
    return await platform_factory({"CORS_ORIGINS": f"https://elsewhere.example,{origin}"})


async def test_a_page_on_a_named_origin_creates_a_call_and_follows_it_by_its_urls(
    page: Page, cors_platform: Platform, app_origin: tuple[str, int]
) -> None:
    key = await cors_platform.new_key(max_concurrent=10, max_cps=10)
    origin, _ = app_origin
    await page.goto(origin + "/")

    result: dict[str, Any] = await page.evaluate(APP_SCRIPT, [cors_platform.base_url, key])

    assert result["status"] == 201
    assert result["headers"]["X-Request-ID"] == "from-the-page"
    assert result["headers"]["RateLimit-Limit"] == "10"
    assert result["headers"]["RateLimit-Remaining"] is not None
    assert result["headers"]["RateLimit-Policy"] is not None
    for statuses in (result["sse"], result["ws"]):
        assert statuses[0] in ("QUEUED", "RINGING") and statuses[-1] == "COMPLETED"
    urls = result["call"]["stream_url"] + result["call"]["websocket_url"]
    assert key not in urls


async def test_a_page_reads_retry_after_and_the_limit_that_refused(
    page: Page, cors_platform: Platform, app_origin: tuple[str, int]
) -> None:
    key = await cors_platform.new_key(max_concurrent=1, max_cps=10)
    origin, _ = app_origin
    await page.goto(origin + "/")

    result = await page.evaluate(LIMITED_SCRIPT, [cors_platform.base_url, key])

    assert result["status"] == 429
    assert int(result["retryAfter"]) >= 1
    assert result["limit"] == "1"


async def test_a_page_on_an_origin_not_named_is_refused_by_the_browser(
    page: Page, cors_platform: Platform, app_origin: tuple[str, int]
) -> None:
    key = await cors_platform.new_key()
    _, port = app_origin
    # The same server by another name is another origin.
    await page.goto(f"http://localhost:{port}/")

    assert await page.evaluate(FOREIGN_SCRIPT, [cors_platform.base_url, key]) == "refused"


async def test_a_preflight_names_what_a_page_may_send_and_carries_no_key(
    http: aiohttp.ClientSession, cors_platform: Platform
) -> None:
    headers = {
        "Origin": "https://elsewhere.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    async with http.options(cors_platform.base_url + "/calls", headers=headers) as answer:
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "https://elsewhere.example"
        assert answer.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = {
            h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert allowed == {"authorization", "content-type", "idempotency-key"}
        assert "Access-Control-Allow-Credentials" not in answer.headers
        assert "Origin" in answer.headers.getall("Vary")

    refused = headers | {"Origin": "https://evil.example"}
    async with http.options(cors_platform.base_url + "/calls", headers=refused) as answer:
        assert answer.status == 403
        body = await answer.json()
        assert "origin 'https://evil.example' is not allowed" in body["message"]
        assert "Access-Control-Allow-Origin" not in answer.headers


async def test_without_cors_origins_no_page_elsewhere_is_answered(api: Api) -> None:
    """The default: no origin named, no preflight answered, no CORS header given."""
    headers = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    async with api.http.options(api.url("/calls"), headers=headers) as answer:
        assert answer.status == 405
    status, _, answered = await api.request(
        "GET", "/calls", headers={"Origin": "https://x.example"}
    )
    assert status == 200
    assert "Access-Control-Allow-Origin" not in answered


# -- the stream token in a created call's URLs -------------------------------------------------


async def test_a_created_calls_urls_open_its_streams_without_the_key(api: Api) -> None:
    status, created, _ = await api.create_call()
    assert status == 201, created

    async with api.http.get(created["stream_url"]) as sse:
        assert sse.status == 200
        first = await SseReader(sse).next()
        assert first is not None and json.loads(first.data)["call_id"] == created["call_id"]
    async with api.http.ws_connect(created["websocket_url"]) as ws:
        message = await asyncio.wait_for(ws.receive_json(), 5)
        assert message["call_id"] == created["call_id"]


async def test_a_calls_stream_token_opens_no_other_stream(api: Api, make_api) -> None:
    _, created, _ = await api.create_call()
    _, other, _ = await api.create_call()
    token = created["stream_url"].partition("?token=")[2]
    stranger = await make_api()
    _, theirs, _ = await stranger.create_call()

    for url in (
        api.url(f"/calls/{other['call_id']}/stream?token={token}"),
        api.url(f"/ws?call_id={other['call_id']}&token={token}"),
        api.url(f"/calls/{theirs['call_id']}/stream?token={token}"),
        api.url(f"/calls/{created['call_id']}/events?token={token}"),
        api.url(f"/stream?token={token}"),
        api.url(f"/calls/{created['call_id']}?token={token}"),
    ):
        async with api.http.get(url) as answer:
            assert answer.status == 401, url
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
