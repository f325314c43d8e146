"""The README's curl tour works as pasted: its `bash tour` blocks run, in order, in one shell,
against a live platform (only the address changes)."""

from __future__ import annotations

import asyncio
import json
import os
import re

from tests.integration.platform import ROOT, Platform

MARK = "=== block {} ==="


def tour_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"^```bash tour\n(.*?)^```", readme, flags=re.M | re.S)


async def run_tour(platform: Platform) -> list[str]:
    script = "set -euo pipefail\n" + "".join(
        f"echo; echo '{MARK.format(i)}'\n{block}" for i, block in enumerate(tour_blocks())
    )
    script = script.replace("http://localhost:3000", platform.base_url)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=platform.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=os.environ | {"PATH": f"{ROOT}/.venv/bin:{os.environ['PATH']}"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return re.split(r"^=== block \d+ ===$", text, flags=re.M)[1:]


async def test_the_curl_tour_runs_as_pasted(platform: Platform) -> None:
    blocks = tour_blocks()
    assert len(blocks) >= 7
    outputs = await run_tour(platform)

    assert len(outputs) == len(blocks)
    *happy, refusals = outputs
    for output in happy:
        assert '"error"' not in output, output
    health, create, follow, websocket, events, lists, scripted = happy
    assert '"status":"healthy"' in health and '"status":"ready"' in health
    # The block shows what it prints: the create's answer, with the URLs a browser opens.
    created = json.loads(create.strip().splitlines()[-1])
    assert re.fullmatch(r"[0-9a-f-]{36}", created["call_id"])
    assert f"/calls/{created['call_id']}/stream?token=" in created["stream_url"]
    assert "&token=" in created["websocket_url"]
    assert "event: call" in follow and '"status":"COMPLETED"' in follow
    assert "200 audio/x-wav" in follow
    assert '"status":"COMPLETED"' in websocket
    assert (
        '"raised_flags":["rerouted"]' in events and '"raised_flags":["wait_sla_exceeded"]' in events
    )
    assert (
        '"totalPages"' in lists
        and "event: ready" in lists
        and "mockcomms_total_calls_total" in lists
        and '"queue_id":"sales"' in lists
        and '"service_level_pct"' in lists
    )
    assert '"status":"COMPLETED"' in scripted and '"end_reason":"busy"' in scripted
    assert '{"error":"Unauthorized","message":"Invalid API key"}' in refusals
    assert '"Missing required fields: to"' in refusals
    assert refusals.count("Calls per second limit exceeded (2)") == 2
    assert refusals.count('"status":"QUEUED"') == 2
