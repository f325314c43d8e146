"""What operators run: the Procfile's processes, migrations, seeding, rq-dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys

import aiohttp
import asyncpg

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
    """honcho, docker and systemd send SIGTERM and wait; none of ours may need a SIGKILL."""
    own = await platform_factory(workers=1)
    for name in ("worker0", "scheduler", "api"):
        process = own.processes[name]
        process.signal(signal.SIGTERM)
        exited = await asyncio.to_thread(process.popen.wait, 2)
        assert exited is not None, f"{name} still running 2 s after SIGTERM"
