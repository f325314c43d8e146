"""Unit-test fixtures: an in-memory Redis with Lua, and settings untouched by the shell."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from core.settings import Settings


@pytest.fixture(autouse=True)
def settings_env_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every settings variable from the environment so defaults are the code's own."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def redis() -> AsyncIterator[FakeRedis]:
    """A Redis of the test's own (own server, so no state leaks between tests)."""
    client = FakeRedis(server=FakeServer())
    try:
        yield client
    finally:
        await client.aclose()
