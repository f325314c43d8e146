"""Faults under load: with a few hundred calls in flight, a worker, the active scheduler or an API
process is killed, Redis restarts empty or PostgreSQL stops. Every call still completes once, with
its recording; nothing is half-written; the platform recovers on its own."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from core import keys
from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform, free_port
from tests.integration.test_realtime import SseReader, assert_lifecycle, history

# A call lives 1.2-2.2 s at this scale, so creating CALLS over SPREAD_S keeps most in flight.
TIME_SCALE = "0.2"
CALLS = 300
SPREAD_S = 1.0
# A call that lost its timer is resumed after its state's longest delay plus RECONCILE_GRACE_MS
# (1 s in the test settings): a few seconds at most; this bounds every wait for the calls.
COMPLETE_WITHIN_S = 20.0
# "Answers at once" while PostgreSQL is down.
REFUSE_WITHIN_S = 1.0

# Each transition once, in order: the only paths a simulated call takes on its own.
TIMED_PATHS = (
    ["QUEUED", "RINGING", "ANSWERED", "COMPLETED"],
    ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"],
)
EVENTS = {
    "QUEUED": "call_initiated",
    "RINGING": "call_routed",
    "ANSWERED": "call_answered",
    "UNANSWERED": "call_unanswered",
    "COMPLETED": "call_ended",
}


# -- platforms of the tests' own ---------------------------------------------------------------


@pytest.fixture
async def own_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Callable[..., Awaitable[Platform]]]:
    """Start a platform (optionally on a PostgreSQL of its own); all are stopped afterwards."""
    started: list[Platform] = []

    async def start(
        settings: dict[str, str] | None = None, workers: int = 1, private_postgres: bool = False
    ) -> Platform:
        running = Platform(
            tmp_path_factory.mktemp("faults"),
            settings={"TIME_SCALE": TIME_SCALE} | (settings or {}),
            workers=workers,
            private_postgres=private_postgres,
        )
        started.append(running)
        return await running.start()

    yield start
    errors = []
    for running in started:
        try:
            await running.stop()
        except Exception as exc:  # stop the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


async def new_api(
    http: aiohttp.ClientSession, platform: Platform, **limits: int | None
) -> tuple[Api, str]:
    """A client with a fresh key, and the key's id (for its Redis keys)."""
    secret = await platform.new_key(**limits)
    conn = await asyncpg.connect(platform.dsn)
    try:
        key_id = await conn.fetchval("SELECT id::text FROM api_keys WHERE name = $1", secret)
    finally:
        await conn.close()
    return Api(http, platform, secret), key_id


# -- load ------------------------------------------------------------------------------------


async def create_spread(api: Api, count: int = CALLS, over_s: float = SPREAD_S) -> list[Any]:
    """`count` creates started evenly over `over_s`; returns (status, body, seconds) of each."""

    async def one(i: int) -> tuple[int, Any, float]:
        await asyncio.sleep(i * over_s / count)
        return await timed(api.create_call())

    async with asyncio.timeout(over_s + 30):
        return await asyncio.gather(*(one(i) for i in range(count)))


async def timed(coro: Awaitable[tuple[int, Any, Any]]) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, body, _ = await coro
    return status, body, time.monotonic() - started


def created_ids(results: list[Any]) -> list[str]:
    return [body["call_id"] for status, body, _ in results if status == 201]


# -- what must hold afterwards ---------------------------------------------------------------


