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
from core.sids import account_sid


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
    # Whether its Auth Token is kept for signing the Twilio face's callbacks (keep_auth_token).
    auth_token_kept: bool = False
    created_at: datetime | None = None

    @property
    def account_sid(self) -> str:
        return account_sid(self.id)


_KEY_COLUMNS = """
    id::text, name, key_hash, max_concurrent_calls, max_cps, enabled, max_active_ingested_calls,
    auth_token IS NOT NULL AS auth_token_kept, created_at
"""


async def fetch_key_by_hash(
    conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND deleted_at IS NULL",
        key_hash,
    )
    return ApiKey(**dict(row)) if row else None


async def fetch_key_by_id(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1::uuid AND deleted_at IS NULL",
        key_id,
    )
    return ApiKey(**dict(row)) if row else None


async def keep_auth_token(
    conn: asyncpg.Connection | asyncpg.Pool, key: ApiKey, secret: str
) -> None:
    """Keep the key's secret, its Auth Token, to sign the status callbacks of the calls it
    creates through the Twilio face (Twilio signs with the token itself); only if `secret` is
    the key's, and once."""
    await conn.execute(
        """
        UPDATE api_keys SET auth_token = $2
         WHERE id = $1::uuid AND key_hash = $3 AND auth_token IS DISTINCT FROM $2
        """,
        key.id,
        secret,
        hash_secret(secret),
    )


def seeded_name(secret: str) -> str:
    """The name `seed-keys` gives the key of `secret` (the secret itself is never a name)."""
    return f"seeded-{hash_secret(secret).hex()[:12]}"


async def seed_keys(conn: asyncpg.Connection, secrets: list[str]) -> list[tuple[str, bool]]:
    """Make sure each secret is a key (named after its hash): (its key's name, whether it was
    added now) for each."""
    seeded = []
    for secret in secrets:
        name = await conn.fetchval(
            """
            WITH added AS (
                INSERT INTO api_keys (name, key_hash, key_prefix)
                VALUES ($1, $2, $3)
                ON CONFLICT (key_hash) DO NOTHING
             RETURNING name
            )
            SELECT name FROM added
            """,
            seeded_name(secret),
            hash_secret(secret),
            secret[:4],
        )
        if name is not None:
            seeded.append((name, True))
        else:
            existing = await conn.fetchval(
                "SELECT name FROM api_keys WHERE key_hash = $1", hash_secret(secret)
            )
            seeded.append((existing, False))
    return seeded


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
    # Its id (not secret: its Account SID is made of it).
    key_id: str = ""

    @property
    def account_sid(self) -> str:
        """Its Account SID on the Twilio face."""
        return account_sid(self.key_id)


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
    " max_active_ingested_calls, id::text AS key_id"
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


# A key's signing secret starts with this (its column's default makes it, 0007_integrators.sql).
SIGNING_SECRET_PREFIX = "whsec_"


async def fetch_signing_secret(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> str:
    """The signing secret of the key named `name`; raises NotFound for an unknown name."""
    secret = await conn.fetchval("SELECT signing_secret FROM api_keys WHERE name = $1", name)
    if secret is None:
        raise NotFound(f"no API key named {name!r}")
    return secret


async def rotate_signing_secret(conn: asyncpg.Connection, name: str) -> str:
    """Give the key named `name` a new signing secret (the old one signs nothing more) and
    return it; raises NotFound for an unknown name."""
    secret = await conn.fetchval(
        "UPDATE api_keys SET signing_secret = DEFAULT WHERE name = $1 RETURNING signing_secret",
        name,
    )
    if secret is None:
        raise NotFound(f"no API key named {name!r}")
    return secret


async def fetch_keys(conn: asyncpg.Connection) -> list[KeyInfo]:
    rows = await conn.fetch(
        f"""
        SELECT {_INFO_COLUMNS} FROM api_keys WHERE deleted_at IS NULL ORDER BY created_at, name
        """
    )
    return [KeyInfo(**dict(row)) for row in rows]


async def _locked_key(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    """The key named `name` (or whose secret `name` is: an operator may type the secret of a
    seeded key), locked for the transaction; NotFound otherwise."""
    row = await conn.fetchrow(
        f"""
        SELECT id::text, {_INFO_COLUMNS} FROM api_keys
         WHERE (name = $1 OR key_hash = $2) AND deleted_at IS NULL
         ORDER BY name = $1 DESC
         LIMIT 1
           FOR UPDATE
        """,
        name,
        hash_secret(name),
    )
    if row is None:
        raise NotFound(f"no API key named {name!r}")
    return row


def _info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(**{k: v for k, v in dict(row).items() if k != "id"})


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
        row = await _locked_key(conn, name)
        key_id = row["id"]
        before = _info(row)
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
             WHERE id = $1
            """,
            key_id,
            after.enabled,
            after.max_concurrent_calls,
            after.max_cps,
            after.max_active_ingested_calls,
        )
    return KeyChange(key_id=key_id, before=before, after=after)


@dataclass(frozen=True, slots=True)
class DeletedKey:
    key_id: str
    name: str
    # Calls the key had, ended now by a forced delete, and stored (for the purge to delete).
    ended: int
    stored: int


async def delete_key(conn: asyncpg.Connection, name: str, *, force: bool) -> DeletedKey:
    """Delete a key: refused from now on (its secret no longer names it, its name is free), and
    its calls left to the purge (calls/retention.py), which deletes the key's row once none is
    left. Raises Conflict while it has active calls, unless `force` ends them first (as
    canceled, without a transition: nobody is left to be told)."""
    async with conn.transaction():
        row = await _locked_key(conn, name)
        key_id = row["id"]
        active = await conn.fetchval(
            "SELECT count(*) FROM calls WHERE api_key_id = $1 AND status <> 'COMPLETED'", key_id
        )
        if active and not force:
            raise Conflict(
                f"API key {row['name']!r} has {active} active calls: end them first, or delete"
                " it with --force (which ends them as canceled)"
            )
        ended = 0
        if active:
            ended = await conn.fetchval(
                """
                WITH ended AS (
                    UPDATE calls
                       SET status = 'COMPLETED', end_reason = 'canceled',
                           ended_at = clock_timestamp(), status_changed_at = clock_timestamp(),
                           updated_at = clock_timestamp()
                     WHERE api_key_id = $1 AND status <> 'COMPLETED'
                 RETURNING id
                ), counted AS (
                    INSERT INTO counter_deltas (api_key_id, calls_completed)
                    SELECT $1, count(*) FROM ended
                )
                SELECT count(*) FROM ended
                """,
                key_id,
            )
        await conn.execute(
            """
            UPDATE api_keys
               SET deleted_at = clock_timestamp(), enabled = false,
                   name = name || ' (deleted ' || id || ')',
                   key_hash = sha256(gen_random_uuid()::text::bytea), auth_token = NULL
             WHERE id = $1
            """,
            key_id,
        )
        stored = await conn.fetchval("SELECT count(*) FROM calls WHERE api_key_id = $1", key_id)
    return DeletedKey(key_id, row["name"], ended, stored)


async def fetch_key_id(conn: asyncpg.Connection, name: str) -> str | None:
    """The id of the key named `name`, if there is one."""
    return await conn.fetchval("SELECT id::text FROM api_keys WHERE name = $1", name)
