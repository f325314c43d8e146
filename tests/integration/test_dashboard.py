"""The live dashboard in headless Chromium: key once, a call started from the page moves live to
COMPLETED, and its timeline opens on a click; a queue's tile changes colour with its service
level."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect

from tests.integration.platform import Platform


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
    await page.select_option("#f-flag", "wait_sla_exceeded")
    await expect(page.locator("tr.call")).to_have_count(1)
    await expect(page.locator("#showing")).to_have_text("showing 1–1 of 1")


async def test_the_counters_and_the_list_come_from_the_server_for_every_call_of_the_key(
    page: Page, platform: Platform, http
) -> None:
    """A key with more calls than a page: the counters count them all, the list pages through
    them ("showing N of M"), and its filters ask the server, so they find calls the page does
    not hold."""
    key = await platform.new_key(max_concurrent=100, max_cps=100)
    headers = {"Authorization": f"Bearer {key}"}

    async def post(body: dict) -> dict:
        async with http.post(platform.base_url + "/events", headers=headers, json=body) as answer:
            assert answer.status == 201, await answer.text()
            return await answer.json()

    async def initiate(queue: str) -> str:
        started = await post({"event": "call_initiated", "type": "voice", "queue_id": queue})
        return started["call_id"]

    for _ in range(70):  # ended: older than every queued one
        ended = await initiate("billing")
        await post({"event": "call_ended", "call_id": ended, "end_reason": "abandoned"})
    for _ in range(60):
        await initiate("support")
    await sign_in(page, platform, key)

    await expect(page.locator('.counter[data-status="QUEUED"] b')).to_have_text("60")
    await expect(page.locator('.counter[data-status="COMPLETED"] b')).to_have_text("70")
    await expect(page.locator("#showing")).to_have_text("showing 1–50 of 130")
    await expect(page.locator("tr.call")).to_have_count(50)
    await page.click("#next")
    await expect(page.locator("#showing")).to_have_text("showing 51–100 of 130")
    await page.click("#next")
    await expect(page.locator("#showing")).to_have_text("showing 101–130 of 130")
    await expect(page.locator("#next")).to_be_disabled()

    # Every completed call is found by the server, though none was on the first page.
    await page.select_option("#f-status", "COMPLETED")
    await expect(page.locator("#showing")).to_have_text("showing 1–50 of 70")
    statuses = await page.locator("tr.call .status").all_text_contents()
    assert set(statuses) == {"COMPLETED"}
    await page.select_option("#f-status", "")
    await page.fill("#f-queue", "support")
    await page.press("#f-queue", "Enter")
    await expect(page.locator("#showing")).to_have_text("showing 1–50 of 60")
    await page.fill("#f-to", "12345")
    await page.press("#f-to", "Enter")
    await expect(page.locator("#filter-error")).to_contain_text("to")

    # Live: a new call moves the counters and shows on the first page within a second or two.
    await page.fill("#f-to", "")
    await page.press("#f-to", "Enter")
    fresh = await initiate("support")
    await expect(page.locator('.counter[data-status="QUEUED"] b')).to_have_text("61", timeout=5_000)
    await expect(page.locator(f'tr.call[data-id="{fresh}"]')).to_be_visible(timeout=5_000)
    await expect(page.locator("#showing")).to_have_text("showing 1–50 of 61")


MARKUP = {
    # Each would run, load or add an element if it were parsed as HTML.
    "queue_id": '<img src="/xss-probe-queue" onerror="window.__pwned=1;alert(1)">',
    "agent_id": '<script>window.__pwned=2</script><b id="injected">agent</b>',
    "metadata": {"note": "<iframe src=/xss-probe-meta></iframe><svg onload=alert(3)>"},
}


async def test_markup_posted_in_events_shows_as_text_and_runs_nothing(
    page: Page, platform: Platform, http
) -> None:
    """A contact-centre system is a tenant: its queue and agent ids and metadata are text. Shown
    on the supervisor's page they must stay text: no element made from them, no dialog, no
    request for what they point at."""
    key = await platform.new_key()
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    await sign_in(page, platform, key)
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(
        platform.base_url + "/events",
        headers=headers,
        json={
            "event": "call_initiated",
            "type": "voice",
            "queue_id": MARKUP["queue_id"],
            "metadata": MARKUP["metadata"],
        },
    ) as response:
        assert response.status == 201
        call_id = (await response.json())["call_id"]
    async with http.post(
        platform.base_url + "/events",
        headers=headers,
        json={"event": "call_routed", "call_id": call_id, "agent_id": MARKUP["agent_id"]},
    ) as response:
        assert response.status == 201

    row = page.locator(f'tr.call[data-id="{call_id}"]')
    await expect(row.locator(".status")).to_have_text("RINGING", timeout=5_000)
    await expect(row).to_contain_text(MARKUP["queue_id"])
    await expect(row).to_contain_text(MARKUP["agent_id"])
    await row.click()
    await expect(page.locator("#metadata")).to_contain_text(MARKUP["metadata"]["note"])
    await expect(page.locator("#detail")).to_contain_text(MARKUP["agent_id"])
    await expect(page.locator("#timeline li")).to_have_count(2)

    # Reloaded, the page renders the same values from GET /calls rather than from the stream.
    await page.reload()
    await expect(page.locator(f'tr.call[data-id="{call_id}"]')).to_contain_text(
        MARKUP["queue_id"], timeout=10_000
    )
    made = await page.evaluate(
        """() => ({
            img: document.querySelectorAll("img").length,
            script: document.querySelectorAll("body script").length,
            iframe: document.querySelectorAll("iframe").length,
            svg: document.querySelectorAll("svg").length,
            injected: document.querySelectorAll("#injected").length,
            pwned: window.__pwned === undefined ? null : window.__pwned,
        })"""
    )
    assert made == {"img": 0, "script": 0, "iframe": 0, "svg": 0, "injected": 0, "pwned": None}
    assert dialogs == []
    assert not [url for url in requests if "xss-probe" in url]


async def test_the_page_runs_no_inline_script_and_no_foreign_script(
    page: Page, platform: Platform
) -> None:
    """The Content-Security-Policy is enforced by the browser: a script slipped into the page
    (inline, or from another origin) is refused, and the page's own still runs."""
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    response = await page.goto(platform.base_url + "/dashboard")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy
    ran = await page.evaluate(
        """() => {
            const inline = document.createElement("script");
            inline.textContent = "window.__inline = 1";
            document.body.append(inline);
            return window.__inline === undefined;
        }"""
    )
    assert ran is True, "an inline script ran despite the policy"
    await expect(page.locator("#login")).to_be_visible()
    assert any("Content Security Policy" in text for text in violations), violations