async def wait_all_recorded(
    platform: Platform, call_ids: list[str], timeout: float = COMPLETE_WITHIN_S
) -> float:
    """Seconds until every call is COMPLETED with its recording uploaded; fails after `timeout`
    naming where the others are stuck."""
    started = time.monotonic()
    conn = await asyncpg.connect(platform.dsn)
    try:
        while True:
            rows = await conn.fetch(
                """
                SELECT c.status, r.status AS upload, r.attempts,
                       c.recording_url IS NOT NULL AS has_url, count(*) AS n
                  FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
                 WHERE c.id = ANY($1::uuid[])
                 GROUP BY 1, 2, 3, 4
                """,
                call_ids,
            )
            done = sum(
                row["n"]
                for row in rows
                if row["status"] == "COMPLETED" and row["upload"] == "uploaded" and row["has_url"]
            )
            if done == len(call_ids):
                waited_s = time.monotonic() - started
                print(f"{done} calls COMPLETED with a recording {waited_s:.2f} s into the wait")
                return waited_s
            if time.monotonic() - started > timeout:
                stuck = [dict(row) for row in rows if row["upload"] != "uploaded"]
                raise AssertionError(
                    f"{len(call_ids) - done} of {len(call_ids)} calls not COMPLETED with a "
                    f"recording after {timeout} s; (status, upload, attempts): {stuck}\n"
                    + platform.logs(15)
                )
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def assert_each_transition_once(platform: Platform, call_ids: list[str]) -> None:
    """Each call's history is seqs 1..n of a timed path (every move once, none twice), and its
    recording is stored."""
    conn = await asyncpg.connect(platform.dsn)
    try:
        events = await conn.fetch(
            """
            SELECT call_id::text, seq, event, from_status, to_status
              FROM call_events WHERE call_id = ANY($1::uuid[]) ORDER BY call_id, seq
            """,
            call_ids,
        )
        calls = await conn.fetch(
            """
            SELECT c.id::text AS call_id, c.seq, c.status, c.recording_url, r.storage_key
              FROM calls c JOIN recordings r ON r.call_id = c.id
             WHERE c.id = ANY($1::uuid[])
            """,
            call_ids,
        )
    finally:
        await conn.close()
    by_call: defaultdict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in events:
        by_call[row["call_id"]].append(row)
    assert set(by_call) == set(call_ids)
    bad = {}
    for call_id, rows in by_call.items():
        path = [row["to_status"] for row in rows]
        moves_ok = all(
            row["event"] == EVENTS[row["to_status"]] and row["from_status"] == before
            for row, before in zip(rows, [None, *path], strict=False)
        )
        if [row["seq"] for row in rows] != list(range(1, len(rows) + 1)) or (
            path not in TIMED_PATHS or not moves_ok
        ):
            bad[call_id] = [(row["seq"], row["event"], row["to_status"]) for row in rows]
    assert not bad, f"{len(bad)} histories are not each transition once, in order: {bad}"

    assert {row["call_id"] for row in calls} == set(call_ids)
    for row in calls:
        assert row["seq"] == len(by_call[row["call_id"]]) and row["status"] == "COMPLETED", row
        assert row["recording_url"] == f"/calls/{row['call_id']}/recording", row
        assert (platform.recordings_dir / row["storage_key"]).is_file(), row


async def assert_api_shows_recorded(api: Api, call_ids: list[str]) -> None:
    async with asyncio.timeout(20):
        answers = await asyncio.gather(*(api.get_call(call_id) for call_id in call_ids))
    wrong = [
        body
        for status, body, _ in answers
        if status != 200 or body["status"] != "COMPLETED" or not body["recording_url"]
    ]
    assert not wrong, wrong[:5]
    async with api.http.get(api.url(f"/calls/{call_ids[0]}/recording"), headers=api.auth) as got:
        assert got.status == 200 and got.content_type.startswith("audio/"), got
        assert await got.read() == (ROOT / "assets" / "recording.wav").read_bytes()


async def lease_members(redis: Redis) -> dict[str, set[str]]:
    """Every limit lease left in Redis: lease key -> call ids."""
    found = {}
    async for lease_key in redis.scan_iter(match=keys.lease_keys_pattern()):
        members = {m.decode() for m in await redis.zrange(lease_key, 0, -1)} - {keys.SLOTS_KNOWN}
        if members:
            found[lease_key.decode()] = members
    return found


