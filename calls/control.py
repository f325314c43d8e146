"""Moving a simulated call by hand: `POST /calls/{id}/advance` (its timer, now) and
`POST /calls/{id}/hangup` (its caller hanging up), through the same compare-and-set as the timers
and posted events, so a race with either still makes one transition."""

from __future__ import annotations

from datetime import UTC, datetime

from calls.scenarios import CANCELED, Outcome, reachable
from calls.stores import Stores
from calls.transitions import Reported, Row, Transitions
from core.call_ids import CallRef
from core.errors import Conflict, NotFound
from core.lifecycle import Event, Status
from db import calls as db_calls

# Reads and writes one advance or hang-up may take (each transition, and each race lost to a
# timer or an event) before it gives up: a call has at most six timed states.
STEPS_BEFORE_GIVING_UP = 20


class CallControl:
    def __init__(self, stores: Stores, transitions: Transitions) -> None:
        self._stores = stores
        self._transitions = transitions

    async def advance(self, call: CallRef, to: Status | None = None) -> Row:
        """Move a simulated call to its next timed state now, as its timer would (stored,
        published and called back the same way); with `to`, through every state up to `to`, in
        order. Returns the last transition. If the timer (or an event) moves the call first,
        that move is the one made, and is returned: one transition, never two."""
        for _ in range(STEPS_BEFORE_GIVING_UP):
            row = await self._simulated_call(call)
            if to is not None and not reachable(row, to):
                raise Conflict(_unreachable(row, to))
            decided = self._transitions.decide_timed(row, occurred_at=datetime.now(UTC), toward=to)
            if decided is None:
                raise Conflict(
                    f"Call {call.ref} is {row['status']} and waits for an event: post"
                    " call_resumed to take it off hold"
                )
            written = await self._transitions.write([decided])
            moved = written[0] if written else await self._transition_at(call, row["seq"] + 1)
            if to is None or moved["status"] == to:
                return moved
        raise Conflict(f"Call {call.ref} kept changing while it was advanced; try again")

    async def hang_up(self, call: CallRef) -> Row:
        """End a simulated call now: `end_reason` canceled before an answer, completed after."""
        for _ in range(STEPS_BEFORE_GIVING_UP):
            row = await self._simulated_call(call)
            reason = Outcome.COMPLETED if row["answered_at"] is not None else CANCELED
            decided = self._transitions.decide_event(
                row,
                Event.CALL_ENDED,
                occurred_at=datetime.now(UTC),
                reported=Reported(),
                event_id=None,
                end_reason=reason,
            )
            written = await self._transitions.write([decided])
            if written:
                return written[0]
        raise Conflict(f"Call {call.ref} kept changing while it was hung up; try again")

    async def _simulated_call(self, call: CallRef) -> Row:
        """The call as it is now, if it is a simulated call still going (else 404 or 409)."""
        row = await db_calls.fetch_call(self._stores.lookups, call)
        if row is None:
            raise NotFound("Call not found")
        if row["kind"] != "simulated":
            raise Conflict(
                f"Call {call.ref} is an ingested call: it moves only by the events posted for it"
            )
        if row["status"] == Status.COMPLETED:
            raise Conflict(f"Call {call.ref} has completed ({row['end_reason']})")
        return row

    async def _transition_at(self, call: CallRef, seq: int) -> Row:
        """The transition that took the call to `seq` (one a racing timer or event made)."""
        (found,) = await db_calls.fetch_events(self._stores.lookups, call, seq - 1, limit=1)
        return found


def _unreachable(call: Row, to: Status) -> str:
    status = call["status"]
    if status == to:
        return f"Call {call['ref']} is {status} already"
    return f"Call {call['ref']} is {status} and its course does not take it to {to} from there"
