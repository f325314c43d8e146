"""Status callbacks to a real receiver on a loopback port: every transition POSTed, signed, in seq
order per call, at least once; retried after a 500 or a timeout, stopped by a 410, left as a dead
letter when spent and delivered when it is requeued; nothing lost to a killed worker or a flushed
Redis; only allowed hosts."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq.registry import FailedJobRegistry

from calls.signing import SignatureError, verify
from core import keys
from devstack.receiver import Answer, Received, Receiver
from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform, free_port, wait_for_port

# Retries within milliseconds (the backoff is scaled by TIME_SCALE 0.05), attempts spent after
# three, and a receiver that has not answered in 0.4 s has timed out.
SETTINGS = {
    "CALLBACK_BACKOFF_BASE_MS": "400",
    "CALLBACK_TIMEOUT_MS": "400",
    "CALLBACK_MAX_ATTEMPTS": "3",
    "UPLOAD_MAX_ATTEMPTS": "2",
}
NEVER_MS = 3_600_000
COURSE = ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"]


@pytest.fixture(scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    running = Platform(tmp_path_factory.mktemp("callbacks"), settings=SETTINGS, workers=2)
    try:
        yield await running.start()
    finally:
        await running.stop()


@pytest.fixture
async def cb(http: aiohttp.ClientSession, own: Platform) -> Api:
    return Api(http, own, await own.new_key(max_concurrent=1000, max_cps=1000))


async def create(api: Api, receiver: Receiver, path: str, **body: Any) -> str:
    status, created, _ = await api.create_call(status_callback=receiver.url(path), **body)
    assert status == 201, created
    return created["call_id"]


def seqs(received: list[Received]) -> list[int]:
    return [request.json()["seq"] for request in received]


def has_seqs(path: str, wanted: list[int]) -> Callable[[list[Received]], bool]:
    def done(received: list[Received]) -> bool:
        return sorted(set(seqs([r for r in received if r.path == path]))) == wanted

    return done


async def callback_log(api: Api, call_id: str) -> dict[str, Any]:
    status, body, _ = await api.request("GET", f"/calls/{call_id}/callbacks")
    assert status == 200, body
    return body


async def wait_states(api: Api, call_id: str, states: list[str], timeout: float = 15) -> dict:
    for _ in range(int(timeout / 0.05)):
        log = await callback_log(api, call_id)
        if [delivery["state"] for delivery in log["data"]] == states:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries never {states}: {log}")


async def test_each_transition_is_posted_signed_with_its_end_reason(
    cb: Api, receiver: Receiver
) -> None:
    call_id = await create(cb, receiver, "/one", scenario={"outcome": "busy", "ring_ms": 20})

    await receiver.wait_for(has_seqs("/one", [1, 2, 3, 4]))

    got = receiver.to("/one")
    bodies = [request.json() for request in got]
    assert [body["status"] for body in bodies] == ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]
    assert [body["end_reason"] for body in bodies] == [None, None, None, "busy"]
    _, events, _ = await cb.request("GET", f"/calls/{call_id}/events")
    assert [body | {"end_reason": None} for body in bodies] == [
        {key: event[key] for key in bodies[0] if key != "end_reason"} | {"end_reason": None}
        for event in events["data"]
    ], "the realtime message shape, plus end_reason"
    secret = await cb.signing_secret()
    log = await callback_log(cb, call_id)
    for request, delivery in zip(got, log["data"], strict=True):
        assert request.headers["Content-Type"] == "application/json"
        assert verify(secret, request.body, request.headers["X-MockComms-Signature"])
        assert request.headers["X-MockComms-Delivery"] == delivery["delivery_id"]
        assert request.headers["X-MockComms-Attempt"] == "1"
    assert [d["state"] for d in log["data"]] == ["delivered"] * 4
    assert log["status_callback"] == receiver.url("/one")


async def test_a_tampered_body_or_a_stale_timestamp_fails_the_receivers_check(
    cb: Api, receiver: Receiver
) -> None:
    await create(cb, receiver, "/check", scenario={"ring_ms": NEVER_MS})
    await receiver.wait_for(has_seqs("/check", [1, 2]))
    request = receiver.to("/check")[0]
    secret = await cb.signing_secret()
    header = request.headers["X-MockComms-Signature"]
    signed_at = verify(secret, request.body, header)

    with pytest.raises(SignatureError):
        verify(secret, request.body.replace(b"QUEUED", b"RINGING"), header)
    with pytest.raises(SignatureError):
        verify(secret, request.body, header, now=signed_at + 301)
    with pytest.raises(SignatureError):
        verify("whsec_" + "0" * 64, request.body, header)


async def test_callbacks_keep_seq_order_per_call_under_200_concurrent_calls(
    cb: Api, receiver: Receiver
) -> None:
    scenario = {"outcome": "completed", "ring_ms": 30, "talk_ms": 30}
    # Some receivers fail at first: their calls' later callbacks must wait for the retries.
    for i in range(0, 200, 10):
        receiver.script(f"/many/{i}", 500, 503)
    ids = await asyncio.gather(
        *(create(cb, receiver, f"/many/{i}", scenario=scenario) for i in range(200))
    )

    await receiver.wait_for(
        lambda got: all(has_seqs(f"/many/{i}", [1, 2, 3, 4])(got) for i in range(200)),
        within_s=60,
    )

    by_path: dict[str, list[int]] = defaultdict(list)
    for request in receiver.received:
        by_path[request.path].append(request.json()["seq"])
    for i, call_id in enumerate(ids):
        got = by_path[f"/many/{i}"]
        first_copies = list(dict.fromkeys(got))
        assert first_copies == [1, 2, 3, 4], (call_id, got)
        # A seq sent again (at least once) comes before any later seq is sent.
        assert got == sorted(got), (call_id, got)


async def test_a_500_is_retried_with_the_same_delivery_id_and_every_attempt_logged(
    cb: Api, receiver: Receiver
) -> None:
    receiver.script("/flaky", 500, 500)
    call_id = await create(cb, receiver, "/flaky", scenario={"ring_ms": NEVER_MS})

    await receiver.wait_for(has_seqs("/flaky", [1, 2]))

    attempts = receiver.to("/flaky")[:3]
    assert seqs(receiver.to("/flaky")) == [1, 1, 1, 2]
    assert [r.headers["X-MockComms-Attempt"] for r in attempts] == ["1", "2", "3"]
    assert len({r.headers["X-MockComms-Delivery"] for r in attempts}) == 1
    log = await wait_states(cb, call_id, ["delivered", "delivered"])
    delivery = log["data"][0]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert all(a["latency_ms"] >= 0 and a["attempted_at"] for a in delivery["attempts"])


async def test_a_timeout_is_retried(cb: Api, receiver: Receiver) -> None:
    receiver.script("/slow", Answer(wait_s=1.0))
    call_id = await create(cb, receiver, "/slow", scenario={"ring_ms": NEVER_MS})

    log = await wait_states(cb, call_id, ["delivered", "delivered"])

    first, second = log["data"][0]["attempts"]
    assert (first["status_code"], first["error"]) == (None, "timeout: no answer within 400 ms")
    assert second["status_code"] == 200


async def test_a_later_callback_waits_for_the_earlier_ones_retries(
    cb: Api, receiver: Receiver
) -> None:
    receiver.script("/behind", Answer(500, wait_s=0.1), Answer(500, wait_s=0.1))
    call_id = await create(cb, receiver, "/behind", scenario={"ring_ms": NEVER_MS})
    await cb.request("POST", f"/calls/{call_id}/advance?to=COMPLETED")

    await receiver.wait_for(has_seqs("/behind", [1, 2, 3, 4]))

    assert seqs(receiver.to("/behind")) == [1, 1, 1, 2, 3, 4]


async def test_a_slow_receiver_holds_up_no_other_calls_callbacks(
    cb: Api, receiver: Receiver
) -> None:
    receiver.slow("/stuck", 0.35)  # each attempt takes 0.35 s, under CALLBACK_TIMEOUT_MS
    scenario = {"outcome": "completed", "ring_ms": 10, "talk_ms": 10}
    await create(cb, receiver, "/stuck", scenario=scenario)
    await create(cb, receiver, "/quick", scenario=scenario)

    await receiver.wait_for(has_seqs("/quick", [1, 2, 3, 4]))

    assert len(receiver.to("/stuck")) <= 2, "the quick call's callbacks waited for the stuck one"


async def test_a_410_stops_every_later_callback_of_the_call(cb: Api, receiver: Receiver) -> None:
    receiver.script("/gone", 200, 410)  # QUEUED: 200, RINGING: 410
    call_id = await create(cb, receiver, "/gone", scenario={"ring_ms": NEVER_MS})
    await receiver.wait_for(has_seqs("/gone", [1, 2]))
    await asyncio.sleep(0.1)

    status, _, _ = await cb.request("POST", f"/calls/{call_id}/advance?to=COMPLETED")
    await asyncio.sleep(0.3)

    assert status == 200
    assert seqs(receiver.to("/gone")) == [1, 2]
    log = await callback_log(cb, call_id)
    assert [d["state"] for d in log["data"]] == ["delivered", "stopped"]
    assert log["stopped_at"] is not None


async def test_only_the_statuses_asked_for_are_called_back(cb: Api, receiver: Receiver) -> None:
    call_id = await create(
        cb,
        receiver,
        "/some",
        scenario={"outcome": "no_answer", "ring_ms": 10},
        status_callback_events=["UNANSWERED", "COMPLETED"],
    )

    await receiver.wait_for(has_seqs("/some", [3, 4]))

    _, call, _ = await cb.get_call(call_id)
    assert call["status_callback_events"] == ["UNANSWERED", "COMPLETED"]
    assert [d["status"] for d in (await callback_log(cb, call_id))["data"]] == [
        "UNANSWERED",
        "COMPLETED",
    ]


async def test_a_spent_callback_is_a_dead_letter_and_requeueing_it_delivers_it(
    cb: Api, own: Platform, receiver: Receiver
) -> None:
    receiver.script("/down", 500, 500, 503)  # CALLBACK_MAX_ATTEMPTS is 3
    call_id = await create(cb, receiver, "/down", scenario={"ring_ms": NEVER_MS})
    # QUEUED's callback is spent; the call's later callbacks (RINGING) go on without it.
    await wait_states(cb, call_id, ["failed", "delivered"])

    connection = SyncRedis.from_url(own.redis_url)
    try:
        registry = FailedJobRegistry(keys.RETRIES_QUEUE, connection=connection)
        dead_letter = keys.dead_letter_id(keys.CALLBACK, call_id)
        assert dead_letter in registry.get_job_ids()
        registry.requeue(dead_letter)  # what rq-dashboard's "Requeue" does
    finally:
        connection.close()

    log = await wait_states(cb, call_id, ["delivered", "delivered"])
    assert [a["status_code"] for a in log["data"][0]["attempts"]] == [500, 500, 503, 200]
    assert seqs(receiver.to("/down")) == [1, 1, 1, 2, 1]
    assert receiver.to("/down")[-1].headers["X-MockComms-Attempt"] == "4"


async def test_a_spent_upload_is_a_dead_letter_and_requeueing_it_stores_it(
    cb: Api, own: Platform
) -> None:
    status, created, _ = await cb.create_call(
        scenario={"ring_ms": 10, "fail_upload_attempts": 2}  # UPLOAD_MAX_ATTEMPTS is 2
    )
    assert status == 201
    call_id = created["call_id"]
    dead_letter = keys.dead_letter_id(keys.UPLOAD, call_id)
    connection = SyncRedis.from_url(own.redis_url)
    try:
        registry = FailedJobRegistry(keys.RETRIES_QUEUE, connection=connection)
        for _ in range(200):
            if dead_letter in registry.get_job_ids():
                break
            await asyncio.sleep(0.05)
        _, call, _ = await cb.get_call(call_id)
        assert call["recording_url"] is None

        registry.requeue(dead_letter)

        call = await cb.wait_recorded(call_id)
    finally:
        connection.close()
    assert call["recording_url"].endswith(f"/calls/{call_id}/recording")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.7/hook", "status_callback host 10.0.0.7 is not allowed"),
        ("https://example.com/hook", "status_callback host example.com is not allowed"),
        ("ftp://127.0.0.1/hook", "status_callback must be an absolute http or https URL"),
    ],
)
async def test_a_url_outside_the_allow_list_is_refused_at_create(
    cb: Api, url: str, message: str
) -> None:
    status, body, _ = await cb.create_call(status_callback=url)

    assert status == 400
    assert body["message"].startswith(message)


async def test_statuses_without_a_callback_are_refused(cb: Api) -> None:
    status, body, _ = await cb.create_call(status_callback_events=["COMPLETED"])

    assert (status, body["message"]) == (400, "status_callback_events needs a status_callback")


async def test_a_name_that_resolves_outside_the_allow_list_is_refused_at_delivery(
    platform_factory, make_api, receiver: Receiver
) -> None:
    # `localhost` is allowed by name, but the loopback network is not: what the name resolves
    # to is checked at delivery, so it goes nowhere (as a name rebound into a network would).
    by_name = await platform_factory(SETTINGS | {"CALLBACK_ALLOWED_HOSTS": "localhost"})
    api = await make_api(max_concurrent=100, max_cps=100, on=by_name)
    url = f"http://localhost:{receiver.port}/rebound"
    status, created, _ = await api.create_call(status_callback=url, scenario={"ring_ms": NEVER_MS})
    assert status == 201, created

    log = await wait_states(api, created["call_id"], ["failed", "failed"])

    assert receiver.to("/rebound") == []
    errors = [attempt["error"] for attempt in log["data"][0]["attempts"]]
    assert len(errors) == 3
    assert all("resolves only to addresses not in CALLBACK_ALLOWED_HOSTS" in e for e in errors)


async def test_a_worker_killed_mid_delivery_with_redis_flushed_loses_nothing(
    platform_factory, make_api, receiver: Receiver
) -> None:
    killed = await platform_factory(SETTINGS | {"CALLBACK_MAX_ATTEMPTS": "10"}, workers=1)
    api = await make_api(max_concurrent=1000, max_cps=1000, on=killed)
    receiver.slow("/kill", 0.3)  # callbacks stay in flight
    scenario = {"outcome": "completed", "ring_ms": 50, "talk_ms": 50}
    ids = await asyncio.gather(
        *(create(api, receiver, "/kill", scenario=scenario) for _ in range(30))
    )
    await receiver.wait_for(lambda got: len(got) >= 10)

    killed.processes["worker1"].kill()
    redis = Redis.from_url(killed.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    receiver.slow("/kill", 0)
    killed.add("worker2", "worker")

    for call_id in ids:
        await wait_states(api, call_id, ["delivered"] * 4, timeout=30)
    for call_id in ids:
        log = await callback_log(api, call_id)
        delivered = {d["delivery_id"] for d in log["data"]}
        got = {
            request.headers["X-MockComms-Delivery"]
            for request in receiver.to("/kill")
            if request.headers["X-MockComms-Delivery"] in delivered
        }
        assert got == delivered, "every transition reached the receiver"


async def test_deliveries_are_counted_in_metrics(cb: Api, receiver: Receiver) -> None:
    await create(cb, receiver, "/counted", scenario={"ring_ms": 10, "outcome": "failed"})
    await receiver.wait_for(has_seqs("/counted", [1, 2, 3, 4]))
    await asyncio.sleep(0.6)  # the workers write their figures every 0.25 s

    async with cb.http.get(cb.url("/metrics?format=prometheus"), headers=cb.auth) as response:
        text = await response.text()

    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['mockcomms_callback_deliveries_total{outcome="delivered"}']) >= 4
    assert float(samples["mockcomms_callback_delivery_seconds_count"]) >= 4
    assert float(samples["mockcomms_callback_attempts_total"]) >= 4
    assert 'mockcomms_timers_pending{kind="cbk"}' in samples


async def test_the_readmes_receiver_accepts_real_callbacks_and_refuses_forged_ones(
    cb: Api,
) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"^```python receiver\n(.*?)^```", readme, flags=re.M | re.S)
    assert snippet is not None
    port = free_port()
    code = snippet.group(1).replace('"whsec_…"', repr(await cb.signing_secret()))
    code = code.replace('("127.0.0.1", 8000)', f'("127.0.0.1", {port})')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.to_thread(wait_for_port, port, "the README's receiver")
        status, created, _ = await cb.create_call(
            status_callback=f"http://127.0.0.1:{port}/calls",
            scenario={"outcome": "busy", "ring_ms": 10},
        )
        assert status == 201, created
        assert process.stdout is not None
        lines = [
            (await asyncio.wait_for(process.stdout.readline(), 15)).decode().split()
            for _ in range(4)
        ]
        assert lines == [
            [created["call_id"], "1", "QUEUED", "None"],
            [created["call_id"], "2", "RINGING", "None"],
            [created["call_id"], "3", "UNANSWERED", "None"],
            [created["call_id"], "4", "COMPLETED", "busy"],
        ]
        async with cb.http.post(
            f"http://127.0.0.1:{port}/calls",
            data=b'{"seq": 9}',
            headers={"X-MockComms-Signature": f"t={int(time.time())},v1={'0' * 64}"},
        ) as forged:
            assert forged.status == 400
    finally:
        process.terminate()
        await process.wait()
