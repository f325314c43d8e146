"""Scratch databases on a PostgreSQL server: made (and migrated) for a test or a benchmark,
dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from db.migrate import migrate
from db.pool import with_database

# The server the benchmark and bench/lists.py use when DATABASE_URL is not set.
LOCAL_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scratch_name(prefix: str) -> str:
    """A database name no one else uses: `prefix` and 12 random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def server_dsn(default: str | None = None) -> str:
    """DATABASE_URL (scripts/test and scripts/run export it), else `default`."""
    dsn = os.environ.get("DATABASE_URL") or default
    if not dsn:
        raise RuntimeError("DATABASE_URL is not set: run the suite through scripts/test")
    return dsn


async def create_database(admin_dsn: str, name: str, *, migrated: bool = True) -> str:
    """Create `name` on the server of `admin_dsn` (and apply every migration); its DSN."""
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    if migrated:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    return dsn


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop `name`, ending its sessions first."""
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(
    admin_dsn: str, prefix: str = "mc_test", *, migrated: bool = True
) -> AsyncIterator[str]:
    """A database of its own for the block (migrated unless told otherwise); yields its DSN."""
    name = scratch_name(prefix)
    dsn = await create_database(admin_dsn, name, migrated=migrated)
    try:
        yield dsn
    finally:
        await drop_database(admin_dsn, name)
