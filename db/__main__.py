"""`python -m db migrate | seed-keys`: schema and default keys from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from core.settings import get_settings
from db.keys import seed_keys
from db.migrate import migrate
from db.pool import connect


async def _migrate() -> None:
    conn = await connect(get_settings().dsn)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print("migrations applied: " + ", ".join(applied) if applied else "schema is up to date")


async def _seed_keys() -> None:
    settings = get_settings()
    conn = await connect(settings.dsn)
    try:
        added = await seed_keys(conn, settings.valid_api_keys)
    finally:
        await conn.close()
    print(f"api keys: {len(settings.valid_api_keys)} configured, {added} added")


COMMANDS = {"migrate": _migrate, "seed-keys": _seed_keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    try:
        asyncio.run(COMMANDS[args.command]())
    except (TimeoutError, OSError) as exc:
        print(f"mock-comms: cannot reach PostgreSQL ({exc})", file=sys.stderr)
        return 1
    except asyncpg.PostgresError as exc:
        print(f"mock-comms: PostgreSQL refused `{args.command}`: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
