"""`python -m db migrate | seed-keys | keys … | stats rebuild`: schema, default keys, API key
management and the queue statistics' rebuild from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import BadRequest, DomainError, NotFound
from core.keys import KEYS_CHANNEL
from core.settings import get_settings
from db.counters import fetch_stored_calls
from db.keys import (
    UNCHANGED,
    KeyInfo,
    Unchanged,
    delete_key,
    fetch_key_id,
    fetch_keys,
    fetch_signing_secret,
    insert_key,
    new_secret,
    rotate_signing_secret,
    seed_keys,
    update_key,
)
from db.migrate import migrate
from db.pool import connect
from db.stats import Measures, rebuild_stats

# The limits are PostgreSQL integers.
MAX_LIMIT = 2**31 - 1

Command = Callable[[asyncpg.Connection, argparse.Namespace], Awaitable[None]]


async def _migrate(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    applied = await migrate(conn)
    done = "migrations applied: " + ", ".join(applied) if applied else "schema is up to date"
    stored = await fetch_stored_calls(conn)
    # A database with calls in it is one someone used before: say so, and how much.
    print(done + (f"; the database holds {stored:,} calls" if stored else ""))


async def _seed_keys(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    configured = get_settings().valid_api_keys
    seeded = await seed_keys(conn, configured)
    added = sum(new for _, new in seeded)
    names = ", ".join(
        f"{name} ({secret[:4]}…)" for (name, _), secret in zip(seeded, configured, strict=True)
    )
    print(
        f"api keys: {len(configured)} configured, {added} added" + (f": {names}" if names else "")
    )


# -- keys ------------------------------------------------------------------------------------


def _limit(raw: str | None, option: str) -> int | Unchanged | None:
    """An option's limit: UNCHANGED when not given, None for `default`, else a positive int."""
    if raw is None:
        return UNCHANGED
    if raw == "default":
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"{option} must be a positive integer or 'default', not {raw!r}")
    if int(raw) > MAX_LIMIT:
        raise BadRequest(f"{option} must be at most {MAX_LIMIT}, not {raw}")
    return int(raw)


def _limit_text(value: int | None) -> str:
    return "default" if value is None else str(value)


# Each per-key limit: its column (KeyInfo field), option, and name in what is printed.
LIMITS = (
    ("max_concurrent_calls", "--max-concurrent", "max concurrent calls"),
    ("max_cps", "--max-cps", "max cps"),
    ("max_active_ingested_calls", "--max-ingested", "max active ingested calls"),
)


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _limits_text(key: KeyInfo) -> str:
    return ", ".join(f"{name}: {_limit_text(getattr(key, field))}" for field, _, name in LIMITS)


def _limits_given(args: argparse.Namespace) -> dict[str, int | Unchanged | None]:
    """The limits the options give, by KeyInfo field (UNCHANGED where not given)."""
    return {field: _limit(getattr(args, _dest(option)), option) for field, option, _ in LIMITS}


async def _announce(key_id: str, enabled: bool) -> str:
    """Tell the running API processes (Redis pub/sub): they forget what they knew of the key at
    once and, when it was disabled, close its open streams. Says what it did."""
    settings = get_settings()
    redis = Redis.from_url(settings.redis_dsn, socket_connect_timeout=2, socket_timeout=2)
    try:
        await redis.publish(
            KEYS_CHANNEL,
            orjson.dumps({"key_id": key_id, "enabled": enabled}),
        )
    except (RedisError, OSError) as exc:
        return (
            f"Could not tell the running API processes ({_one_line(exc)}): they notice the "
            f"change within their key cache TTL (API_KEY_CACHE_TTL_MS, "
            f"{settings.api_key_cache_ttl_ms} ms)."
        )
    finally:
        await redis.aclose()
    return "Running API processes were told: the change holds at once."


def _check_limits(args: argparse.Namespace) -> None:
    _limits_given(args)


def _check_create(args: argparse.Namespace) -> None:
    if not args.name.strip():
        raise BadRequest("a key needs a name that is not blank")
    _check_limits(args)