async def wait_no_leases(redis: Redis, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = await lease_members(redis)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert not left, f"leases left after every call ended: {left}"


async def all_timers(redis: Redis) -> list[str]:
    return [
        m.decode()
        for kind in keys.TIMER_KINDS
        for m in await redis.zrange(keys.timers(kind), 0, -1)
    ]


async def timers_of(redis: Redis, call_ids: list[str]) -> list[str]:
    """Timers still set for any of `call_ids`."""
    wanted = set(call_ids)
    return [m for m in await all_timers(redis) if m.split(":")[1] in wanted]


# -- 1. a worker killed mid-run --------------------------------------------------------------


async def test_calls_complete_once_when_a_worker_is_killed_mid_run(own_platform, http) -> None:
    own = await own_platform(workers=2)
    api, _ = await new_api(http, own, max_concurrent=1000, max_cps=1000)

    creating = asyncio.create_task(create_spread(api))
    # Mid-run: calls are moving and more keep coming (none has ended yet, so the kill does not
    # land mid-upload: that case is test_uploads_of_a_worker_killed_mid_upload_...).
    await asyncio.sleep(0.8)
    own.processes["worker1"].kill()
    await asyncio.sleep(0.3)
    own.add("worker3", "worker")
    results = await creating
    assert [status for status, _, _ in results] == [201] * CALLS
    ids = created_ids(results)

    await wait_all_recorded(own, ids)
    await assert_each_transition_once(own, ids)
    await assert_api_shows_recorded(api, ids)


async def upload_states(platform: Platform, call_ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(platform.dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT coalesce(r.status, c.status) AS state, count(*) AS n
              FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
             WHERE c.id = ANY($1::uuid[]) GROUP BY 1
            """,
            call_ids,
        )
    finally:
        await conn.close()
    return {row["state"]: row["n"] for row in rows}


async def test_uploads_of_a_worker_killed_mid_upload_are_taken_up_after_their_timeout(
    own_platform, http, tmp_path
) -> None:
    # An attempt still running after UPLOAD_ATTEMPT_TIMEOUT_MS lost its worker (a minute by
    # default; upkeep gives it back).
    own = await own_platform({"UPLOAD_ATTEMPT_TIMEOUT_MS": "2000"}, workers=0)
    # The first worker reads the audio from a FIFO nobody writes: each upload it claims hangs
    # mid-attempt, so the kill surely lands mid-upload.
    fifo = tmp_path / "recording.wav"
    os.mkfifo(fifo)
    own.add("worker1", "worker", {"RECORDING_SOURCE": str(fifo)})
    api, _ = await new_api(http, own, max_concurrent=100, max_cps=100)
    async with asyncio.timeout(10):
        ids = created_ids(await asyncio.gather(*(api.create_call() for _ in range(10))))
        while True:  # until the worker has claimed uploads and hangs in one
            if (await upload_states(own, ids)).get("uploading", 0):
                break
            await asyncio.sleep(0.05)
    own.processes["worker1"].kill()
    own.add("worker2", "worker")  # reads the real file

    # Upkeep gives the killed worker's attempt back after UPLOAD_ATTEMPT_TIMEOUT_MS (2 s here)
    # and the other worker uploads it.
    started = time.monotonic()
    while (states := await upload_states(own, ids)) != {"uploaded": len(ids)}:
        assert time.monotonic() - started < 8, (
            f"8 s after a worker died mid-upload, recordings by state: {states} (calls "
            "still COMPLETED without a recording_url)"
        )
        await asyncio.sleep(0.1)


# -- 2. Redis restarted empty mid-run --------------------------------------------------------


async def test_calls_complete_and_limits_recover_when_redis_restarts_empty(
    own_platform, http
) -> None:
    """Needs the two fixes tested below: a worker busy with a job when Redis drops starts
    again, and a pooled Redis connection Redis dropped is retried on a new one."""
    own = await own_platform(workers=2)
    allowance = CALLS + 10  # room for the creates asked during the outage
    api, key_id = await new_api(http, own, max_concurrent=allowance, max_cps=1000)
    redis = Redis.from_url(own.redis_url)
    try:
        results = await create_spread(api)
        assert [status for status, _, _ in results] == [201] * CALLS
        ids = created_ids(results)
        # With every call in flight: down for a moment, then back with nothing (live views,
        # timers, leases, RQ queues and jobs all gone). What is asked meanwhile is refused at
        # once (or, retried past the outage, created).
        restarting = asyncio.create_task(asyncio.to_thread(own.restart_redis, 0.5))
        await asyncio.sleep(0.2)
        meanwhile = [await timed(api.create_call()) for _ in range(5)]
        await restarting
        for status, body, seconds in meanwhile:
            assert status == 201 or (status == 503 and "Redis" in body["message"]), body
            assert seconds < REFUSE_WITHIN_S, f"a create took {seconds:.2f} s to answer"
        ids += created_ids(meanwhile)

        await wait_all_recorded(own, ids)
        await assert_each_transition_once(own, ids)
        conn = await asyncpg.connect(own.dsn)
        try:
            written = await conn.fetchval(
                "SELECT count(*) FROM calls WHERE api_key_id = $1", key_id
            )
        finally:
            await conn.close()
        assert written == len(ids), "a refused create left a call behind"

        # Leases were rebuilt from PostgreSQL, then released as the calls ended; no timer of
        # theirs is left; and the key has its whole allowance again, and no more.
        await wait_no_leases(redis)
        assert await timers_of(redis, ids) == []
        gate = asyncio.Semaphore(50)  # a bounded burst, as a client would send

        async def create() -> tuple[int, Any, Any]:
            async with gate:
                return await api.create_call()

        async with asyncio.timeout(20):
            again = await asyncio.gather(*(create() for _ in range(allowance)))
        assert [status for status, _, _ in again] == [201] * allowance, [
            body for status, body, _ in again if status != 201
        ][:5]
        status, body, _ = await api.create_call()
        assert (status, body["message"]) == (429, f"Maximum concurrent calls reached ({allowance})")
    finally:
        await redis.aclose()


async def wait_lock_waiters(conn: asyncpg.Connection, count: int, timeout: float = 5) -> None:
    """Until `count` other sessions wait for a row lock (the workers' moves, on our rows)."""
    async with asyncio.timeout(timeout):
        while True:
            waiting = await conn.fetchval(
                """
                SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                """
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.02)


async def test_a_worker_busy_with_a_job_when_redis_drops_for_seconds_starts_again(
    own_platform, http
) -> None:
    """worker/__main__.py starts RQ again after Redis dropped under a job, also when Redis is
    still away as it starts (the SimpleWorker constructor talks to Redis)."""
    own = await own_platform(workers=2)
    api, _ = await new_api(http, own, max_concurrent=100, max_cps=100)
    async with asyncio.timeout(10):
        ids = created_ids(await asyncio.gather(*(api.create_call() for _ in range(40))))
    conn = await asyncpg.connect(own.dsn)
    try:
        # Hold the calls' rows so that both workers are surely in the middle of a job (their
        # moves wait for the rows) when Redis goes away.
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM calls WHERE id = ANY($1::uuid[]) FOR UPDATE", ids)
            await wait_lock_waiters(conn, 2)
            own.processes["redis"].kill()
        # The jobs go on: they commit, cannot publish, and end while Redis is still away; the
        # workers start again while it is still away, and again after it is back.
        await asyncio.sleep(3.0)
    finally:
        await conn.close()
    await asyncio.to_thread(own.start_redis)
    await asyncio.sleep(1.0)

    gone = [name for name in ("worker1", "worker2") if not own.processes[name].alive]
    # Where each one ended: its own frames of the traceback it died with, and the error.
    endings = {
        name: [
            line.strip()
            for line in own.processes[name].log_path.read_text(errors="replace").splitlines()
            if "worker/__main__.py" in line or line.startswith("redis.exceptions.")
        ][-3:]
        for name in gone
    }
    assert not gone, (
        f"{gone} exited after Redis dropped during a job and came back 3 s later; no worker "
        f"is left to move the calls: {endings}"
    )
    await wait_all_recorded(own, ids, timeout=10)


async def test_the_api_waits_for_redis_rather_than_refusing_while_it_is_up(own_platform) -> None:
    own = await own_platform()
    redis = Redis.from_url(own.redis_url)
    # A client without aiohttp's default cap of 100 connections per session.
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            api, _ = await new_api(http, own, max_concurrent=10_000, max_cps=10_000)
            assert (await api.create_call())[0] == 201  # the key is cached now
            # (1) Redis slow for half a second (as in a fork or a big DEL) while 300 creates
            # arrive: they wait for it, more at once than the API's Redis pool allows.
            await redis.execute_command("CLIENT", "PAUSE", "500", "WRITE")
            async with asyncio.timeout(20):
                burst = await asyncio.gather(*(api.create_call() for _ in range(CALLS)))
            # (2) Redis restarts (down for no time at all); then 50 creates at once, each on
            # a connection the API's pool opened before the restart.
            await asyncio.to_thread(own.restart_redis)
            async with asyncio.timeout(20):
                after = await asyncio.gather(*(api.create_call() for _ in range(50)))
    finally:
        await redis.aclose()
    burst_refused = [body for status, body, _ in burst if status != 201]
    after_refused = [body for status, body, _ in after if status != 201]
    logged = {
        line.split('"msg":"')[1].split('"')[0]
        for line in own.logs(1000).splitlines()
        if "Redis unavailable" in line
    }
    assert not burst_refused and not after_refused, (
        f"Redis up all along, yet {len(burst_refused)} of {CALLS} creates while it was slow "
        f"and {len(after_refused)} of 50 after it restarted were refused: "
        f"{(burst_refused + after_refused)[:1]}; the API logged {sorted(logged)}"
    )


# -- 3. PostgreSQL stopped -------------------------------------------------------------------


def assert_refused_at_once(answers: list[tuple[int, Any, float]], what: str) -> None:
    for status, body, seconds in answers:
        assert status == 503, (what, status, body)
        assert body["error"] == "Service Unavailable" and "PostgreSQL" in body["message"], body
        assert seconds < REFUSE_WITHIN_S, f"{what} took {seconds:.2f} s to refuse"


async def test_postgres_outage_refuses_at_once_writes_nothing_and_heals(own_platform, http) -> None:
    # Keys are re-read after 1 s, so the outage covers both a cached key (the limiter runs, then
    # the insert fails) and one that must be looked up (refused before the limiter).
    own = await own_platform({"API_KEY_CACHE_TTL_MS": "1000"}, workers=2, private_postgres=True)
    busy, busy_id = await new_api(http, own, max_concurrent=1000, max_cps=1000)
    small, small_id = await new_api(http, own)  # the defaults: 3 concurrent, 2 per second
    redis = Redis.from_url(own.redis_url)
    try:
        before = await create_spread(busy, 200, over_s=0.5)
        assert [status for status, _, _ in before] == [201] * 200
        assert (await small.request("GET", "/calls"))[0] == 200  # its key is cached now
        # It goes while the calls are moving, before any has ended (a call lives 1.2 s at
        # least): an upload cut short by the outage waits for UPLOAD_ATTEMPT_TIMEOUT_MS (a
        # minute), as a killed worker's does (test_uploads_of_a_worker_killed_mid_upload_...).
        await asyncio.to_thread(own.stop_postgres)
        down_at = time.monotonic()

        # The busy key in bursts; the small key one request after another, so that a slot taken
        # by a request still in flight is not mistaken for one a refused request kept.
        refused = []
        while time.monotonic() - down_at < 1.5:
            refused += await asyncio.gather(*(timed(busy.create_call()) for _ in range(10)))
            for _ in range(3):
                refused.append(await timed(small.create_call()))
            await asyncio.sleep(0.05)
        assert_refused_at_once(refused, "POST /calls")
        print(
            f"PostgreSQL down: {len(refused)} creates refused, slowest in "
            f"{max(seconds for *_, seconds in refused) * 1000:.0f} ms"
        )
        unknown = "00000000-0000-4000-8000-000000000000"
        assert_refused_at_once([await timed(busy.get_call(unknown))], "GET /calls/{id}")
        assert_refused_at_once([await timed(busy.request("GET", "/calls"))], "GET /calls")
        status, body, seconds = await timed(busy.request("GET", "/ready"))
        assert status == 503 and body["checks"]["postgres"].startswith("unavailable"), body
        assert body["checks"]["redis"] == "ok" and seconds < 1.5, (body, seconds)

        # The refused requests took no limit slot: the small key (3 at once, 2 a second) was
        # answered 503 every time, never 429, and Redis holds nothing of theirs.
        assert await redis.zcount(keys.leases(small_id), "-inf", "(+inf") == 0
        assert await redis.zcard(keys.rate_window(small_id)) == 0

        await asyncio.to_thread(own.start_postgres)
        back_at = time.monotonic()
        async with asyncio.timeout(10):
            while (answer := await busy.create_call())[0] != 201:
                assert answer[0] == 503, answer
                await asyncio.sleep(0.1)
        healed_s = time.monotonic() - back_at
        assert healed_s < 5, f"new calls only worked {healed_s:.1f} s after PostgreSQL returned"
        print(f"PostgreSQL back: a create worked again after {healed_s:.2f} s")
        assert (await busy.request("GET", "/ready"))[0] == 200

        # Every call answered 201 completes, in flight during the outage or not.
        ids = [*created_ids(before), answer[1]["call_id"]]
        await wait_all_recorded(own, ids)
        await assert_each_transition_once(own, ids)

        # Nothing half-written: each call has its first event; the refused ones left no call,
        # no lease and no timer.
        conn = await asyncpg.connect(own.dsn)
        try:
            orphans = await conn.fetchval(
                """
                SELECT count(*) FROM calls c
                 WHERE NOT EXISTS (SELECT 1 FROM call_events e WHERE e.call_id = c.id AND e.seq = 1)
                """
            )
            written = {
                row["id"]
                for row in await conn.fetch(
                    "SELECT id::text FROM calls WHERE api_key_id = $1", busy_id
                )
            }
            small_calls = await conn.fetchval(
                "SELECT count(*) FROM calls WHERE api_key_id = $1", small_id
            )
        finally:
            await conn.close()
        assert orphans == 0
        assert written == set(ids) and small_calls == 0
        leases = await lease_members(redis)
        assert leases.get(keys.leases(busy_id), set()) <= written, leases
        assert keys.leases(small_id) not in leases, leases
        timer_calls = {m.split(":")[1] for m in await all_timers(redis)}
        assert timer_calls <= written, timer_calls - written

        # And the small key has its whole allowance.
        assert [(await small.create_call())[0] for _ in range(2)] == [201, 201]
    finally:
        await redis.aclose()


async def test_a_request_caught_by_a_postgres_shutdown_gets_503(own_platform, http) -> None:
    own = await own_platform(private_postgres=True)
    api, _ = await new_api(http, own, max_concurrent=10_000, max_cps=10_000)
    answers: list[tuple[int, Any]] = []
    stopping = asyncio.Event()

    async def keep_asking() -> None:
        while not stopping.is_set():
            status, body, _ = await api.create_call()
            answers.append((status, body))

    # A steady stream of creates (each one a PostgreSQL insert) while the server shuts down;
    # two stop/start rounds, as the race is over within milliseconds.
    for _ in range(2):
        stopping.clear()
        async with asyncio.timeout(20):
            asking = [asyncio.create_task(keep_asking()) for _ in range(30)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own.stop_postgres)
            await asyncio.sleep(0.2)
            stopping.set()
            await asyncio.gather(*asking)
        await asyncio.to_thread(own.start_postgres)
        if any(status not in (201, 503) for status, _ in answers):
            break
    wrong = [(status, body) for status, body in answers if status not in (201, 503)]
    causes = {  # the last line of each logged traceback: the exception
        json.loads(line)["exc"].splitlines()[-1]
        for line in own.logs(1000).splitlines()
        if "unhandled error" in line
    }
    assert not wrong, (
        f"{len(wrong)} of {len(answers)} creates caught by the shutdown were not 201 or 503: "
        f"{wrong[:1]}; the API logged: {sorted(causes)}"
    )


# -- 4. the active scheduler killed ----------------------------------------------------------


async def test_a_standby_scheduler_takes_over_under_load(own_platform, http) -> None:
    own = await own_platform(workers=2)
    standby = own.add("scheduler2", "scheduler")
    api, _ = await new_api(http, own, max_concurrent=1000, max_cps=1000)
    redis = Redis.from_url(own.redis_url)
    try:
        await asyncio.sleep(0.3)  # the standby is up and finds the lock taken
        leader = await redis.get(keys.SCHEDULER_LOCK)
        assert leader is not None

        creating = asyncio.create_task(create_spread(api))
        await asyncio.sleep(0.8)
        own.processes["scheduler"].kill()
        killed_at = time.monotonic()
        # The lock lapses after SCHEDULER_LOCK_TTL_MS (1.5 s); the standby checks every 0.5 s.
        async with asyncio.timeout(5):
            while True:
                holder = await redis.get(keys.SCHEDULER_LOCK)
                if holder not in (None, leader):
                    break
                await asyncio.sleep(0.02)
        takeover_s = time.monotonic() - killed_at
        print(f"scheduler killed: the standby led after {takeover_s:.2f} s")
        assert takeover_s < 3.0, f"the standby took {takeover_s:.2f} s to lead"
        standby_alive = standby.alive  # a plain bool: pytest would print the Process's env
        assert holder != leader and standby_alive

        results = await creating
        assert [status for status, _, _ in results] == [201] * CALLS
        ids = created_ids(results)
        await wait_all_recorded(own, ids)
        await assert_each_transition_once(own, ids)
    finally:
        await redis.aclose()


# -- 5. an API process killed with streams open ----------------------------------------------


async def wait_ready(http: aiohttp.ClientSession, base_url: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with http.get(base_url + "/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def read_until_cut(response: aiohttp.ClientResponse, messages: list[dict[str, Any]]) -> bool:
    """Append the stream's messages; True if it ended after COMPLETED, False if it was cut."""
    reader = SseReader(response)
    try:
        while (message := await reader.message()) is not None:
            messages.append(message)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        return False
    return bool(messages) and messages[-1]["status"] == "COMPLETED"


async def test_sse_clients_resume_exactly_on_another_api_when_theirs_is_killed(
    own_platform, http
) -> None:
    own = await own_platform(workers=2)
    second_url = f"http://127.0.0.1:{free_port()}"
    own.add("api2", "api", {"PORT": second_url.rsplit(":", 1)[1]})
    await wait_ready(http, second_url)
    api, _ = await new_api(http, own, max_concurrent=100, max_cps=100)

    opened = asyncio.Event()
    streams_open = 0
    cut = 0

    async def follow() -> tuple[str, list[dict[str, Any]]]:
        nonlocal streams_open, cut
        status, created, _ = await api.create_call()
        assert status == 201, created
        call_id = created["call_id"]
        messages: list[dict[str, Any]] = []
        async with http.get(api.url(f"/calls/{call_id}/stream"), headers=api.auth) as response:
            assert response.status == 200
            streams_open += 1
            if streams_open == 20:
                opened.set()
            finished = await read_until_cut(response, messages)
        if not finished:
            cut += 1
            resume = {"Last-Event-ID": str(messages[-1]["seq"])} if messages else {}
            async with http.get(
                f"{second_url}/calls/{call_id}/stream", headers=api.auth | resume
            ) as response:
                assert response.status == 200, await response.text()
                assert await read_until_cut(response, messages), messages
        return call_id, messages

    async with asyncio.timeout(30):
        following = [asyncio.create_task(follow()) for _ in range(20)]
        await opened.wait()
        await asyncio.sleep(0.6)  # every call has moved at least once; none has ended
        own.processes["api"].kill()
        followed = await asyncio.gather(*following)

    assert cut >= 15, f"only {cut} of 20 streams were open when the API died"
    conn = await asyncpg.connect(own.dsn)
    try:
        for call_id, messages in followed:
            assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), messages
            assert_lifecycle(messages, call_id)
            assert messages == await history(conn, call_id)
    finally:
        await conn.close()
