"""API keys made for a test or a benchmark run, with the limits it needs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from db.keys import fetch_key_by_hash, fetch_signing_secret, hash_secret, insert_key


@dataclass(frozen=True, slots=True)
class Key:
    """A key's secret (what a client sends), its id (what its rows carry) and the secret its
    status callbacks are signed with."""

    secret: str
    id: str
    signing_secret: str


async def new_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    purpose: str,
    *,
    max_concurrent: int | None = None,
    max_cps: int | None = None,
    name_is_secret: bool = False,
) -> Key:
    """A fresh key (so that no two users share limits); None limits mean the platform's.
    `name_is_secret` names it after its secret, so that whoever holds only the secret (the
    integration tests) finds its row by name."""
    secret = f"{purpose}-{secrets.token_urlsafe(16)}"
    name = secret if name_is_secret else f"{purpose}-{secrets.token_hex(6)}"
    await insert_key(conn, name, secret, max_concurrent_calls=max_concurrent, max_cps=max_cps)  # type: ignore[arg-type]
    stored = await fetch_key_by_hash(conn, hash_secret(secret))
    assert stored is not None
    return Key(secret, stored.id, await fetch_signing_secret(conn, name))
