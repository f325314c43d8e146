"""API keys: stored as SHA-256 hashes with their per-key limits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from secrets import token_urlsafe
from typing import Final

import asyncpg

from core.errors import Conflict, NotFound


def hash_secret(secret: str) -> bytes:
    # Header bytes that are not UTF-8 reach us surrogate-escaped; hash them as they came.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    key_hash: bytes
    # None: the platform default applies.
    max_concurrent_calls: int | None
    max_cps: int | None
    enabled: bool
    max_active_ingested_calls: int | None = None


async def fetch_key_by_hash(
    conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> ApiKey | None:
    row = await conn.fetchrow(
        """
        SELECT id::text, name, key_hash, max_concurrent_calls, max_cps, enabled,
               max_active_ingested_calls
          FROM api_keys WHERE key_hash = $1
        """,
        key_hash,
    )
    return ApiKey(**dict(row)) if row else None


async def seed_keys(conn: asyncpg.Connection, secrets: list[str]) -> int:
    """Make sure each secret is a key (named after its hash); returns how many were added."""
    added = 0
    for secret in secrets:
        digest = hash_secret(secret)
        status = await conn.execute(
            """
            INSERT INTO api_keys (name, key_hash, key_prefix)
            VALUES ($1, $2, $3)
            ON CONFLICT (key_hash) DO NOTHING
            """,
            f"seeded-{digest.hex()[:12]}",
            digest,
            secret[:4],
        )
        added += status.endswith(" 1")
    return added


# --- managing keys (`python -m db keys …`) ---------------------------------------------------

# Every generated secret starts with this, so a leaked one is recognisable in logs and scans.
SECRET_PREFIX = "mc_"
# How much of a secret is kept in clear to tell keys apart: the marker and 5 random characters.
KEY_PREFIX_LEN = len(SECRET_PREFIX) + 5


def new_secret() -> str:
    """A random secret (256 bits) with the recognisable prefix."""
    return SECRET_PREFIX + token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What an operator may see of a key: never its secret nor its hash."""

    name: str
    key_prefix: str
    # None: the platform default applies.
    max_concurrent_calls: int | None
    max_cps: int | None
    enabled: bool
    created_at: datetime
    max_active_ingested_calls: int | None = None


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A key before and after an update."""

    key_id: str
    before: KeyInfo
    after: KeyInfo


class Unchanged(Enum):
    """Leave a field as it is (None already means "the platform default" for a limit)."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED

_INFO_COLUMNS = (
    "name, key_prefix, max_concurrent_calls, max_cps, enabled, created_at,"
    " max_active_ingested_calls"
)


async def insert_key(
    conn: asyncpg.Connection,
    name: str,
    secret: str,
    *,
    max_concurrent_calls: int | None = None,
    max_cps: int | None = None,
    max_active_ingested_calls: int | None = None,
) -> KeyInfo:
    """Store a new key (only the secret's hash); raises Conflict when `name` is taken."""
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO api_keys (name, key_hash, key_prefix, max_concurrent_calls, max_cps,
                                  max_active_ingested_calls)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING {_INFO_COLUMNS}
            """,
            name,
            hash_secret(secret),
            secret[:KEY_PREFIX_LEN],
            max_concurrent_calls,
            max_cps,
            max_active_ingested_calls,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "api_keys_name_key":
            raise Conflict(f"an API key named {name!r} already exists") from exc
        raise
    return KeyInfo(**dict(row))


async def fetch_keys(conn: asyncpg.Connection) -> list[KeyInfo]:
    rows = await conn.fetch(f"SELECT {_INFO_COLUMNS} FROM api_keys ORDER BY created_at, name")
    return [KeyInfo(**dict(row)) for row in rows]


async def update_key(
    conn: asyncpg.Connection,
    name: str,
    *,
    enabled: bool | Unchanged = UNCHANGED,
    max_concurrent_calls: int | Unchanged | None = UNCHANGED,
    max_cps: int | Unchanged | None = UNCHANGED,
    max_active_ingested_calls: int | Unchanged | None = UNCHANGED,
) -> KeyChange:
    """Switch a key on or off or change its limits; raises NotFound for an unknown name."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT id::text, {_INFO_COLUMNS} FROM api_keys WHERE name = $1 FOR UPDATE", name
        )
        if row is None:
            raise NotFound(f"no API key named {name!r}")
        key_id, *_ = row
        before = KeyInfo(**{k: v for k, v in dict(row).items() if k != "id"})
        changes = {
            field: value
            for field, value in (
                ("enabled", enabled),
                ("max_concurrent_calls", max_concurrent_calls),
                ("max_cps", max_cps),
                ("max_active_ingested_calls", max_active_ingested_calls),
            )
            if value is not UNCHANGED
        }
        after = replace(before, **changes)
        await conn.execute(
            """
            UPDATE api_keys SET enabled = $2, max_concurrent_calls = $3, max_cps = $4,
                                max_active_ingested_calls = $5
             WHERE name = $1
            """,
            name,
            after.enabled,
            after.max_concurrent_calls,
            after.max_cps,
            after.max_active_ingested_calls,
        )
    return KeyChange(key_id=key_id, before=before, after=after)


async def fetch_key_id(conn: asyncpg.Connection, name: str) -> str | None:
    """The id of the key named `name`, if there is one."""
    return await conn.fetchval("SELECT id::text FROM api_keys WHERE name = $1", name)
