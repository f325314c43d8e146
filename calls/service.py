"""Creating and reading simulated calls: the work behind `POST /calls` and `GET /calls/{id}`."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from calls.batches import Batcher
from calls.destinations import Destinations
from calls.limits import first_end_ms
from calls.live import LiveState
from calls.scenarios import Scenario, make_plan
from calls.stores import Stores
from core import logs
from core.call_ids import CallRef
from core.clock import now_ms
from core.errors import NotFound, Unprocessable
from core.limiter import Grant, Limiter, TooManyActive
from db import calls as db_calls
from db.keys import ApiKey


@dataclass(frozen=True, slots=True)
class Created:
    call: Mapping[str, Any]
    # True when an Idempotency-Key matched an earlier request: nothing new was created.
    replayed: bool
    grant: Grant | None


def request_fingerprint(body: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


class CallService:
    def __init__(
        self, stores: Stores, inserts: Batcher[db_calls.NewCall, Any], limiter: Limiter
    ) -> None:
        self._stores = stores
        self._limiter = limiter
        self._live = LiveState(stores.mux)
        self._inserts = inserts
        self._destinations = Destinations(stores.settings.callback_allowed_hosts)

    async def create(
        self,
        key: ApiKey,
        *,
        from_number: str,
        to_number: str,
        metadata: dict[str, Any],
        idempotency_key: str | None = None,
        scenario: Scenario | None = None,
        status_callback: str | None = None,
        status_callback_events: list[str] | None = None,
        queue_id: str | None = None,
        twilio: dict[str, Any] | None = None,
    ) -> Created:
        """Create a simulated call within the key's limits and start its timers; a `scenario`
        fixes its course (calls/scenarios.py), a `status_callback` gets its transitions
        (calls/callbacks.py): a host outside CALLBACK_ALLOWED_HOSTS is a BadRequest. `twilio`:
        what a create through the Twilio face asked for (its callbacks are then Twilio's).

        The call is committed to PostgreSQL before this returns. A request refused by a limit, or
        repeating an Idempotency-Key, takes no limit slot.
        """
        settings = self._stores.settings
        if status_callback is not None:
            self._destinations.check_url(status_callback)
        fingerprint = None
        if idempotency_key is not None:
            asked: dict[str, Any] = {"from": from_number, "to": to_number, "metadata": metadata}
            # What only some calls have counts only when given, so earlier fingerprints hold.
            for name, value in (
                ("queue_id", queue_id),
                ("scenario", None if scenario is None else asdict(scenario)),
                ("status_callback", status_callback),
                ("status_callback_events", status_callback_events),
            ):
                if value is not None:
                    asked[name] = value
            fingerprint = request_fingerprint(asked)
            earlier = await self._replay(key, idempotency_key, fingerprint)
            if earlier is not None:
                return earlier

        call_id = str(uuid.uuid4())
        try:
            grant = await self._limiter.acquire(
                key.id,
                call_id,
                key.max_concurrent_calls or settings.max_concurrent_calls_per_key,
                key.max_cps or settings.max_cps_per_key,
            )
        except TooManyActive as refused:
            # Retry-After: when the key's earliest call is due to end, not a guess.
            ends_ms = await first_end_ms(self._stores, key.id)
            if ends_ms is not None:
                refused.reset_s = max(1, math.ceil((ends_ms - now_ms()) / 1000))
            raise
        inserted = self._inserts.submit(
            db_calls.NewCall(
                call_id=call_id,
                key_id=key.id,
                kind="simulated",
                from_number=from_number,
                to_number=to_number,
                metadata=metadata,
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
                queue_id=queue_id,
                request_id=logs.request_id.get(),
                scenario=None if scenario is None else make_plan(scenario, settings).as_json(),
                status_callback=status_callback,
                status_callback_events=status_callback_events,
                twilio=twilio,
            )
        )
        row = await self._limiter.keep_if_created(inserted, key.id, call_id)
        if row is None:
            # A concurrent request with the same Idempotency-Key committed first.
            earlier = await self._replay(key, idempotency_key or "", fingerprint)
            assert earlier is not None
            return earlier

        return Created(row, replayed=False, grant=grant)

    async def _replay(
        self, key: ApiKey, idempotency_key: str, fingerprint: bytes | None
    ) -> Created | None:
        found = await db_calls.fetch_idempotent_call(self._stores.pool, key.id, idempotency_key)
        if found is None:
            return None
        row, earlier_fingerprint = found
        if earlier_fingerprint != fingerprint:
            raise Unprocessable("Idempotency-Key was already used with a different request body")
        # The replay is the first answer again, whatever the call has done since.
        return Created(dict(row) | {"status": "QUEUED"}, replayed=True, grant=None)

    async def get(self, call: CallRef) -> Mapping[str, Any]:
        """The call as it is now: the live view when Redis has it, else PostgreSQL (also when
        Redis does not answer: reads keep working through a Redis outage)."""
        live = None
        try:
            for call_id in call.ids:
                found = await self._live.read(call_id)
                if found is not None and (found["key_id"], found["ref"]) == (call.key_id, call.ref):
                    live = found
                    break
        except RedisError:
            live = None
        # Between COMPLETED and its upload the URL is due any moment; PostgreSQL has it first.
        if live is not None and (live["status"] != "COMPLETED" or live["recording_url"]):
            return live
        row = await db_calls.fetch_call(self._stores.pool, call)
        if row is None:
            raise NotFound("Call not found")
        return row
