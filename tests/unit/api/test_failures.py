"""What an exception tells the client: a store's outage says which store, a timeout says so."""

from __future__ import annotations

from types import SimpleNamespace

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.middlewares import _failure

REQUEST = SimpleNamespace(method="GET", path="/calls")


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (TimeoutError(), "A store did not answer in time; try again shortly"),
        (asyncpg.CannotConnectNowError(), "PostgreSQL is unavailable; try again shortly"),
        (ConnectionRefusedError(), "PostgreSQL is unavailable; try again shortly"),
        (RedisConnectionError(), "Redis is unavailable; try again shortly"),
    ],
    ids=["timeout", "postgres-starting", "refused", "redis"],
)
def test_a_store_outage_is_a_503_naming_what_went_wrong(exc: Exception, message: str) -> None:
    failure = _failure(REQUEST, exc)  # type: ignore[arg-type]

    assert (failure.status, failure.message) == (503, message)
    assert failure.headers == {"Retry-After": "1"}
