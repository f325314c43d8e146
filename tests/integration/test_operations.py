"""What operators run: the Procfile's processes, migrations, seeding, rq-dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
from redis import Redis as SyncRedis
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core import keys
from devstack.databases import scratch_database
from tests.integration.platform import ROOT, Platform, free_port, server_dsn


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_procfile_runs_web_worker_scheduler_and_dashboard() -> None:
    assert procfile() == {
        "web": "python -m api",
        "worker": "python -m worker",
        "scheduler": "python -m scheduler",
        "dashboard": (
            'rq-dashboard --bind 127.0.0.1 --port 9181 --redis-url "$REDIS_URL"'
            ' --username "${RQ_DASHBOARD_USERNAME:-admin}"'
            ' --password "${RQ_DASHBOARD_PASSWORD:?set RQ_DASHBOARD_PASSWORD (scripts/run makes one)}"'
        ),
    }


async def test_migrate_is_idempotent_and_seeding_twice_adds_nothing() -> None:
    async with scratch_database(server_dsn(), migrated=False) as dsn:
        env = os.environ | {"DATABASE_URL": dsn}

        def db(command: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "db", command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return done.stdout.strip()

        assert db("migrate").startswith("migrations applied: 0001_calls.sql")
        assert db("migrate") == "schema is up to date"
        names = (
            ": seeded-4552a382064a (test…), seeded-c6029e4ce1e4 (test…),"
            " seeded-c48a01f49fd0 (demo…)"
        )
        assert db("seed-keys") == "api keys: 3 configured, 3 added" + names
        assert db("seed-keys") == "api keys: 3 configured, 0 added" + names
        conn = await asyncpg.connect(env["DATABASE_URL"])
        try:
            stored = await conn.fetch("SELECT key_hash, key_prefix FROM api_keys")
        finally:
            await conn.close()
        # Hashed at rest: no secret appears in the table.
        assert all(len(row["key_hash"]) == 32 for row in stored)
        assert b"demo-key" not in b"".join(row["key_hash"] for row in stored)


def test_db_command_without_postgresql_says_so() -> None:
    env = os.environ | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}
    done = subprocess.run(
        [sys.executable, "-m", "db", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot reach PostgreSQL" in done.stderr


async def test_rq_dashboard_serves_the_queues_on_loopback(platform: Platform, api) -> None:
    port = free_port()
    command = procfile()["dashboard"].replace("9181", str(port))
    env = os.environ | {
        "REDIS_URL": platform.redis_url,
        "RQ_DASHBOARD_USERNAME": "ops",
        "RQ_DASHBOARD_PASSWORD": "s3cret-dashboard",
    }
    dashboard = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env=env | {"PATH": f"{ROOT}/.venv/bin:{env['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _, created, _ = await api.create_call()
        await api.wait_recorded(created["call_id"])  # the queue has had jobs by then
        queues = None
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(
                        f"http://127.0.0.1:{port}/0/data/queues.json",
                        headers={
                            "Authorization": aiohttp.encode_basic_auth("ops", "s3cret-dashboard")
                        },
                    ) as response:
                        if response.status == 200:
                            queues = await response.json()
                            break
                await asyncio.sleep(0.1)
        assert queues is not None, "rq-dashboard did not answer"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/0/data/queues.json") as response,
        ):
            assert response.status == 401, "rq-dashboard must ask for a login"
        assert keys.TIMERS_QUEUE in {queue["name"] for queue in queues["queues"]}
        assert shlex.split(command)[1:3] == ["--bind", "127.0.0.1"]
    finally:
        dashboard.terminate()
        dashboard.wait(5)


async def test_every_process_stops_within_two_seconds_of_sigterm(platform_factory) -> None:
    """Process managers, docker and systemd send SIGTERM and wait; none of ours may need a
    SIGKILL."""
    own = await platform_factory(workers=1)
    for name in ("worker1", "scheduler", "api"):
        process = own.processes[name]
        process.signal(signal.SIGTERM)
        exited = await asyncio.to_thread(process.popen.wait, 2)
        assert exited is not None, f"{name} still running 2 s after SIGTERM"


async def test_the_api_ends_its_streams_cleanly_and_stops_within_two_seconds_with_1000_open(
    platform_factory,
) -> None:
    """Ctrl-C with streams open: every SSE stream ends as a stream should (its body complete),
    every WebSocket is closed with 1001 (going away), and the API exits within 2 s."""
    own = await platform_factory({"MAX_STREAMS_PER_KEY": "2000", "STREAM_PING_S": "15"})
    secret = await own.new_key(max_concurrent=10, max_cps=10)
    auth = {"Authorization": f"Bearer {secret}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            own.base_url + "/events",
            headers=auth,
            json={"event": "call_initiated", "type": "voice", "queue_id": "q"},
        ) as response:
            call_id = (await response.json())["call_id"]
        streams = [await http.get(own.base_url + "/stream", headers=auth) for _ in range(900)]
        sockets = [
            await http.ws_connect(own.base_url + f"/ws?call_id={call_id}", headers=auth)
            for _ in range(100)
        ]
        for stream in streams:
            assert stream.status == 200
            await stream.content.readline()  # event: ready

        async def to_the_end(stream: aiohttp.ClientResponse) -> bool:
            await stream.content.read()  # raises if the body is cut short
            return stream.content.at_eof()

        async def close_code(ws: aiohttp.ClientWebSocketResponse) -> tuple:
            while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
            # The server's close frame (the client's answer may find the process gone).
            return message.type, message.data

        # Read as clients do, all at once.
        readers = asyncio.gather(
            *(to_the_end(stream) for stream in streams), *(close_code(ws) for ws in sockets)
        )
        api = own.processes["api"]
        started = time.monotonic()
        api.signal(signal.SIGTERM)
        await asyncio.to_thread(api.popen.wait, 5)
        stopped_s = time.monotonic() - started
        ends = await asyncio.wait_for(readers, 5)
        assert ends[:900] == [True] * 900
        assert ends[900:] == [(aiohttp.WSMsgType.CLOSE, 1001)] * 100
    assert api.popen.returncode == 0
    assert stopped_s < 2, f"the API took {stopped_s:.2f} s to stop"


async def test_a_killed_workers_drain_job_is_deleted_not_failed_and_the_worker_unlisted(
    platform_factory, make_api
) -> None:
    """A worker killed mid-job: nothing was lost (upkeep resumes its timers), so its job does
    not land in RQ's failed registry (AbandonedJobError) as RQ's maintenance would put it there,
    and the worker leaves RQ's list of workers within PROCESS_DEAD_AFTER_MS."""
    own = await platform_factory({"TIME_SCALE": "0.2", "PROCESS_DEAD_AFTER_MS": "1000"}, workers=2)
    api = await make_api(max_concurrent=1000, max_cps=1000, on=own)
    rq = SyncRedis.from_url(own.redis_url)
    started = StartedJobRegistry(keys.TIMERS_QUEUE, connection=rq)
    # Calls created over two seconds keep timers due, so the workers' drain jobs run long.
    creating = asyncio.gather(*(delayed(i * 0.01, api.create_call()) for i in range(200)))

    def running_job() -> tuple[Job, Worker] | None:
        for job_id in started.get_job_ids(cleanup=False):
            with contextlib.suppress(NoSuchJobError):
                job = Job.fetch(job_id, connection=rq)
                worker = Worker.find_by_key(
                    Worker.redis_worker_namespace_prefix + (job.worker_name or ""), connection=rq
                )
                if worker is not None:
                    return job, worker
        return None

    async with asyncio.timeout(10):
        while True:
            found = await asyncio.to_thread(running_job)
            if found is not None:
                job, worker = found
                process = next(p for p in own.processes.values() if p.pid == worker.pid)
                process.kill()
                if await asyncio.to_thread(job.get_status) == JobStatus.STARTED:
                    break  # killed mid-job
                own.add(f"{process.name}-again", "worker")  # the job ended first: again
            await asyncio.sleep(0.01)
    results = await creating
    ids = [body["call_id"] for status, body, _ in results if status == 201]
    assert len(ids) == 200

    async with asyncio.timeout(5):
        while True:
            listed = {w.name for w in await asyncio.to_thread(Worker.all, connection=rq)}
            if worker.name not in listed:
                break
            await asyncio.sleep(0.1)
    assert not await asyncio.to_thread(job.exists, job.id, rq)
    for call_id in ids:
        await api.wait_recorded(call_id, timeout=30)

    # What RQ's own maintenance does some minutes later, once the live workers' jobs are done:
    # nothing is left for it to fail.
    async with asyncio.timeout(5):
        while True:
            if not await asyncio.to_thread(started.get_job_ids, cleanup=False):
                break
            await asyncio.sleep(0.05)
    await asyncio.to_thread(started.cleanup, time.time() + 3600)
    assert FailedJobRegistry(keys.TIMERS_QUEUE, connection=rq).count == 0
    rq.close()


