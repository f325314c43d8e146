"""JSON logs with request ids that jobs carry on, no secrets in any log, Prometheus figures
(text and OpenMetrics, as prometheus_client writes and parses them)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Api
from tests.integration.platform import Platform

README = Path(__file__).resolve().parents[2] / "README.md"


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
    for process in ("api", "worker1", "scheduler"):
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

    # Lines reach the file within the log writer's batch (core/logs.py), not with the answer.
    deadline = time.monotonic() + 5
    while True:
        worker = [e for e in log_lines(chatty, "worker1") if e.get("call_id") == created["call_id"]]
        moved_to = {re.sub(r".*-> ", "", e["msg"]) for e in worker if "->" in e["msg"]}
        if {"COMPLETED", "RINGING"} <= moved_to or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
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
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = values(text_string_to_metric_families(await response.text()))

    created_calls = {"method": "POST", "route": "/calls", "status": "2xx"}
    assert samples["mockcomms_request_duration_seconds_count", labelled(created_calls)] >= 1
    assert (
        "mockcomms_request_duration_seconds_bucket",
        labelled(created_calls | {"le": "0.005"}),
    ) in samples
    count = samples["mockcomms_timer_lateness_seconds_count", ()]
    assert count >= 3  # at least this call's three timed moves
    assert samples["mockcomms_timer_lateness_seconds_bucket", (("le", "+Inf"),)] == count
    assert samples["mockcomms_upload_attempts_total", ()] >= 1
    assert samples["mockcomms_upload_attempts_failed_total", ()] == 0
    assert samples["mockcomms_queue_depth", (("queue", "timers"),)] >= 0
    for gauge in ("pending", "overdue"):
        for kind in ("adv", "upl"):
            assert samples[f"mockcomms_timers_{gauge}", (("kind", kind),)] >= 0


def labelled(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def values(families: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample's value by its name and labels."""
    return {
        (sample.name, labelled(sample.labels)): sample.value
        for family in families
        for sample in family.samples
    }


def readme_metrics() -> dict[str, str]:
    """The metrics the README's Observability table lists, with their type."""
    listed = {}
    for line in README.read_text().splitlines():
        if line.startswith("| `mockcomms_"):
            names, kind = line.split("|")[1:3]
            for name in re.findall(r"`(mockcomms_\w+)", names):
                listed[name] = kind.strip()
    return listed


def exposed(families: Iterable[Metric]) -> dict[str, str]:
    """Each name a scraper sees, of a family or of its samples, with the family's type."""
    seen = {}
    for family in families:
        seen[family.name] = family.type
        for sample in family.samples:
            seen.setdefault(sample.name, family.type)
    return seen


# What Prometheus 3 sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


async def test_every_metric_the_readme_lists_is_in_the_text_and_the_openmetrics(
    http, chatty: Platform
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    _, created, _ = await api.create_call()
    await api.wait_recorded(created["call_id"])
    listed = readme_metrics()
    assert len(listed) >= 16, listed

    async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
        text = await response.text()
    async with http.get(
        api.url("/metrics"), headers=api.auth | {"Accept": PROMETHEUS_ACCEPT}
    ) as response:
        assert response.content_type == "application/openmetrics-text"
        openmetrics = await response.text()

    # Each parser refuses what its format does not allow (OpenMetrics: a missing # EOF, a
    # counter without _total, a histogram without +Inf …).
    for families in (
        text_string_to_metric_families(text),
        openmetrics_families(openmetrics),
    ):
        seen = exposed(families)
        assert {name: seen.get(name) for name in listed} == listed


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text",
        "application/openmetrics-text; version=2.0.0",
        "application/openmetrics-text; version=x",
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "text/plain; version=1.x",
    ],
)
async def test_whatever_version_a_scraper_asks_for_it_gets_an_exposition_it_reads(
    http, chatty: Platform, accept: str
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    async with http.get(api.url("/metrics"), headers=api.auth | {"Accept": accept}) as response:
        assert response.status == 200
        text = await response.text()
        kind = response.content_type
    parse = (
        openmetrics_families
        if kind == "application/openmetrics-text"
        else text_string_to_metric_families
    )
    assert "mockcomms_active_calls" in exposed(parse(text))


async def test_the_json_answer_keeps_its_six_counters(http, chatty: Platform) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    for accept in ("", "application/json", "application/json, application/openmetrics-text"):
        status, body, headers = await api.request("GET", "/metrics", headers={"Accept": accept})
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert set(body) == {
            "total_calls",
            "active_calls",
            "completed_calls",
            "current_cps",
            "uploads_in_progress",
            "uploads_completed",
        }
        assert all(type(value) is int for value in body.values())


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


async def test_streams_a_client_closes_are_in_the_latency_histogram_with_their_lifetime(
    http, chatty: Platform
) -> None:
    api = Api(http, chatty, await chatty.new_key(max_cps=100))
    status, event, _ = await api.request(
        "POST", "/events", json={"event": "call_initiated", "type": "voice", "queue_id": "q"}
    )
    assert status == 201
    sse = {"method": "GET", "route": "/stream", "status": "2xx"}
    websocket = {"method": "GET", "route": "/ws", "status": "1xx"}

    async def figures() -> dict:
        async with http.get(api.url("/metrics?format=prometheus"), headers=api.auth) as response:
            return values(text_string_to_metric_families(await response.text()))

    def count(samples: dict, labels: dict) -> float:
        return samples.get(("mockcomms_request_duration_seconds_count", labelled(labels)), 0)

    def total(samples: dict, labels: dict) -> float:
        return samples.get(("mockcomms_request_duration_seconds_sum", labelled(labels)), 0)

    before = await figures()
    async with http.get(api.url("/stream"), headers=api.auth) as stream:
        assert stream.status == 200
        await stream.content.readline()  # event: ready
        await asyncio.sleep(0.3)
    async with http.ws_connect(api.url(f"/ws?call_id={event['call_id']}"), headers=api.auth) as ws:
        await ws.receive_json()
        await asyncio.sleep(0.3)

    # The server notices the closes asynchronously.
    async with asyncio.timeout(5):
        while True:
            after = await figures()
            if count(after, sse) > count(before, sse) and count(after, websocket) > count(
                before, websocket
            ):
                break
            await asyncio.sleep(0.05)
    assert count(after, sse) == count(before, sse) + 1
    assert count(after, websocket) == count(before, websocket) + 1
    assert total(after, sse) - total(before, sse) >= 0.3
    assert total(after, websocket) - total(before, websocket) >= 0.3
