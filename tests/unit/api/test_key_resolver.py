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
KEY_ID = "7d1c9a60-5b2e-4c0f-8f3a-2e6b9d4a1c77"
CALL = "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01"
NOW_S = 1_800_000_000


class Postgres:
    """api_keys, counting the lookups that reach it."""

    def __init__(self) -> None:
        self.lookups = 0
        self.round_trip_s = 0.01
        self.keys = {hash_secret(KNOWN): ApiKey(KEY_ID, "k", hash_secret(KNOWN), None, None, True)}

    async def fetch_key_by_hash(self, pool: object, digest: bytes) -> ApiKey | None:
        self.lookups += 1
        await asyncio.sleep(self.round_trip_s)  # during which others may ask the same
        return self.keys.get(digest)

    async def fetch_key_by_id(self, pool: object, key_id: str) -> ApiKey | None:
        self.lookups += 1
        return next((key for key in self.keys.values() if key.id == key_id), None)


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Postgres:
    fake = Postgres()
    monkeypatch.setattr(auth, "fetch_key_by_hash", fake.fetch_key_by_hash)
    monkeypatch.setattr(auth, "fetch_key_by_id", fake.fetch_key_by_id)
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
        KEY_ID, "k", hash_secret(KNOWN), None, None, enabled=False
    )

    resolver.forget(KEY_ID)

    with pytest.raises(Unauthorized, match="disabled"):
        await resolver.resolve(KNOWN)


# -- stream tokens (a created call's stream_url and websocket_url) -----------------------------


@pytest.fixture
def at_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "now_ms", lambda: NOW_S * 1000)


def token(ref: str = CALL, expires_s: int = NOW_S + 3_600, secret: str = KNOWN) -> str:
    key = ApiKey(KEY_ID, "k", hash_secret(secret), None, None, True)
    return auth.stream_token(key, ref, expires_s)


async def test_a_stream_token_opens_its_calls_streams_as_its_key(
    postgres: Postgres, at_now: None
) -> None:
    resolver = KeyResolver(object(), ttl_ms=5_000)  # type: ignore[arg-type]

    key = await resolver.resolve_stream_token(token(), CALL)

    assert key.id == KEY_ID
    assert KNOWN not in token()


@pytest.mark.parametrize(
    ("presented", "ref", "message"),
    [
        (token(ref="another-call"), CALL, "only the streams of its own call"),
        (token(secret="another-key"), CALL, "only the streams of its own call"),
        (token()[:-2] + "AA", CALL, "only the streams of its own call"),
        (token().rsplit(".", 1)[0] + ".", CALL, "Invalid stream token"),
        (token(expires_s=NOW_S), CALL, "Stream token expired at 2027-01-15T08:00:00.000Z"),
        ("not-a-token", CALL, "Invalid stream token"),
        ("7d1c9a605b2e4c0f8f3a2e6b9d4a1c77.-5.x", CALL, "Invalid stream token"),
        (f"{'0' * 32}.{NOW_S + 60}.AAAAAAAAAAAAAAAAAAAAAA", CALL, "only the streams"),
    ],
    ids=[
        "another-call",
        "signed-by-another-key",
        "tampered",
        "no-signature",
        "expired",
        "not-a-token",
        "negative-expiry",
        "unknown-key",
    ],
)
async def test_a_stream_token_for_anything_else_is_401(
    postgres: Postgres, at_now: None, presented: str, ref: str, message: str
) -> None:
    resolver = KeyResolver(object(), ttl_ms=5_000)  # type: ignore[arg-type]

    with pytest.raises(Unauthorized, match=message):
        await resolver.resolve_stream_token(presented, ref)


async def test_a_stream_token_dies_with_its_key(postgres: Postgres, at_now: None) -> None:
    resolver = KeyResolver(object(), ttl_ms=60_000)  # type: ignore[arg-type]
    await resolver.resolve_stream_token(token(), CALL)

    postgres.keys.clear()  # deleted (python -m db keys delete)
    resolver.forget(KEY_ID)

    with pytest.raises(Unauthorized):
        await resolver.resolve_stream_token(token(), CALL)


async def test_a_disabled_keys_stream_token_is_401(postgres: Postgres, at_now: None) -> None:
    resolver = KeyResolver(object(), ttl_ms=60_000)  # type: ignore[arg-type]
    postgres.keys[hash_secret(KNOWN)] = ApiKey(
        KEY_ID, "k", hash_secret(KNOWN), None, None, enabled=False
    )

    with pytest.raises(Unauthorized, match="disabled"):
        await resolver.resolve_stream_token(token(), CALL)