async def test_a_calls_timeline_shows_its_status_callback_attempts(
    page: Page, platform: Platform, http, receiver
) -> None:
    key = await platform.new_key(max_concurrent=100, max_cps=100)
    await sign_in(page, platform, key)
    receiver.script("/dashboard", 500)  # QUEUED's first attempt fails, its retry is delivered
    async with http.post(
        platform.base_url + "/calls",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "from": "+14155550100",
            "to": "+14155550199",
            "status_callback": receiver.url("/dashboard"),
            "scenario": {"outcome": "completed", "ring_ms": 10, "talk_ms": 10},
        },
    ) as response:
        assert response.status == 201
        call_id = (await response.json())["call_id"]
    await receiver.wait_for(lambda got: len(got) == 5, within_s=20)

    row = page.locator(f'tr.call[data-id="{call_id}"]')
    await expect(row.locator(".status")).to_have_text("COMPLETED", timeout=10_000)
    await row.click()

    steps = page.locator("#timeline > li")
    await expect(steps).to_have_count(4)
    queued = steps.nth(0).locator("ul.callbacks li")
    await expect(queued).to_have_text(
        [re.compile(r"callback #1: 500 · \d+ ms"), re.compile(r"callback #2: 200 · \d+ ms")]
    )
    await expect(queued.nth(0)).to_have_class("failed")
    await expect(steps.nth(3).locator("ul.callbacks li")).to_have_text(
        [re.compile(r"callback #1: 200 · \d+ ms")]
    )


async def test_a_queues_tile_turns_from_meeting_to_missing_its_service_level_as_events_arrive(
    page: Page, platform: Platform, http
) -> None:
    """A tile per queue, coloured by its service level against the target (80%), updated by the
    key stream within 2 s of a transition; a click charts the queue's last hour with uPlot,
    under the page's Content-Security-Policy."""
    key = await platform.new_key()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    await sign_in(page, platform, key)
    headers = {"Authorization": f"Bearer {key}"}

    async def post(body: dict) -> None:
        async with http.post(platform.base_url + "/events", headers=headers, json=body) as answer:
            assert answer.status == 201, await answer.text()

    now = datetime.now(UTC)
    # Answered in 5 s: the queue meets its service level (100%).
    await post({"event": "call_initiated", "call_id": "fast", "type": "voice",
                "queue_id": "front-desk", "occurred_at": (now - timedelta(seconds=5)).isoformat()})  # fmt: skip
    await post({"event": "call_routed", "call_id": "fast", "agent_id": "a1"})
    await post({"event": "call_answered", "call_id": "fast"})
    tile = page.locator('.tile[data-queue="front-desk"]')
    await expect(tile).to_have_attribute("data-state", "meeting", timeout=5_000)
    await expect(tile.locator(".sl")).to_have_text("100%")
    await tile.click()
    await expect(page.locator("#chart canvas").first).to_be_visible()
    await expect(page.locator("#chart-title")).to_have_text("front-desk")

    # Answered after 90 s: half the calls within it, under the 80% target.
    await post({"event": "call_initiated", "call_id": "slow", "type": "voice",
                "queue_id": "front-desk", "occurred_at": (now - timedelta(seconds=90)).isoformat()})  # fmt: skip
    await post({"event": "call_routed", "call_id": "slow", "agent_id": "a2"})
    await post({"event": "call_answered", "call_id": "slow"})
    await expect(tile).to_have_attribute("data-state", "missing", timeout=2_000)
    await expect(tile).to_have_class(re.compile(r"\bmissing\b"))
    await expect(tile.locator(".sl")).to_have_text("50%")
    await expect(tile.locator(".asa")).to_have_text(
        re.compile(r"^4[78]s$")
    )  # (5 + 90) / 2, and a bit
    # A third call still waiting shows in the tile, and its wait goes on.
    await post({"event": "call_initiated", "call_id": "waiting", "type": "voice",
                "queue_id": "front-desk", "occurred_at": (now - timedelta(seconds=30)).isoformat()})  # fmt: skip
    await expect(tile.locator(".waiting")).to_have_text("1", timeout=2_000)
    assert not [text for text in console if "Content Security Policy" in text], console
