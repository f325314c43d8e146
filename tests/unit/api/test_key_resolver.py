"""Who is calling, cheaply: a key is looked up once per cache lifetime, an unknown secret once a
second however often it is sent, and a flood of made-up secrets cannot push known keys out."""

from __future__ import annotations

import asyncio

import pytest

from api import auth
from api.auth import KeyResolver
from core.errors import Unauthorized
from db.keys import ApiKey, hash_secret

KNOWN = "known-secret"


class Postgres:
    """api_keys, counting the lookups that reach it."""

    def __init__(self) -> None:
        self.lookups = 0
        self.round_trip_s = 0.01
        self.keys = {hash_secret(KNOWN): ApiKey("key-1", "k", hash_secret(KNOWN), None, None, True)}

    async def fetch_key_by_hash(self, pool: object, digest: bytes) -> ApiKey | None:
        self.lookups += 1
        await asyncio.sleep(self.round_trip_s)  # during which others may ask the same
        return self.keys.get(digest)


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Postgres:
    fake = Postgres()
    monkeypatch.setattr(auth, "fetch_key_by_hash", fake.fetch_key_by_hash)
    return fake


async def test_a_burst_of_one_unknown_secret_costs_one_lookup(postgres: Postgres) -> None:
    resolver = KeyResolver(object(), ttl_ms=5_000)  # type: ignore[arg-type]

    results = await asyncio.gather(
        *(resolver.resolve("made-up") for _ in range(100)), return_exceptions=True
    )
    again = await asyncio.gather(
        *(resolver.resolve("made-up") for _ in range(100)), return_exceptions=True
    )

    assert all(isinstance(r, Unauthorized) for r in results + again)
    assert postgres.lookups == 1


async def test_an_unknown_secret_is_remembered_for_about_a_second(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000_000]
    monkeypatch.setattr(auth, "now_ms", lambda: clock[0])
    resolver = KeyResolver(object(), ttl_ms=5_000)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await resolver.resolve("made-up")
    assert postgres.lookups == 1

    clock[0] += auth.UNKNOWN_TTL_MS + 1  # a key made meanwhile works now
    postgres.keys[hash_secret("made-up")] = ApiKey(
        "key-2", "new", hash_secret("made-up"), None, None, True
    )
    assert (await resolver.resolve("made-up")).id == "key-2"


async def test_made_up_secrets_do_not_push_a_known_key_out(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "UNKNOWN_CACHE_SIZE", 50)
    postgres.round_trip_s = 0
    resolver = KeyResolver(object(), ttl_ms=60_000)  # type: ignore[arg-type]
    await resolver.resolve(KNOWN)

    for i in range(500):
        with pytest.raises(Unauthorized):
            await resolver.resolve(f"made-up-{i}")
    before = postgres.lookups
    await resolver.resolve(KNOWN)
    assert postgres.lookups == before

    # The unknown ones are bounded: the first of the flood was forgotten long ago.
    with pytest.raises(Unauthorized):
        await resolver.resolve("made-up-0")
    assert postgres.lookups == before + 1


async def test_a_changed_key_is_looked_up_again_at_once(postgres: Postgres) -> None:
    resolver = KeyResolver(object(), ttl_ms=60_000)  # type: ignore[arg-type]
    await resolver.resolve(KNOWN)
    postgres.keys[hash_secret(KNOWN)] = ApiKey(
        "key-1", "k", hash_secret(KNOWN), None, None, enabled=False
    )

    resolver.forget("key-1")

    with pytest.raises(Unauthorized, match="disabled"):
        await resolver.resolve(KNOWN)
