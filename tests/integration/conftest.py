"""Fixtures that run the real platform: processes, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright
from redis.asyncio import Redis

from devstack.databases import scratch_database
from devstack.receiver import Receiver
from tests.integration.platform import Platform, server_dsn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """The shared platform: two workers, lifecycle at 1/20 speed, default keys seeded."""
    running = Platform(tmp_path_factory.mktemp("platform"), workers=2)
    try:
        await running.start()
        await running.seed_default_keys()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def platform_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Callable[..., Awaitable[Platform]]]:
    """Start a platform of a test's own (other settings, processes to kill)."""
    started: list[Platform] = []

    async def start(settings: dict[str, str] | None = None, workers: int = 1) -> Platform:
        running = Platform(tmp_path_factory.mktemp("own"), settings=settings or {}, workers=workers)
        started.append(running)
        return await running.start()

    yield start
    for running in started:
        await running.stop()


@pytest.fixture
async def scratch_dsn() -> AsyncIterator[str]:
    """A migrated database of the test's own (no API reads it)."""
    async with scratch_database(server_dsn()) as dsn:
        yield dsn


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A status callback receiver on a free loopback port (devstack/receiver.py)."""
    running = await Receiver().start()
    yield running
    await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# Debian's Chromium (scripts/test installs it); Playwright drives it, no browser download.
CHROMIUM = os.environ.get("MOCKCOMMS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium for the pages' tests, one per test module."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium (scripts/test does)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (its own storage) and a tab in it."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest.fixture
async def redis(platform: Platform) -> AsyncIterator[Redis]:
    client = Redis.from_url(platform.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pg(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(platform.dsn)
    yield conn
    await conn.close()


class Api:
    """A thin client of one platform for one key (through its first API process, or the one at
    `base_url`)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        platform: Platform,
        key: str,
        base_url: str | None = None,
    ) -> None:
        self.http, self.platform, self.key = http, platform, key
        self.base_url = base_url or platform.base_url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def url(self, path: str) -> str:
        return self.base_url + path

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        headers = self.auth | kwargs.pop("headers", {})
        async with self.http.request(method, self.url(path), headers=headers, **kwargs) as response:
            body = await response.json(content_type=None)
            return response.status, body, response.headers

    async def create_call(self, **overrides: Any) -> tuple[int, Any, Any]:
        body = {
            "from": "+14155550100",
            "to": "+14155550199",
            "metadata": {"test": True},
        } | overrides
        return await self.request("POST", "/calls", json=body)

    async def get_call(self, call_id: str) -> tuple[int, Any, Any]:
        return await self.request("GET", f"/calls/{call_id}")

    async def wait_for(
        self, call_id: str, predicate: Callable[[dict], bool], timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body, _ = await self.get_call(call_id)
            if status == 200 and predicate(body):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"call {call_id} never matched; last seen {body}\n{self.platform.logs()}"
        )

    async def signing_secret(self) -> str:
        """The key's signing secret (its status callbacks' X-MockComms-Signature)."""
        conn = await asyncpg.connect(self.platform.dsn)
        try:
            return await conn.fetchval(
                "SELECT signing_secret FROM api_keys WHERE name = $1", self.key
            )
        finally:
            await conn.close()

    async def wait_recorded(self, call_id: str, timeout: float = 15) -> dict[str, Any]:
        return await self.wait_for(
            call_id, lambda c: c["status"] == "COMPLETED" and c["recording_url"], timeout
        )


@pytest.fixture
async def make_api(
    http: aiohttp.ClientSession, platform: Platform
) -> Callable[..., Awaitable[Api]]:
    """An Api on the shared platform with a fresh key (its own limits)."""

    async def make(
        max_concurrent: int | None = None, max_cps: int | None = None, on: Platform | None = None
    ) -> Api:
        target = on or platform
        return Api(
            http, target, await target.new_key(max_concurrent=max_concurrent, max_cps=max_cps)
        )

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    """A fresh key with room for many calls, for tests not about limits."""
    return await make_api(max_concurrent=1000, max_cps=1000)
