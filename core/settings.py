"""The one settings object, from the environment and `.env` (the original service's names kept)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated
from urllib.parse import quote

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # HTTP
    host: str = "127.0.0.1"
    port: int = 3000
    public_base_url: str = ""
    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    # Origins whose web pages may call the API from a browser (CORS), comma-separated, e.g.
    # `https://app.example.com,http://localhost:5173`; `*` for any. None by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # PostgreSQL: DATABASE_URL wins over the POSTGRES_* parts.
    database_url: str = ""
    postgres_host: str = "localhost"
    postgres_port: int = 5432
    postgres_db: str = "mock_communications"
    postgres_user: str = "postgres"
    postgres_password: str = "postgres"
    db_pool_min: int = 2
    # An API process's connections. A request holds one only while a statement runs, but that
    # includes waiting for its commit to reach the disk: 10 capped POST /events at ~350/s with
    # the machine half idle (docs/PERFORMANCE.md). Mind PostgreSQL's max_connections (100 by
    # default) when running several API processes.
    db_pool_max: int = 20

    # Redis: REDIS_URL wins over REDIS_HOST / REDIS_PORT.
    redis_url: str = ""
    redis_host: str = "localhost"
    redis_port: int = 6379
    # Connections per process; a request waits for a free one when all are busy.
    redis_pool_max: int = Field(default=200, ge=1)

    # Keys and limits
    valid_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["test-api-key-1", "test-api-key-2", "demo-key"]
    )
    max_concurrent_calls_per_key: int = Field(default=3, ge=1)
    max_cps_per_key: int = Field(default=2, ge=1)
    api_key_cache_ttl_ms: int = 5_000
    # Ingested calls (call_initiated) a key may have active at once; a key's own value wins.
    max_active_ingested_calls_per_key: int = Field(default=10_000, ge=1)
    # After Redis lost the limits, how long a restore from PostgreSQL waits for the inserts in
    # flight then (whose slots went with Redis) to commit and be counted.
    limit_restore_settle_ms: int = Field(default=1_000, ge=0, le=60_000)

    # Lifecycle of simulated calls: delays in ms before each timed transition.
    ring_delay_min_ms: int = 1_000
    ring_delay_max_ms: int = 2_000
    answer_delay_min_ms: int = 3_000
    answer_delay_max_ms: int = 5_000
    talk_delay_min_ms: int = 2_000
    talk_delay_max_ms: int = 4_000
    unanswered_delay_min_ms: int = 1_000
    unanswered_delay_max_ms: int = 2_000
    answer_probability: float = Field(default=0.7, ge=0.0, le=1.0)
    # Shares of unscripted calls that end busy or failed (taken from the unanswered ones); the
    # rest of the unanswered end no_answer.
    busy_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    failed_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    # Multiplies every lifecycle delay and backoff: 0.01 runs a call's life in ~0.1 s.
    time_scale: float = Field(default=1.0, gt=0.0)

    # Business rules (seconds): flag a wait, hold or routing longer than its limit, a talk shorter.
    wait_sla_s: float = Field(default=30, ge=0)
    hold_limit_s: float = Field(default=60, ge=0)
    short_call_s: float = Field(default=10, ge=0)
    reroute_s: float = Field(default=15, ge=0)
    # Events one key may post per second (POST /events).
    max_events_per_second_per_key: int = Field(default=1000, ge=1)
    # Events one call's history may hold; the last place is kept for call_ended.
    max_events_per_call: int = Field(default=1_000, ge=2, le=1_000_000)
    # An ingested call with no event for this long is ended by upkeep (end_reason timeout).
    ingested_call_timeout_s: int = Field(default=14_400, ge=1)

    # Queue statistics (seconds): a call answered within SERVICE_LEVEL_S of its start meets the
    # service level; one abandoned within SHORT_ABANDON_S is a short abandon, left out of it.
    service_level_s: float = Field(default=20, ge=0, le=86_400)
    short_abandon_s: float = Field(default=5, ge=0, le=86_400)
    # The service level a queue should meet, in %: the dashboard colours its tile by it.
    service_level_target_pct: float = Field(default=80, ge=0, le=100)
    # How often the leading scheduler publishes the figures of the queues that changed (the
    # key stream's `stats` messages): at most once a second per queue.
    stats_interval_ms: int = Field(default=1_000, ge=1_000, le=60_000)

    # Recordings
    recording_source: str = "assets/recording.wav"
    recordings_dir: str = "data/recordings"
    upload_max_attempts: int = Field(default=5, ge=1)
    upload_backoff_base_ms: int = 500
    # Fault injection for tests and demos: share of upload attempts that fail.
    upload_failure_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    # Recordings on S3 (any S3-compatible store) when a bucket is set, else in recordings_dir.
    # Credentials are botocore's: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws, roles.
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    # The store as the owners reach it, for the signed URLs the recording route redirects to,
    # when it differs from where the platform reaches it (Compose: http://localhost:9000 for
    # MinIO, which the processes reach as http://minio:9000). Empty: S3_ENDPOINT_URL.
    s3_public_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = "recordings/"
    # Lifetime of the signed URL the recording route redirects to (SigV4 allows up to 7 days).
    s3_presign_ttl_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    # Status callbacks
    # Where callbacks may go: host names, `*.domain`, `*` (any name) and IP networks. A name's
    # callbacks go only to the addresses it resolves to inside a listed network or public.
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.0/8", "::1"]
    )
    # An attempt gets no answer within this: it failed (a timeout) and is retried.
    callback_timeout_ms: int = Field(default=10_000, ge=1, le=60_000)
    # Attempts per delivery, and the first retry's wait (doubling, ±20%, after TIME_SCALE): by
    # default ten attempts over eight and a half hours.
    callback_max_attempts: int = Field(default=10, ge=1, le=100)
    callback_backoff_base_ms: int = Field(default=60_000, ge=0, le=3_600_000)
    # Callbacks one worker process sends at once; more wait for a free place.
    callback_concurrency: int = Field(default=256, ge=1, le=10_000)

    # Scheduler
    scheduler_poll_ms: int = 10
    # A worker's job takes due timers this many at a time (one transaction each) and keeps taking
    # them for up to JOB_DRAIN_MS, so RQ's own cost is paid per job, not per timer.
    job_batch_size: int = Field(default=100, ge=1)
    job_drain_ms: int = Field(default=1_000, ge=0)
    scheduler_lock_ttl_ms: int = 5_000
    reconcile_interval_ms: int = 2_000
    # A call whose state is older than its longest timer plus this grace, with no timer, is resumed.
    reconcile_grace_ms: int = 5_000
    # A limit lease older than this is checked against PostgreSQL and dropped if its call ended.
    lease_check_after_ms: int = 10_000
    # An upload attempt still running after this lost its worker; upkeep gives it back.
    upload_attempt_timeout_ms: int = 60_000
    # An outbox entry older than this was not published by its writer; upkeep publishes it.
    outbox_grace_ms: int = 1_000
    # A process that stops renewing what it holds in Redis (every third of this) is dead once
    # this has passed: a worker is dropped from RQ's workers with its drain job, an API
    # process's count of each key's open streams is given back.
    process_dead_after_ms: int = Field(default=10_000, ge=300, le=600_000)
    # Ended calls older than this are deleted by upkeep with their history and recordings, and
    # the queue statistics' minute rows as old (0 keeps everything).
    retention_days: float = Field(default=30, ge=0)

    # Realtime
    stream_ping_s: float = 15.0
    stream_queue_size: int = 256
    # Streams (SSE and WebSocket) one key may hold open, on every API process together; more
    # get 429.
    max_streams_per_key: int = Field(default=100, ge=1)
    # How long the token in a created call's stream_url / websocket_url opens that call's streams.
    stream_token_ttl_s: int = Field(default=3_600, ge=1, le=7 * 86_400)

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: dict) -> dict:
        # Comma-separated in the environment and .env.
        for name in (
            "valid_api_keys",
            "VALID_API_KEYS",
            "cors_origins",
            "CORS_ORIGINS",
            "callback_allowed_hosts",
            "CALLBACK_ALLOWED_HOSTS",
        ):
            raw = data.get(name) if isinstance(data, dict) else None
            if isinstance(raw, str):
                data[name] = [k.strip() for k in raw.split(",") if k.strip()]
        return data

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        for stage in ("ring", "answer", "talk", "unanswered"):
            low, high = (
                getattr(self, f"{stage}_delay_min_ms"),
                getattr(self, f"{stage}_delay_max_ms"),
            )
            if not 0 <= low <= high:
                raise ValueError(f"{stage}_delay_min_ms must be >= 0 and <= {stage}_delay_max_ms")
        for origin in self.cors_origins:
            # What a browser sends as Origin: a scheme and a host, no path (nor trailing /).
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"CORS_ORIGINS holds {origin!r}: each must be * or an origin such as"
                    " https://app.example.com or http://localhost:5173 (no path, no trailing /)"
                )
        shares = self.answer_probability + self.busy_probability + self.failed_probability
        if shares > 1.0 + 1e-9:
            raise ValueError(
                "answer_probability + busy_probability + failed_probability must be at most 1"
            )
        return self

    @property
    def dsn(self) -> str:
        if self.database_url:
            return self.database_url
        user = quote(self.postgres_user, safe="")
        password = quote(self.postgres_password, safe="")
        return (
            f"postgresql://{user}:{password}@{self.postgres_host}:{self.postgres_port}"
            f"/{self.postgres_db}"
        )

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://{self.redis_host}:{self.redis_port}/0"

    def scaled_ms(self, ms: float) -> int:
        """A lifecycle delay after the global time scale."""
        return max(0, round(ms * self.time_scale))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
