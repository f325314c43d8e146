"""API keys: stored as SHA-256 hashes with their per-key limits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    key_hash: bytes
    # None: the platform default applies.
    max_concurrent_calls: int | None
    max_cps: int | None
    enabled: bool


async def fetch_key_by_hash(
    conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> ApiKey | None:
    row = await conn.fetchrow(
        """
        SELECT id::text, name, key_hash, max_concurrent_calls, max_cps, enabled
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