async def _keys_create(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    # Not given is the platform default for a new key.
    limits = {
        field: None if value is UNCHANGED else value for field, value in _limits_given(args).items()
    }
    secret = new_secret()
    async with conn.transaction():
        key = await insert_key(conn, args.name, secret, **limits)
        signing_secret = await fetch_signing_secret(conn, args.name)
    print(f"created API key {key.name!r} (prefix {key.key_prefix}, {_limits_text(key)})")
    print(f"its Account SID on the Twilio face (/2010-04-01/): {key.account_sid}")
    print()
    print(f"    {secret}")
    print()
    print("and the signing secret of its status callbacks (X-MockComms-Signature):")
    print()
    print(f"    {signing_secret}")
    print()
    print(
        "Copy both now: the API secret is shown only this once and cannot be shown again "
        "(only its hash is stored); the signing secret can be replaced with "
        f"`python -m db keys rotate-signing-secret {key.name}`."
    )


async def _keys_list(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    keys = await fetch_keys(conn)
    if not keys:
        print("no API keys: create one with `python -m db keys create NAME`")
        return
    rows = [
        [
            "NAME",
            "PREFIX",
            "ACCOUNT SID",
            "MAX CONCURRENT",
            "MAX CPS",
            "MAX INGESTED",
            "ENABLED",
            "CREATED AT",
        ]
    ]
    rows += [
        [
            key.name,
            key.key_prefix,
            key.account_sid,
            _limit_text(key.max_concurrent_calls),
            _limit_text(key.max_cps),
            _limit_text(key.max_active_ingested_calls),
            "yes" if key.enabled else "no",
            key.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        ]
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


async def _keys_switch(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    enabled = args.keys_command == "enable"
    change = await update_key(conn, args.name, enabled=enabled)
    state = "enabled" if enabled else "disabled"
    if change.before.enabled == enabled:
        print(f"API key {change.after.name!r} is already {state}")
        return
    print(f"API key {change.after.name!r} {state}")
    print(await _announce(change.key_id, enabled))


async def _keys_delete(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    deleted = await delete_key(conn, args.name, force=args.force)
    ended = f", {deleted.ended} active calls ended as canceled" if deleted.ended else ""
    print(
        f"API key {deleted.name!r} deleted{ended}: it is refused from now on, and the platform"
        f" deletes its {deleted.stored:,} calls with their history and recordings, then the key"
    )
    print(await _announce(deleted.key_id, enabled=False))


def _check_set_limits(args: argparse.Namespace) -> None:
    if all(getattr(args, _dest(option)) is None for _, option, _ in LIMITS):
        options = ", ".join(option for _, option, _ in LIMITS)
        raise BadRequest(f"nothing to change: give one or more of {options}")
    _check_limits(args)


async def _keys_set_limits(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    change = await update_key(conn, args.name, **_limits_given(args))
    before, after = change.before, change.after
    changes = ", ".join(
        f"{name} {_limit_text(getattr(after, field))} (was {_limit_text(getattr(before, field))})"
        for field, _, name in LIMITS
    )
    print(f"API key {after.name!r}: {changes}")
    print(await _announce(change.key_id, after.enabled))


async def _keys_rotate_signing_secret(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    secret = await rotate_signing_secret(conn, args.name)
    print(
        f"API key {args.name!r} has a new signing secret: its status callbacks are signed with it"
        " from their next attempt on, and no longer with the old one."
    )
    print(secret)


# -- queue statistics ------------------------------------------------------------------------


async def _stats_rebuild(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    key_id = None
    if args.key is not None:
        key_id = await fetch_key_id(conn, args.key)
        if key_id is None:
            raise NotFound(f"no API key named {args.key!r}")
    counted = await rebuild_stats(conn, Measures.of(get_settings()), key_id)
    whose = "every key's" if key_id is None else f"API key {args.key!r}'s"
    print(f"queue statistics: {whose} rebuilt from {counted} calls in queues")


# -- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m db", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser("migrate", help="apply the SQL migrations not yet applied").set_defaults(
        run=_migrate
    )
    commands.add_parser(
        "seed-keys", help="make sure every secret of VALID_API_KEYS is a key"
    ).set_defaults(run=_seed_keys)

    keys = commands.add_parser(
        "keys",
        help="create, list, enable, disable, delete keys, set limits, rotate signing secrets"
        " (NAME: a key's name as `keys list` shows it, or its secret)",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="action")
    limit_help = "a positive integer, or 'default' for the platform default"

    create = actions.add_parser("create", help="make a key; its secret is shown once")
    create.add_argument("name")
    for _, option, _ in LIMITS:
        create.add_argument(option, metavar="N", help=limit_help)
    create.set_defaults(run=_keys_create, check=_check_create)

    actions.add_parser("list", help="every key, its prefix, limits and state").set_defaults(
        run=_keys_list
    )
    for action, verb in (("enable", "accept"), ("disable", "refuse (401)")):
        switch = actions.add_parser(action, help=f"{verb} requests with a key")
        switch.add_argument("name")
        switch.set_defaults(run=_keys_switch)

    set_limits = actions.add_parser("set-limits", help="change a key's limits")
    set_limits.add_argument("name")
    for _, option, _ in LIMITS:
        set_limits.add_argument(option, metavar="N|default", help=limit_help)
    set_limits.set_defaults(run=_keys_set_limits, check=_check_set_limits)

    delete = actions.add_parser(
        "delete", help="delete a key, and (by the platform, in the background) its calls"
    )
    delete.add_argument("name")
    delete.add_argument(
        "--force", action="store_true", help="end its active calls (as canceled) first"
    )
    delete.set_defaults(run=_keys_delete)

    rotate = actions.add_parser(
        "rotate-signing-secret",
        help="give a key a new signing secret for its status callbacks (printed last)",
    )
    rotate.add_argument("name")
    rotate.set_defaults(run=_keys_rotate_signing_secret)

    stats = commands.add_parser("stats", help="the queue statistics")
    stats_actions = stats.add_subparsers(dest="stats_command", required=True, metavar="action")
    rebuild = stats_actions.add_parser(
        "rebuild",
        help="count them again from the calls (after SERVICE_LEVEL_S or SHORT_ABANDON_S change)",
    )
    rebuild.add_argument("--key", metavar="NAME", help="only this key's (default: every key's)")
    rebuild.set_defaults(run=_stats_rebuild)
    return parser


async def _run(command: Command, args: argparse.Namespace) -> None:
    conn = await connect(get_settings().dsn)
    try:
        await command(conn, args)
    finally:
        await conn.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    label = " ".join(
        part
        for part in (
            args.command,
            getattr(args, "keys_command", None),
            getattr(args, "stats_command", None),
        )
        if part
    )
    try:
        # Mistakes in the arguments are reported before PostgreSQL is asked anything.
        if check := getattr(args, "check", None):
            check(args)
        asyncio.run(_run(args.run, args))
    except DomainError as exc:
        print(f"mock-comms: {exc.message}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:
        print(f"mock-comms: cannot reach PostgreSQL ({_one_line(exc)})", file=sys.stderr)
        return 1
    except asyncpg.UndefinedTableError as exc:
        print(
            f"mock-comms: PostgreSQL refused `{label}`: {_one_line(exc)} "
            "(run `python -m db migrate` first)",
            file=sys.stderr,
        )
        return 1
    except asyncpg.PostgresError as exc:
        print(f"mock-comms: PostgreSQL refused `{label}`: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
