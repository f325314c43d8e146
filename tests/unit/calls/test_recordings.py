"""A recording stored for a call deleted meanwhile (`DELETE /calls`) is deleted too: nothing
points at it any more."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fakeredis import FakeServer
from fakeredis.aioredis import FakeRedis

from calls import recordings as recordings_module
from calls.recordings import Recordings
from core.settings import Settings

KEPT, DELETED = "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01", "7d1c9a60-5b2e-4c0f-8f3a-2e6b9d4a1c77"


class Storage:
    def __init__(self) -> None:
        self.stored: list[str] = []
        self.deleted: list[str] = []

    async def put(self, call_id: str, source: Any) -> str:
        self.stored.append(f"recordings/{call_id}.wav")
        return self.stored[-1]

    async def delete(self, storage_keys: list[str]) -> None:
        self.deleted.extend(storage_keys)


async def test_a_recording_of_a_call_deleted_while_it_was_stored_is_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def claim_uploads(pool: Any, call_ids: list[str]) -> list[dict[str, Any]]:
        return [
            {"call_id": c, "ref": c, "attempts": 1, "request_id": None, "fail_attempts": 0}
            for c in call_ids
        ]

    async def finish_uploads(pool: Any, done: list[tuple[str, str, str]]) -> list[dict]:
        # The deleted call's row is gone: only the kept one is updated.
        return [{"call_id": call_id} for call_id, _, _ in done if call_id == KEPT]

    monkeypatch.setattr(recordings_module.db_recordings, "claim_uploads", claim_uploads)
    monkeypatch.setattr(recordings_module.db_recordings, "finish_uploads", finish_uploads)
    monkeypatch.setattr(recordings_module.LiveState, "write", staticmethod(lambda pipe, row: None))
    redis = FakeRedis(server=FakeServer())
    settings = Settings(_env_file=None, upload_failure_probability=0)
    stores = SimpleNamespace(settings=settings, redis=redis, mux=redis, pool=object())
    storage = Storage()
    recordings = Recordings(stores, storage)  # type: ignore[arg-type]

    counts = await recordings.upload([KEPT, DELETED])

    assert counts["uploaded"] == 1
    assert storage.deleted == [f"recordings/{DELETED}.wav"]
