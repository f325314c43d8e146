"""`scripts/demo`: creates a call and follows it live to COMPLETED, or says why it cannot."""

from __future__ import annotations

import asyncio
import subprocess

from tests.integration.platform import ROOT, Platform, free_port

STATUSES = {"QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED", "COMPLETED"}
PATHS = (
    ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"],
    ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"],
)


async def demo(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "scripts" / "demo"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_demo_follows_a_call_through_every_status_to_completed(platform: Platform) -> None:
    key = await platform.new_key()

    done = await demo("--url", platform.base_url, "--key", key)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("✔ COMPLETED after"))
    shown = [word for line in lines[:summary] for word in line.split() if word in STATUSES]
    assert shown in PATHS, done.stdout
    assert lines[summary].endswith(": " + " → ".join(shown))
    call_id = lines[0].split("call ")[1].split()[0]
    assert f"recording  {platform.base_url}/calls/{call_id}/recording" in done.stdout
    assert key not in done.stdout + done.stderr


async def test_demo_with_a_wrong_key_prints_the_api_message(platform: Platform) -> None:
    done = await demo("--url", platform.base_url, "--key", "not-a-key")

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == "demo: POST /calls answered 401: Invalid API key"


async def test_demo_without_an_api_says_it_cannot_reach_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    done = await demo("--url", url)

    assert done.returncode == 1
    assert done.stderr.startswith(f"demo: cannot reach the API at {url} (")
    assert len(done.stderr.splitlines()) == 1