async def delayed(delay_s: float, coro: Awaitable[Any]) -> Any:
    await asyncio.sleep(delay_s)
    return await coro


async def test_a_worker_taken_for_dead_while_it_stalled_is_listed_again_when_it_goes_on(
    platform_factory, make_api
) -> None:
    own = await platform_factory({"PROCESS_DEAD_AFTER_MS": "1000"}, workers=1)
    api = await make_api(on=own)
    rq = SyncRedis.from_url(own.redis_url)
    worker = own.processes["worker1"]

    async def listed() -> set[int]:
        return {w.pid for w in await asyncio.to_thread(Worker.all, connection=rq)}

    async def until(predicate: Callable[[set[int]], bool]) -> None:
        async with asyncio.timeout(5):
            while True:
                if predicate(await listed()):
                    return
                await asyncio.sleep(0.1)

    await until(lambda pids: worker.pid in pids)
    worker.signal(signal.SIGSTOP)
    try:
        await until(lambda pids: worker.pid not in pids)
    finally:
        worker.signal(signal.SIGCONT)
    await until(lambda pids: worker.pid in pids)
    _, created, _ = await api.create_call()
    await api.wait_recorded(created["call_id"])
    rq.close()


async def test_a_process_whose_pools_may_not_fit_says_so_at_start_and_runs(
    tmp_path_factory,
) -> None:
    # 30 connections, 3 of them for superusers: an API process at DB_POOL_MAX 20 may open 32.
    own = Platform(
        tmp_path_factory.mktemp("connections"),
        settings={"DB_POOL_MAX": "20"},
        private_postgres=True,
        postgres_config="max_connections = 30\n",
    )
    try:
        await own.start()

        def warnings(process: str) -> list[dict]:
            text = own.processes[process].log_path.read_text()
            return [
                json.loads(line)
                for line in text.splitlines()
                if line.startswith("{") and '"level":"warning"' in line
            ]

        # Lines leave through a writer thread: the API may answer before its first is out.
        async with asyncio.timeout(5):
            while True:
                room = [w for w in warnings("api") if w["msg"].startswith("PostgreSQL has room")]
                if room:
                    break
                await asyncio.sleep(0.05)
        (said,) = room
        assert said["connections_max"] == 32 and said["max_connections"] == 30
        assert said["connections_left"] <= 27
        assert (
            f"PostgreSQL has room for {said['connections_left']} more connections"
            " (max_connections 30, 3 reserved for superusers," in said["msg"]
        )
        assert (
            "but this api process may open up to 32 (DB_POOL_MAX 20 + 12 for its batched"
            " writes)" in said["msg"]
        )
        assert "Lower DB_POOL_MAX" in said["msg"]
        # The worker (8) and the scheduler (4) fit: nothing said at WARNING.
        for process in ("worker1", "scheduler"):
            assert not [w for w in warnings(process) if "PostgreSQL" in w["msg"]], process
        # It runs all the same.
        async with aiohttp.ClientSession() as http, http.get(own.base_url + "/ready") as ready:
            assert ready.status == 200
    finally:
        await own.stop()
