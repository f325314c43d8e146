"""`python -m db keys …`: operators create, list, disable and limit keys; the API honours them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import pytest

from db.keys import hash_secret, insert_key, new_secret
from devstack.databases import scratch_database
from tests.integration.platform import ROOT, Platform, free_port, server_dsn

SECRET = re.compile(r"mc_[A-Za-z0-9_-]{43}")


async def keys_cli(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m db keys ARGS` against the database at `dsn`."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db", "keys", *args],
        cwd=ROOT,
        env=(env or os.environ) | {"DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        check=False,
    )


def created_secret(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    found = SECRET.findall(done.stdout + done.stderr)
    assert len(found) == 1, done.stdout
    return found[0]


def unique_name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


async def stored_keys(dsn: str) -> list[dict]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await conn.fetch("SELECT * FROM api_keys ORDER BY name")]
    finally:
        await conn.close()


async def get_metrics(
    http: aiohttp.ClientSession, platform: Platform, secret: str
) -> tuple[int, dict]:
    async with http.get(
        platform.base_url + "/metrics", headers={"Authorization": f"Bearer {secret}"}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_create_prints_the_secret_once_stores_only_its_hash_and_the_api_accepts_it(
    platform: Platform, http: aiohttp.ClientSession, pg: asyncpg.Connection
) -> None:
    name = unique_name()

    done = await keys_cli(platform.dsn, "create", name, "--max-cps", "5")

    secret = created_secret(done)
    assert (done.stdout + done.stderr).count(secret) == 1
    assert "shown only this once" in done.stdout
    assert "cannot be shown again" in done.stdout
    row = await pg.fetchrow("SELECT * FROM api_keys WHERE name = $1", name)
    assert row["key_hash"] == hash_secret(secret)
    assert row["key_prefix"] == secret[:8]
    assert (row["max_concurrent_calls"], row["max_cps"], row["enabled"]) == (None, 5, True)
    assert not any(secret in str(value) for value in dict(row).values())
    status, body = await get_metrics(http, platform, secret)
    assert status == 200
    assert "total_calls" in body


async def test_list_shows_names_prefixes_account_sids_limits_state_and_never_a_secret_or_hash(
    scratch_dsn: str,
) -> None:
    limited = created_secret(
        await keys_cli(scratch_dsn, "create", "acme", "--max-concurrent", "7", "--max-cps", "4")
    )
    plain = created_secret(await keys_cli(scratch_dsn, "create", "plain"))
    assert (await keys_cli(scratch_dsn, "disable", "plain")).returncode == 0

    done = await keys_cli(scratch_dsn, "list")

    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split() == [
        "NAME",
        "PREFIX",
        "ACCOUNT",
        "SID",
        "MAX",
        "CONCURRENT",
        "MAX",
        "CPS",
        "MAX",
        "INGESTED",
        "ENABLED",
        "CREATED",
        "AT",
    ]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["acme"][1:2] + cells["acme"][3:7] == [limited[:8], "7", "4", "default", "yes"]
    assert cells["plain"][1:2] + cells["plain"][3:7] == [
        plain[:8],
        "default",
        "default",
        "default",
        "no",
    ]
    # The key's Account SID on the Twilio face: AC and its id in 32 hex digits.
    assert re.fullmatch(r"AC[0-9a-f]{32}", cells["acme"][2])
    assert cells["acme"][2] != cells["plain"][2]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", " ".join(cells["acme"][7:]))
    for secret in (limited, plain):
        assert secret not in done.stdout
        assert secret[8:] not in done.stdout
        assert hash_secret(secret).hex() not in done.stdout


async def test_list_of_no_keys_says_how_to_create_one(scratch_dsn: str) -> None:
    done = await keys_cli(scratch_dsn, "list")

    assert done.returncode == 0
    assert done.stdout.strip() == "no API keys: create one with `python -m db keys create NAME`"


async def test_a_disabled_key_is_refused_and_its_streams_closed_within_a_second(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    """The CLI tells the running API processes (the 5 s key cache is only the fallback): REST
    requests get 401, the open SSE streams end and WebSockets close with 4401, within 1 s."""
    name = unique_name()
    secret = created_secret(await keys_cli(platform.dsn, "create", name, env=platform.env))
    auth = {"Authorization": f"Bearer {secret}"}
    assert (await get_metrics(http, platform, secret))[0] == 200  # now in the API's cache
    async with http.post(
        platform.base_url + "/events",
        headers=auth,
        json={"event": "call_initiated", "type": "voice", "queue_id": "q"},
    ) as response:
        call_id = (await response.json())["call_id"]
    key_stream = await http.get(platform.base_url + "/stream", headers=auth)
    call_stream = await http.get(platform.base_url + f"/calls/{call_id}/stream", headers=auth)
    ws = await http.ws_connect(platform.base_url + f"/ws?call_id={call_id}", headers=auth)
    await ws.receive(timeout=5)  # the call's current state
    await key_stream.content.readline()  # event: ready
    await call_stream.content.readline()  # id: 1

    disabled = await keys_cli(platform.dsn, "disable", name, env=platform.env)
    started = time.monotonic()

    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.splitlines() == [
        f"API key '{name}' disabled",
        "Running API processes were told: the change holds at once.",
    ]
    closed = await ws.receive(timeout=1)
    assert (closed.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4401)
    async with asyncio.timeout(1):
        await key_stream.content.read()  # to its end
        await call_stream.content.read()
    assert key_stream.content.at_eof() and call_stream.content.at_eof()
    assert await get_metrics(http, platform, secret) == (
        401,
        {"error": "Unauthorized", "message": "API key is disabled"},
    )
    assert time.monotonic() - started < 1.0
    again = await keys_cli(platform.dsn, "disable", name, env=platform.env)
    assert again.stdout.strip() == f"API key '{name}' is already disabled"

    assert (await keys_cli(platform.dsn, "enable", name, env=platform.env)).returncode == 0
    assert (await get_metrics(http, platform, secret))[0] == 200


async def test_a_change_the_api_could_not_be_told_of_holds_within_the_cache_ttl(
    platform_factory: Callable[..., Awaitable[Platform]], http: aiohttp.ClientSession
) -> None:
    own = await platform_factory({"API_KEY_CACHE_TTL_MS": "100"})
    name = unique_name()
    secret = created_secret(await keys_cli(own.dsn, "create", name, env=own.env))
    assert (await get_metrics(http, own, secret))[0] == 200
    unreachable = own.env | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    disabled = await keys_cli(own.dsn, "disable", name, env=unreachable)

    assert disabled.returncode == 0, disabled.stderr
    lines = disabled.stdout.splitlines()
    assert lines[0] == f"API key '{name}' disabled"
    assert lines[1].startswith("Could not tell the running API processes (")
    assert lines[1].endswith(
        "they notice the change within their key cache TTL (API_KEY_CACHE_TTL_MS, 100 ms)."
    )
    await asyncio.sleep(0.15)
    assert (await get_metrics(http, own, secret))[0] == 401


async def test_key_limited_to_one_concurrent_call_gets_429_on_its_second(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    name = unique_name()
    secret = created_secret(await keys_cli(platform.dsn, "create", name))

    done = await keys_cli(
        platform.dsn, "set-limits", name, "--max-concurrent", "1", env=platform.env
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"API key '{name}': max concurrent calls 1 (was default), max cps default (was default),"
        " max active ingested calls default (was default)"
    )
    assert "were told" in done.stdout

    async def create_call(to: str) -> tuple[int, dict]:
        async with http.post(
            platform.base_url + "/calls",
            json={"from": "+14155550100", "to": to},
            headers={"Authorization": f"Bearer {secret}"},
        ) as response:
            return response.status, await response.json()

    # At once, so the first cannot have completed before the second asks.
    answers = sorted(
        await asyncio.gather(create_call("+14155550101"), create_call("+14155550102")),
        key=lambda a: a[0],
    )
    assert answers[0][0] == 201
    assert answers[1] == (
        429,
        {"error": "Rate limit exceeded", "message": "Maximum concurrent calls reached (1)"},
    )

    back = await keys_cli(
        platform.dsn, "set-limits", name, "--max-concurrent", "default", "--max-cps", "9"
    )
    assert back.stdout.splitlines()[0] == (
        f"API key '{name}': max concurrent calls default (was 1), max cps 9 (was default),"
        " max active ingested calls default (was default)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["disable", "nobody"], "no API key named 'nobody'"),
        (["enable", "nobody"], "no API key named 'nobody'"),
        (["set-limits", "nobody", "--max-cps", "2"], "no API key named 'nobody'"),
        (["create", "taken"], "an API key named 'taken' already exists"),
        (
            ["create", "new", "--max-concurrent", "0"],
            "--max-concurrent must be a positive integer or 'default', not '0'",
        ),
        (
            ["create", "new", "--max-cps", "-2"],
            "--max-cps must be a positive integer or 'default', not '-2'",
        ),
        (
            ["set-limits", "taken", "--max-cps", "lots"],
            "--max-cps must be a positive integer or 'default', not 'lots'",
        ),
        (
            ["set-limits", "taken"],
            "nothing to change: give one or more of --max-concurrent, --max-cps, --max-ingested",
        ),
        (["create", " "], "a key needs a name that is not blank"),
    ],
)
async def test_mistakes_exit_1_with_one_line_and_change_nothing(
    scratch_dsn: str, args: list[str], message: str
) -> None:
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await insert_key(conn, "taken", new_secret(), max_cps=3)
    finally:
        await conn.close()
    before = await stored_keys(scratch_dsn)

    done = await keys_cli(scratch_dsn, *args)

    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"mock-comms: {message}\n")
    assert await stored_keys(scratch_dsn) == before


@pytest.mark.parametrize("args", [["list"], ["create", "x"], ["disable", "x"]])
async def test_keys_without_postgresql_say_so_in_one_line(args: list[str]) -> None:
    started = time.monotonic()

    done = await keys_cli(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", *args)

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("mock-comms: cannot reach PostgreSQL (")
    assert len(done.stderr.splitlines()) == 1
    assert time.monotonic() - started < 10


async def test_keys_before_migrate_point_to_it() -> None:
    async with scratch_database(server_dsn(), migrated=False) as dsn:
        done = await keys_cli(dsn, "list")

    assert done.returncode == 1
    assert done.stderr == (
        'mock-comms: PostgreSQL refused `keys list`: relation "api_keys" does not exist '
        "(run `python -m db migrate` first)\n"
    )


SIGNING_SECRET = re.compile(r"whsec_[0-9a-f]{64}")


async def test_create_prints_the_signing_secret_once_beside_the_api_secret(
    scratch_dsn: str,
) -> None:
    done = await keys_cli(scratch_dsn, "create", "signing")

    created_secret(done)
    (signing,) = SIGNING_SECRET.findall(done.stdout)
    assert done.stdout.count(signing) == 1
    (row,) = await stored_keys(scratch_dsn)
    assert row["signing_secret"] == signing, "kept as it is: the platform signs with it"


async def test_rotate_signing_secret_prints_a_new_one_on_its_last_line(scratch_dsn: str) -> None:
    created = await keys_cli(scratch_dsn, "create", "rotating")
    (first,) = SIGNING_SECRET.findall(created.stdout)

    done = await keys_cli(scratch_dsn, "rotate-signing-secret", "rotating")

    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert SIGNING_SECRET.fullmatch(last) and last != first
    (row,) = await stored_keys(scratch_dsn)
    assert row["signing_secret"] == last


async def test_rotating_the_signing_secret_of_an_unknown_key_exits_1(scratch_dsn: str) -> None:
    done = await keys_cli(scratch_dsn, "rotate-signing-secret", "nobody")

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "mock-comms: no API key named 'nobody'\n"


async def test_seeded_keys_have_signing_secrets_of_their_own(scratch_dsn: str) -> None:
    env = os.environ | {"DATABASE_URL": scratch_dsn, "VALID_API_KEYS": "seed-one,seed-two"}
    seeded = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db", "seed-keys"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr

    rows = await stored_keys(scratch_dsn)

    secrets = {row["signing_secret"] for row in rows}
    assert len(rows) == len(secrets) == 2
    assert all(SIGNING_SECRET.fullmatch(secret) for secret in secrets)
    name = f"seeded-{hash_secret('seed-one').hex()[:12]}"
    done = await keys_cli(scratch_dsn, "rotate-signing-secret", name)
    assert SIGNING_SECRET.fullmatch(done.stdout.splitlines()[-1])


# -- keys by the name `keys list` shows, or by their secret; deleting a key --------------------------


async def test_a_seeded_key_is_named_by_its_listed_name_or_by_its_secret(scratch_dsn: str) -> None:
    env = os.environ | {"VALID_API_KEYS": "demo-key"}
    seeded = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "db", "seed-keys"],
        cwd=ROOT,
        env=env | {"DATABASE_URL": scratch_dsn},
        capture_output=True,
        text=True,
        check=True,
    )
    assert seeded.stdout.strip() == "api keys: 1 configured, 1 added: seeded-c48a01f49fd0 (demo…)"

    by_secret = await keys_cli(scratch_dsn, "set-limits", "demo-key", "--max-cps", "7")
    by_name = await keys_cli(scratch_dsn, "disable", "seeded-c48a01f49fd0")

    assert by_secret.returncode == 0, by_secret.stderr
    assert by_secret.stdout.startswith("API key 'seeded-c48a01f49fd0': max concurrent calls")
    assert "demo-key" not in by_secret.stdout  # the secret is never echoed back
    assert by_name.stdout.splitlines()[0] == "API key 'seeded-c48a01f49fd0' disabled"
    listed = (await keys_cli(scratch_dsn, "list")).stdout
    assert "seeded-c48a01f49fd0" in listed and " 7 " in listed


async def test_a_key_with_active_calls_is_deleted_only_with_force_then_with_all_it_had(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    name = unique_name()
    secret = created_secret(await keys_cli(platform.dsn, "create", name, "--max-cps", "50"))
    auth = {"Authorization": f"Bearer {secret}"}
    async with http.post(
        platform.base_url + "/events",
        headers=auth,
        json={"event": "call_initiated", "type": "voice", "queue_id": "q"},
    ) as response:
        active = (await response.json())["call_id"]
    refused = await keys_cli(platform.dsn, "delete", name, env=platform.env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"mock-comms: API key {name!r} has 1 active calls: end them first, or delete it with"
        " --force (which ends them as canceled)"
    )

    deleted = await keys_cli(platform.dsn, "delete", name, "--force", env=platform.env)

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines()[0] == (
        f"API key {name!r} deleted, 1 active calls ended as canceled: it is refused from now on,"
        " and the platform deletes its 1 calls with their history and recordings, then the key"
    )
    assert (await get_metrics(http, platform, secret))[0] == 401
    conn = await asyncpg.connect(platform.dsn)
    try:
        deadline = time.monotonic() + 10
        while await conn.fetchval(
            "SELECT count(*) FROM calls WHERE id::text = $1 OR ref = $1", active
        ) or await conn.fetchval("SELECT count(*) FROM api_keys WHERE name LIKE $1", name + "%"):
            assert time.monotonic() < deadline, "the key and its calls were never deleted"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    # Its name is free again.
    assert (await keys_cli(platform.dsn, "create", name)).returncode == 0
