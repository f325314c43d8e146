"""JSON logs with request ids that jobs carry on, no secrets in any log, Prometheus figures."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import pytest

from tests.integration.conftest import Api
from tests.integration.platform import Platform


@pytest.fixture(scope="module")
async def chatty(tmp_path_factory: pytest.TempPathFactory):
    """A platform logging at INFO (the shared one logs warnings only)."""
    running = Platform(tmp_path_factory.mktemp("chatty"), settings={"LOG_LEVEL": "INFO"})
    try:
        yield await running.start()
    finally:
        await running.stop()


def log_lines(platform: Platform, process: str) -> list[dict]:
    text = platform.processes[process].log_path.read_text()
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


async def logged(platform: Platform, process: str, request_id: str, timeout_s: float = 5):
    """The process's access log lines of `request_id`, once there is one: aiohttp writes the
    line after the response has gone, so the client can read the answer before it."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [
            e
            for e in log_lines(platform, process)
            if e.get("msg") == "request" and e.get("request_id") == request_id
        ]
        if lines or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.02)


async def test_every_log_line_is_json(http, chatty: Platform) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    _, created, _ = await api.create_call()
    await api.wait_recorded(created["call_id"])
    for process in ("api", "worker0", "scheduler"):
        text = chatty.processes[process].log_path.read_text().strip().splitlines()
        assert text, process
        for line in text:
            entry = orjson.loads(line)  # raises on anything but a JSON object per line
            assert {"ts", "level", "process", "logger", "msg"} <= set(entry)


async def test_one_line_per_request_with_its_id(http, chatty: Platform) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    await api.request("GET", "/calls?limit=1", headers={"X-Request-ID": "trace-list-1"})

    lines = await logged(chatty, "api", "trace-list-1")

    assert len(lines) == 1
    assert (
        lines[0]["method"] == "GET" and lines[0]["path"] == "/calls" and lines[0]["status"] == 200
    )
    assert lines[0]["duration_ms"] >= 0


async def test_jobs_log_a_calls_transitions_under_the_request_that_made_it(
    http, chatty: Platform
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    _, created, _ = await api.request(
        "POST",
        "/calls",
        json={"from": "+14155550100", "to": "+14155550199"},
        headers={"X-Request-ID": "trace-call-7"},
    )
    await api.wait_recorded(created["call_id"])

    worker = [e for e in log_lines(chatty, "worker0") if e.get("call_id") == created["call_id"]]
    moved_to = {re.sub(r".*-> ", "", e["msg"]) for e in worker if "->" in e["msg"]}
    assert "COMPLETED" in moved_to and "RINGING" in moved_to
    assert {e["request_id"] for e in worker} == {"trace-call-7"}


async def test_no_key_or_access_token_reaches_any_log(http, chatty: Platform) -> None:
    secret = await chatty.new_key(max_cps=100)
    api = Api(http, chatty, secret)
    _, created, _ = await api.create_call()
    async with http.get(
        api.url(f"/calls/{created['call_id']}/stream?access_token={secret}")
    ) as response:
        assert response.status == 200
    await api.request("GET", "/metrics", headers={"X-API-Key": "wrong-" + secret})
    await api.wait_recorded(created["call_id"])

    for process in chatty.processes.values():
        assert secret not in process.log_path.read_text(), process.name


async def test_prometheus_text_has_latency_lateness_and_upload_figures(
    http, chatty: Platform
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    _, created, _ = await api.create_call()
    await api.wait_recorded(created["call_id"])

    async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        text = await response.text()

    assert re.search(
        r'^mockcomms_request_duration_seconds_count\{method="POST",route="/calls",status="2xx"\} [1-9]',
        text,
        re.M,
    )
    assert (
        'mockcomms_request_duration_seconds_bucket{le="0.005",method="POST",route="/calls",status="2xx"}'
        in text
    )
    count = int(re.search(r"^mockcomms_timer_lateness_seconds_count (\d+)$", text, re.M).group(1))
    assert count >= 3  # at least this call's three timed moves
    assert re.search(r'^mockcomms_timer_lateness_seconds_bucket\{le="\+Inf"\} \d+$', text, re.M)
    assert re.search(r"^mockcomms_upload_attempts_total [1-9]\d*$", text, re.M)
    assert "mockcomms_upload_attempts_failed_total 0" in text
    assert re.search(r'^mockcomms_queue_depth\{queue="timers"\} \d+$', text, re.M)
    for gauge in ("pending", "overdue"):
        for kind in ("adv", "upl"):
            assert re.search(rf'^mockcomms_timers_{gauge}\{{kind="{kind}"\}} \d+$', text, re.M)


async def test_an_unknown_method_is_one_series_however_many_are_sent(
    http, chatty: Platform
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    # Methods HTTP's parser lets through (it refuses made-up ones itself, with a 400).
    for method in ("PROPFIND", "MKCOL", "TRACE"):
        async with http.request(method, api.url("/nowhere"), headers=api.auth) as response:
            assert response.status in (404, 405)

    async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        text = await response.text()

    assert 'method="PROPFIND"' not in text and 'method="TRACE"' not in text
    assert re.search(
        r'^mockcomms_request_duration_seconds_count\{method="other",route="unmatched",'
        r'status="4xx"\} [3-9]',
        text,
        re.M,
    )
