"""The live dashboard in headless Chromium: key once, a call started from the page moves live to
COMPLETED, and its timeline opens on a click."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.platform import Platform

# Debian's Chromium (scripts/test installs it); Playwright drives it, no browser download.
CHROMIUM = os.environ.get("MOCKCOMMS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
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
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium (scripts/test does)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    yield opened
    await context.close()


async def sign_in(page: Page, platform: Platform, key: str) -> None:
    await page.goto(platform.base_url + "/dashboard")
    await page.fill("#key", key)
    await page.click("#login button")
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


async def test_a_call_started_on_the_page_goes_live_to_completed_and_shows_its_timeline(
    page: Page, platform: Platform, tmp_path
) -> None:
    key = await platform.new_key(max_concurrent=100, max_cps=100)
    await sign_in(page, platform, key)

    seen: set[str] = set()
    page.on("console", lambda message: seen.add(message.text))
    await page.click("#start")
    row = page.locator("tr.call").first
    await expect(row).to_be_visible(timeout=5_000)
    # Transitions arrive live: the status cell passes through the lifecycle to COMPLETED.
    await expect(row.locator(".status")).to_have_text("COMPLETED", timeout=15_000)
    await expect(page.locator('.counter[data-status="COMPLETED"] b')).to_have_text("1")

    await row.click()
    timeline = page.locator("#timeline li")
    await expect(timeline.last.locator(".status")).to_have_text("COMPLETED", timeout=5_000)
    statuses = await timeline.locator(".status").all_text_contents()
    assert statuses[0] == "QUEUED" and statuses[1] == "RINGING"
    assert statuses[2] in ("ANSWERED", "UNANSWERED")
    await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)


async def test_the_key_is_asked_once_per_tab_and_kept_out_of_urls(
    page: Page, platform: Platform
) -> None:
    key = await platform.new_key()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await sign_in(page, platform, key)

    await page.reload()
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
    assert await page.locator("#login").is_hidden()
    assert not [url for url in requests if key in url]


async def test_a_wrong_key_is_refused_on_the_page(page: Page, platform: Platform) -> None:
    await page.goto(platform.base_url + "/dashboard")
    await page.fill("#key", "not-a-key")
    await page.click("#login button")
    await expect(page.locator("#login-error")).to_have_text("Invalid API key")


async def test_calls_posted_as_events_appear_with_their_sla_breach(
    page: Page, platform: Platform, http
) -> None:
    key = await platform.new_key()
    await sign_in(page, platform, key)
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(
        platform.base_url + "/events",
        headers=headers,
        json={"event": "call_initiated", "type": "voice", "queue_id": "support"},
    ) as response:
        call_id = (await response.json())["call_id"]
    for body in (
        {"event": "call_routed", "call_id": call_id, "agent_id": "a1"},
        {"event": "call_answered", "call_id": call_id, "wait_time": 45},
    ):
        async with http.post(platform.base_url + "/events", headers=headers, json=body) as response:
            assert response.status == 201

    row = page.locator(f'tr.call[data-id="{call_id}"]')
    await expect(row.locator(".status")).to_have_text("ANSWERED", timeout=5_000)
    await expect(row.locator(".flag.breach")).to_have_text("wait_sla_exceeded")
    await expect(page.locator("#breaches")).to_have_text("1")
    await page.select_option("#f-flag", "breach")
    await expect(page.locator("tr.call")).to_have_count(1)
