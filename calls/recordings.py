"""Uploading a completed call's recording: claimed, stored, counted; retried with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from calls import metrics as shared_metrics
from calls.dead_letters import DeadLetters, RetryFailed
from calls.live import LiveState
from calls.storage import Location, RecordingStorage, download_name, storage_for
from calls.stores import Stores
from calls.timers import DueTimer, Timers
from core import keys
from core.backoff import backoff_ms
from core.clock import now_ms
from db import recordings as db_recordings

log = logging.getLogger(__name__)


class UploadFailed(Exception):
    pass


def recording_path(ref: str) -> str:
    """The API route that serves a call's recording to its owner (`ref`: the call's id as the
    owner knows it)."""
    return f"/calls/{ref}/recording"


class Recordings:
    def __init__(
        self,
        stores: Stores,
        storage: RecordingStorage | None = None,
        rng: random.Random | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self._stores = stores
        self._dead_letters = dead_letters
        settings = stores.settings
        self._storage = storage or storage_for(settings)
        self._source = Path(settings.recording_source).resolve()
        self._live = LiveState(stores.mux)
        self._rng = rng or random.Random()

    def backoff_ms(self, attempt: int) -> int:
        """The wait after failed `attempt`: base, 2×base, 4×base… ±20%, after the time scale."""
        settings = self._stores.settings
        return settings.scaled_ms(backoff_ms(attempt, settings.upload_backoff_base_ms, self._rng))

    async def _store(self, claim: Mapping[str, Any]) -> str:
        if claim["attempts"] <= claim["fail_attempts"]:
            raise UploadFailed(
                f"scripted upload failure (scenario fail_upload_attempts {claim['fail_attempts']})"
            )
        if self._rng.random() < self._stores.settings.upload_failure_probability:
            raise UploadFailed("injected upload failure (UPLOAD_FAILURE_PROBABILITY)")
        return await self._storage.put(claim["call_id"], self._source)

    async def work(self, due: Sequence[DueTimer]) -> None:
        """Work off due `upl` timers: attempt the uploads they are for."""
        await self.upload([keys.timer_call_id(timer.member) for timer in due])

    async def flush(self) -> None:
        """Nothing to add to /metrics at the end of a job: each batch counts its attempts."""

    async def upload(
        self, call_ids: Sequence[str], *, leave_dead_letters: bool = True
    ) -> dict[str, int]:
        """Attempt the uploads of `call_ids`; returns how many were stored, retried and failed.

        Only pending uploads are claimed, so a duplicate timer does nothing. A failed attempt is
        given back with a retry time (and a timer), or marked failed after the last attempt (and
        left as a dead letter).
        """
        pool = self._stores.pool
        claimed = await db_recordings.claim_uploads(pool, call_ids)
        counts = {"uploaded": 0, "retrying": 0, "failed": 0}
        # Concurrently: the storage's own limits (threads, connections) bound how many at once.
        attempts = await asyncio.gather(
            *(self._attempt(claim, counts, leave_dead_letters) for claim in claimed)
        )
        stored = [attempt for attempt in attempts if attempt is not None]

        rows = []
        if stored:
            rows = await db_recordings.finish_uploads(pool, stored)
            counts["uploaded"] = len(rows)
            # A call deleted while its recording was stored (DELETE /calls): nothing points at
            # the file any more, so it goes too.
            kept = {row["call_id"] for row in rows}
            await self.discard([key for call_id, key, _ in stored if call_id not in kept])
        try:
            async with self._stores.mux.pipeline() as pipe:
                for row in rows:
                    self._live.write(pipe, row)
                shared_metrics.count(pipe, "upload_attempts", len(claimed))
                shared_metrics.count(pipe, "upload_attempts_failed", len(claimed) - len(stored))
                await pipe.execute()
        except RedisError:
            log.exception("redis update after uploads failed; GET reads the URL from PostgreSQL")
        return counts

    async def _attempt(
        self, claim: Mapping[str, Any], counts: dict[str, int], leave_dead_letter: bool
    ) -> tuple[str, str, str] | None:
        """Store one claimed recording: (call id, storage key, url), or None when the attempt
        failed and was given back for a retry or marked failed."""
        settings = self._stores.settings
        call_id = claim["call_id"]
        try:
            storage_key = await self._store(claim)
        except Exception as exc:
            retry_in = self.backoff_ms(claim["attempts"])
            outcome = await db_recordings.fail_upload(
                self._stores.pool, call_id, str(exc), settings.upload_max_attempts, retry_in
            )
            if outcome is None:
                return None
            log.warning(
                "upload of %s failed (attempt %d): %s",
                call_id,
                claim["attempts"],
                exc,
                extra={"call_id": call_id, "request_id": claim["request_id"]},
            )
            if outcome["status"] == "pending":
                counts["retrying"] += 1
                await Timers.schedule(
                    self._stores.redis, keys.upload_timer(call_id), outcome["next_attempt_ms"]
                )
            else:
                counts["failed"] += 1
                if leave_dead_letter:
                    await self._leave_dead_letter(claim, exc)
            return None
        log.info(
            "recording of %s stored",
            call_id,
            extra={"call_id": call_id, "request_id": claim["request_id"]},
        )
        return call_id, storage_key, recording_path(claim["ref"])

    async def _leave_dead_letter(self, claim: Mapping[str, Any], error: Exception) -> None:
        if self._dead_letters is None:
            return
        attempts = claim["attempts"]
        try:
            await self._dead_letters.add(
                keys.UPLOAD,
                claim["call_id"],
                f"recording upload of call {claim['ref']}",
                f"The recording upload of call {claim['ref']} failed {attempts} times"
                f" (UPLOAD_MAX_ATTEMPTS); the last: {error}. Requeue this job to try it once more.",
            )
        except RedisError:
            log.warning("could not leave the dead letter of %s's upload", claim["call_id"])

    async def retry(self, call_id: str) -> None:
        """A requeued dead letter: one more attempt at the call's failed upload. Raises
        RetryFailed if it fails again (it is failed again, and the job a dead letter again)."""
        if not await db_recordings.reopen_failed_upload(self._stores.pool, call_id):
            return  # not failed (any more): nothing to do
        counts = await self.upload([call_id], leave_dead_letters=False)
        if not counts["uploaded"]:
            raise RetryFailed(f"the recording upload of call {call_id} failed again")

    async def locate(self, ref: str, storage_key: str) -> Location | None:
        """Where the call's owner gets the recording stored at `storage_key` (the file is named
        after `ref`, the call's id as the owner knows it)."""
        return await self._storage.locate(storage_key, download_name(ref, storage_key))

    async def discard(self, storage_keys: list[str]) -> None:
        """Delete stored recordings (of calls deleted, or being deleted)."""
        if storage_keys:
            await self._storage.delete(storage_keys)

    async def aclose(self) -> None:
        """Close the storage's client; the process's lifetime (app cleanup, Runtime) calls it."""
        await self._storage.aclose()


async def resume_uploads(stores: Stores, limit: int) -> int:
    """Re-arm uploads whose timer was lost, and attempts whose worker died."""
    settings = stores.settings
    rows = await db_recordings.fetch_stranded_uploads(
        stores.pool, settings.reconcile_grace_ms, settings.upload_attempt_timeout_ms, limit
    )
    if not rows:
        return 0
    members = [keys.upload_timer(row["call_id"]) for row in rows]
    waiting = await Timers(stores.redis).pending(members)
    lost = [row for row, wait in zip(rows, waiting, strict=True) if not wait]
    await db_recordings.reopen_uploads(
        stores.pool, [row["call_id"] for row in lost if row["status"] == "uploading"]
    )
    now = now_ms()
    async with stores.redis.pipeline(transaction=False) as pipe:
        for row in lost:
            Timers.schedule(pipe, keys.upload_timer(row["call_id"]), now)
        await pipe.execute()
    return len(lost)
