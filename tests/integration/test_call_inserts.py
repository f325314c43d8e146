"""calls/inserts.py against the shared platform's PostgreSQL: concurrent new calls share
statements, and each still gets its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

import calls.inserts as inserts_module
from calls.inserts import CallInserts
from db.calls import NewCall
from db.pool import create_pool
from tests.integration.platform import Platform

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(platform: Platform) -> AsyncIterator[asyncpg.Pool]:
    opened = await create_pool(platform.dsn, min_size=1, max_size=8)
    yield opened
    await opened.close()


@pytest.fixture
async def key_id(pool: asyncpg.Pool) -> str:
    return str(await pool.fetchval("SELECT id FROM api_keys ORDER BY created_at LIMIT 1"))


class Visible:
    """Stands in for Transitions.after_commit: records what each batch made visible."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, rows: Sequence[Any]) -> None:
        self.batches.append([row["call_id"] for row in rows])


def new_call(key_id: str, **fields: Any) -> NewCall:
    return NewCall(
        **{
            "call_id": str(uuid.uuid4()),
            "key_id": key_id,
            "kind": "simulated",
            "from_number": "+14155550100",
            "to_number": "+14155550199",
            "metadata": {"test": "inserts"},
        }
        | fields
    )


async def test_concurrent_calls_share_statements_and_each_gets_its_row(
    pool, key_id, monkeypatch
) -> None:
    statements: list[int] = []
    real = inserts_module.insert_calls

    async def counted(conn: Any, new: Sequence[NewCall]) -> list[Any]:
        statements.append(len(new))
        return await real(conn, new)

    monkeypatch.setattr(inserts_module, "insert_calls", counted)
    visible = Visible()
    inserts = CallInserts(pool, visible)
    wanted = [new_call(key_id, metadata={"n": n}) for n in range(300)]
    rows = await asyncio.gather(*(inserts.submit(one) for one in wanted))

    assert [row["call_id"] for row in rows] == [one.call_id for one in wanted]
    assert [row["metadata"] for row in rows] == [{"n": n} for n in range(300)]
    assert {row["status"] for row in rows} == {"QUEUED"} and {row["seq"] for row in rows} == {1}
    assert all(row["outbox_id"] is not None and row["received_at"] for row in rows)
    assert sum(statements) == 300 and len(statements) <= 300 // 8, statements
    assert sorted(call for batch in visible.batches for call in batch) == sorted(
        one.call_id for one in wanted
    )
    ids = [one.call_id for one in wanted]
    first_events = await pool.fetchval(
        "SELECT count(*) FROM call_events WHERE call_id = ANY($1::uuid[]) AND seq = 1", ids
    )
    assert first_events == 300


async def test_a_call_id_or_idempotency_key_taken_in_the_same_batch_is_none(pool, key_id) -> None:
    inserts = CallInserts(pool, Visible())
    twice = new_call(key_id)
    once_more = new_call(key_id, call_id=twice.call_id, metadata={"second": True})
    retried = new_call(key_id, idempotency_key=f"k-{uuid.uuid4()}", request_hash=b"h")
    retried_again = new_call(key_id, idempotency_key=retried.idempotency_key, request_hash=b"h")
    rows = await asyncio.gather(
        *(inserts.submit(one) for one in (twice, once_more, retried, retried_again))
    )
    assert rows[0]["call_id"] == twice.call_id and rows[0]["metadata"] == {"test": "inserts"}
    assert rows[1] is None
    assert rows[2]["call_id"] == retried.call_id and rows[3] is None
    # A call id taken by an earlier batch, too.
    assert await inserts.submit(new_call(key_id, call_id=twice.call_id)) is None


async def test_a_call_that_breaks_a_constraint_fails_alone(pool, key_id) -> None:
    visible = Visible()
    inserts = CallInserts(pool, visible)
    good = [new_call(key_id) for _ in range(5)]
    orphan = new_call(str(uuid.uuid4()))  # no such key
    outcomes = await asyncio.gather(
        *(inserts.submit(one) for one in [*good[:2], orphan, *good[2:]]), return_exceptions=True
    )
    assert isinstance(outcomes[2], asyncpg.ForeignKeyViolationError)
    created = [row["call_id"] for row in outcomes if not isinstance(row, BaseException)]
    assert created == [one.call_id for one in good]
    assert sorted(call for batch in visible.batches for call in batch) == sorted(created)


async def test_postgresql_unreachable_fails_every_call_of_the_batch_at_once(
    platform, key_id
) -> None:
    closed = await create_pool(platform.dsn, min_size=1, max_size=2)
    await closed.close()
    attempts: list[int] = []
    real = inserts_module.insert_calls

    async def counted(conn: Any, new: Sequence[NewCall]) -> list[Any]:
        attempts.append(len(new))
        return await real(conn, new)

    inserts = CallInserts(closed, Visible())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inserts_module, "insert_calls", counted)
        outcomes = await asyncio.gather(
            *(inserts.submit(new_call(key_id)) for _ in range(20)), return_exceptions=True
        )
    assert all(isinstance(outcome, asyncpg.InterfaceError) for outcome in outcomes), outcomes
    assert sum(attempts) == 20, "not retried one by one"


async def test_a_caller_that_goes_away_does_not_stop_the_insert(pool, key_id) -> None:
    visible = Visible()
    inserts = CallInserts(pool, visible)
    one = new_call(key_id)
    waiting = asyncio.ensure_future(inserts.submit(one))
    waiting.cancel()
    await inserts.aclose()
    assert visible.batches == [[one.call_id]]
    assert await pool.fetchval("SELECT status FROM calls WHERE id = $1", one.call_id) == "QUEUED"
