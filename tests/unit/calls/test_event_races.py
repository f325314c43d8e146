"""A posted event is applied optimistically: read, decide, write only if the call is still at
the seq read. A call that moved on in between is read again and decided afresh."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from calls import events as events_module
from calls.batches import Batcher
from calls.events import RACES_BEFORE_GIVING_UP, EventService, PostedEvent
from calls.transitions import Transitions
from core.errors import Conflict, InvalidTransition
from core.lifecycle import Event
from core.limiter import Limiter
from core.settings import Settings
from db import calls as db_calls
from db.calls import Transition
from db.keys import ApiKey
from db.stats import Measures
from tests.unit.calls.rows import call_row

KEY = ApiKey("7d1c9a60-5b2e-4c0f-8f3a-2e6b9d4a1c77", "k", b"h" * 32, None, None, True)
CALL_ID = call_row()["call_id"]
# The pool for statements that find rows by key: the events' reads and writes go there.
LOOKUPS = object()


class FakeCalls:
    """What PostgreSQL holds of one call, with writes that lose a race `losses` times."""

    def __init__(self, reads: list[dict[str, Any]], losses: int) -> None:
        self.reads = reads
        self.losses = losses
        self.written: list[Transition] = []
        self.read_count = 0

    async def fetch_calls_for_events(self, conn: Any, reads: Sequence[Any]):
        assert conn is LOOKUPS
        answers = []
        for _ in reads:
            answers.append((self.reads[min(self.read_count, len(self.reads) - 1)], None))
            self.read_count += 1
        return answers

    async def write_transitions(
        self, conn: Any, transitions: Sequence[Transition], measures: Measures
    ):
        assert conn is LOOKUPS
        if self.losses:
            self.losses -= 1
            return []  # another writer moved the call first: the compare-and-set left it alone
        self.written.extend(transitions)
        (t,) = transitions
        return [{"call_id": t.call_id, "seq": t.from_seq + 1, "status": t.to_status}]


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> EventService:
    redis = FakeRedis(server=FakeServer())
    stores = SimpleNamespace(
        settings=Settings(_env_file=None), redis=redis, mux=redis, pool=object(), lookups=LOOKUPS
    )
    transitions = Transitions(stores)  # type: ignore[arg-type]

    async def no_redis(rows: Any) -> None:
        return None

    monkeypatch.setattr(transitions, "after_commit", no_redis)
    batchers = Batcher(transitions.insert), Batcher(transitions.write_decided)
    limiter = Limiter(redis, lambda key_id, kind: {}, 0)  # type: ignore[arg-type]
    return EventService(stores, transitions, *batchers, limiter)  # type: ignore[arg-type]


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeCalls) -> None:
    monkeypatch.setattr(db_calls, "fetch_calls_for_events", fake.fetch_calls_for_events)
    monkeypatch.setattr(db_calls, "write_transitions", fake.write_transitions)
    assert events_module.db_calls is db_calls


def answered(agent: str = "agent-7") -> PostedEvent:
    return PostedEvent(
        Event.CALL_ANSWERED, call_id=CALL_ID, agent_id=agent, occurred_at=datetime.now(UTC)
    )


async def test_a_call_moved_on_between_read_and_write_is_decided_again_from_its_new_state(
    service: EventService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read RINGING at seq 2; meanwhile another writer answers and holds it (seq 4).
    fake = FakeCalls(
        [
            call_row(kind="ingested", status="RINGING", seq=2),
            call_row(kind="ingested", status="ON_HOLD", seq=4),
        ],
        losses=1,
    )
    use(monkeypatch, fake)

    with pytest.raises(InvalidTransition):
        await service.ingest(KEY, answered())

    assert fake.read_count == 2 and fake.written == []


async def test_the_write_that_wins_is_decided_from_the_last_read(
    service: EventService, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCalls(
        [
            call_row(kind="ingested", status="RINGING", seq=2),
            call_row(kind="ingested", status="RINGING", seq=5, flags=["rerouted"]),
        ],
        losses=1,
    )
    use(monkeypatch, fake)

    ingested = await service.ingest(KEY, answered())

    assert ingested.created
    (written,) = fake.written
    assert (written.from_seq, written.to_status) == (5, "ANSWERED")
    assert "rerouted" in written.flags


async def test_an_event_that_keeps_losing_the_race_is_refused_with_a_conflict(
    service: EventService, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCalls([call_row(kind="ingested", status="RINGING", seq=2)], losses=10**6)
    use(monkeypatch, fake)

    with pytest.raises(Conflict, match="retry"):
        await service.ingest(KEY, answered())

    assert fake.read_count == RACES_BEFORE_GIVING_UP


@pytest.fixture(autouse=True)
def no_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def take(self: Any, key_id: str, per_second: int) -> None:
        return None

    monkeypatch.setattr(events_module.EventRate, "take", take)
