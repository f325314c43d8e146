"""The limiter as every process opens it: slot sets Redis lost are restored from PostgreSQL."""

from __future__ import annotations

from calls.stores import Stores
from core.limiter import CallKind, Limiter
from db import calls as db_calls


def open_limiter(stores: Stores) -> Limiter:
    async def active_calls(key_id: str, kind: CallKind) -> dict[str, int]:
        found = await db_calls.fetch_active_slots(stores.pool, [(key_id, kind.value)])
        return found[(key_id, kind.value)]

    return Limiter(stores.mux, active_calls, stores.settings.limit_restore_settle_ms)
