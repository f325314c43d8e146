"""calls/batches.py with the writers it serves (Transitions.insert and write_decided) against
the shared platform's PostgreSQL and Redis: concurrent writes share statements, each still gets
its own outcome, and what is committed is made visible."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from calls.batches import Batcher
from calls.live import LiveState
from calls.stores import Pools, Stores
from calls.transitions import Reported, Transitions
from core.call_ids import CallRef
from core.lifecycle import Event
from core.settings import Settings
from db import calls as db_calls
from db.calls import NewCall
from tests.integration.platform import Platform

pytestmark = pytest.mark.integration


@pytest.fixture
async def stores(platform: Platform) -> AsyncIterator[Stores]:
    settings = Settings(_env_file=None, database_url=platform.dsn, redis_url=platform.redis_url)
    opened = await Stores.open(settings, Pools("test", 8))
    yield opened
    await opened.close()


@pytest.fixture
async def key_id(stores: Stores) -> str:
    return str(await stores.pool.fetchval("SELECT id FROM api_keys ORDER BY created_at LIMIT 1"))


def counted(write: Callable[[list[Any]], Awaitable[list[Any]]], sizes: list[int]) -> Any:
    async def counting(items: list[Any]) -> list[Any]:
        sizes.append(len(items))
        return await write(items)

    return counting


def new_call(key_id: str, **fields: Any) -> NewCall:
    return NewCall(
        **{
            "call_id": str(uuid.uuid4()),
            "key_id": key_id,
            "kind": "simulated",
            "from_number": "+14155550100",
            "to_number": "+14155550199",
            "metadata": {"test": "batches"},
        }
        | fields
    )


async def test_concurrent_new_calls_share_statements_each_gets_its_row_and_is_visible(
    stores, key_id
) -> None:
    statements: list[int] = []
    inserts = Batcher(counted(Transitions(stores).insert, statements))
    wanted = [new_call(key_id, metadata={"n": n}) for n in range(300)]
    rows = await asyncio.gather(*(inserts.submit(one) for one in wanted))

    assert [row["call_id"] for row in rows] == [one.call_id for one in wanted]
    assert [row["metadata"] for row in rows] == [{"n": n} for n in range(300)]
    assert {row["status"] for row in rows} == {"QUEUED"} and {row["seq"] for row in rows} == {1}
    assert sum(statements) == 300 and len(statements) <= 300 // 8, statements
    ids = [one.call_id for one in wanted]
    first_events = await stores.pool.fetchval(
        "SELECT count(*) FROM call_events WHERE call_id = ANY($1::uuid[]) AND seq = 1", ids
    )
    assert first_events == 300
    # Made visible before the futures resolved: every live view is there already.
    live = LiveState(stores.mux)
    views = await asyncio.gather(*(live.read(call_id) for call_id in ids))
    assert [view["status"] if view else None for view in views] == ["QUEUED"] * 300


async def test_a_call_id_or_idempotency_key_taken_in_the_same_batch_is_none(stores, key_id) -> None:
    inserts = Batcher(Transitions(stores).insert)
    twice = new_call(key_id)
    once_more = new_call(key_id, call_id=twice.call_id, metadata={"second": True})
    retried = new_call(key_id, idempotency_key=f"k-{uuid.uuid4()}", request_hash=b"h")
    retried_again = new_call(key_id, idempotency_key=retried.idempotency_key, request_hash=b"h")
    rows = await asyncio.gather(
        *(inserts.submit(one) for one in (twice, once_more, retried, retried_again))
    )
    # The first of each pair is the one inserted, whatever order PostgreSQL inserts in.
    assert rows[0]["call_id"] == twice.call_id and rows[0]["metadata"] == {"test": "batches"}
    assert rows[1] is None
    assert rows[2]["call_id"] == retried.call_id and rows[3] is None
    # A call id taken by an earlier statement, too.
    assert await inserts.submit(new_call(key_id, call_id=twice.call_id)) is None


async def test_a_write_that_breaks_a_constraint_fails_alone(stores, key_id) -> None:
    statements: list[int] = []
    inserts = Batcher(counted(Transitions(stores).insert, statements))
    good = [new_call(key_id) for _ in range(5)]
    orphan = new_call(str(uuid.uuid4()))  # no such key
    outcomes = await asyncio.gather(
        *(inserts.submit(one) for one in [*good[:2], orphan, *good[2:]]), return_exceptions=True
    )
    assert isinstance(outcomes[2], asyncpg.ForeignKeyViolationError)
    created = [row["call_id"] for row in outcomes if not isinstance(row, BaseException)]
    assert created == [one.call_id for one in good]
    assert statements[0] == 6 and statements[1:] == [1] * 6, "the batch, then one by one"


async def test_postgresql_unreachable_fails_every_write_of_the_batch_at_once(
    stores, key_id
) -> None:
    await stores.pool.close()
    statements: list[int] = []
    inserts = Batcher(counted(Transitions(stores).insert, statements))
    outcomes = await asyncio.gather(
        *(inserts.submit(new_call(key_id)) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(outcome, asyncpg.InterfaceError) for outcome in outcomes), outcomes
    assert sum(statements) == 20, "not retried one by one"


async def test_a_caller_that_goes_away_does_not_stop_the_write(stores, key_id) -> None:
    inserts = Batcher(Transitions(stores).insert)
    one = new_call(key_id)
    waiting = inserts.submit(one)
    waiting.cancel()
    await inserts.aclose()
    status = await stores.pool.fetchval("SELECT status FROM calls WHERE id = $1", one.call_id)
    assert status == "QUEUED"
    assert (await LiveState(stores.mux).read(one.call_id))["status"] == "QUEUED"


async def test_events_for_many_calls_share_a_statement_and_two_for_one_call_meet_the_cas(
    stores, key_id
) -> None:
    transitions = Transitions(stores)
    created = await transitions.insert(
        [new_call(key_id, kind="ingested", queue_id="q") for _ in range(50)]
    )
    calls = {row["call_id"]: row for row in created}
    now = datetime.now(UTC)

    def routed(call: Any, event_id: str) -> Any:
        return transitions.decide_event(
            call, Event.CALL_ROUTED, occurred_at=now, reported=Reported(), event_id=event_id
        )

    statements: list[int] = []
    writes = Batcher(counted(transitions.write_decided, statements))
    first = next(iter(calls.values()))
    decided = [routed(call, "a") for call in calls.values()] + [routed(first, "b")]
    rows = await asyncio.gather(*(writes.submit(one) for one in decided))

    assert [row["status"] if row else None for row in rows] == ["RINGING"] * 50 + [None]
    assert {row["event_id"] for row in rows[:50]} == {"a"}
    assert len(statements) < 10, statements
    seqs = await stores.pool.fetch("SELECT seq FROM calls WHERE id = ANY($1::uuid[])", list(calls))
    assert {row["seq"] for row in seqs} == {2}


async def test_events_calls_are_read_together_each_answer_in_its_place(stores, key_id) -> None:
    transitions = Transitions(stores)
    (mine, other) = await transitions.insert(
        [new_call(key_id, kind="ingested", event_id="first"), new_call(key_id, kind="ingested")]
    )
    missing = str(uuid.uuid4())
    reads = [
        db_calls.EventRead(CallRef(key_id, mine["call_id"]), "first"),  # earlier copy: seq 1
        db_calls.EventRead(CallRef(key_id, missing), None),
        db_calls.EventRead(CallRef(str(uuid.uuid4()), other["call_id"]), None),  # not theirs
        db_calls.EventRead(CallRef(key_id, mine["call_id"]), "new"),
        db_calls.EventRead(CallRef(key_id, mine["call_id"]), None),
    ]
    statements: list[int] = []
    read = Batcher(
        counted(lambda asked: db_calls.fetch_calls_for_events(stores.pool, asked), statements)
    )
    answers = await asyncio.gather(*(read.submit(one) for one in reads))

    assert [(call["call_id"] if call else None, seq) for call, seq in answers] == [
        (mine["call_id"], 1),
        (None, None),
        (None, None),
        (mine["call_id"], None),
        (mine["call_id"], None),
    ]
    assert statements == [5]
