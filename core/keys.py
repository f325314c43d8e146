"""Every Redis key and channel name, in one place.

Keys of one call or one API key carry it in a {hash tag}, so under Redis Cluster a call's live
state stays on one shard and the limiter's two keys of one API key share a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "mc"

# Pub/sub channel of every transition; each API process holds one subscription to it.
EVENTS_CHANNEL = f"{PREFIX}:events"
# Pub/sub channel of API key changes (`python -m db keys ...`): each API process forgets what it
# remembers of the key at once, and closes a disabled key's streams.
KEYS_CHANNEL = f"{PREFIX}:keys"
# The scheduler's leader lock (a string: the leader's token, expiring).
SCHEDULER_LOCK = f"{PREFIX}:scheduler:leader"
# The lead's record (a hash): who holds or last held the lead and since when, until when its
# lock runs, how often the lead changed hands and how long it was vacant before the last change.
# Kept when the lock lapses, so the next leader can say how long the lead was vacant.
SCHEDULER_LEAD = f"{PREFIX}:scheduler:lead"
# Held (briefly, expiring) by the scheduler that is starting a drain job: every scheduler
# dispatches, and this keeps two from starting one each for the same due timers.
DISPATCH_CLAIM = f"{PREFIX}:scheduler:dispatching"
# Figures the processes share for /metrics: histograms (lateness, callback delivery) and
# plain counters.
TIMER_LATENESS = f"{PREFIX}:metrics:timer_lateness"
CALLBACK_LATENCY = f"{PREFIX}:metrics:callback_latency"
COUNTERS = f"{PREFIX}:metrics:counters"


def worker_alive(name: str) -> str:
    """Set while the RQ worker `name` lives: renewed every third of PROCESS_DEAD_AFTER_MS, so
    upkeep takes a worker whose key lapsed for dead (its entry in RQ's workers and its drain
    job go)."""
    return f"{PREFIX}:worker:{name}:alive"


# Queue statistics: the set of the queues whose figures changed since the leading scheduler last
# published them (members: changed_queue), taken whole every STATS_INTERVAL_MS; and the pub/sub
# channel it publishes their figures on, which each API process passes to its key streams.
STATS_CHANGED = f"{PREFIX}:stats:changed"
STATS_CHANNEL = f"{PREFIX}:stats"


def changed_queue(key_id: str, queue_id: str) -> str:
    """A member of STATS_CHANGED: an API key's queue (key ids are UUIDs, without ':')."""
    return f"{key_id}:{queue_id}"


def queue_of_changed(member: str) -> tuple[str, str]:
    """The (key id, queue id) of a STATS_CHANGED member."""
    key_id, queue_id = member.split(":", 1)
    return key_id, queue_id


# The RQ queue of the jobs that work off due timers (every kind alike).
TIMERS_QUEUE = "timers"
# The RQ queue of dead letters: work whose attempts are spent, left as failed jobs (one per call
# and kind, `dead_letter_id`) that rq-dashboard can requeue.
RETRIES_QUEUE = "retries"


def call_state(call_id: str) -> str:
    """Hash with the live view of one call."""
    return f"{PREFIX}:call:{{{call_id}}}"


def leases(key_id: str) -> str:
    """Slot set of the active simulated calls of an API key (its concurrency limit)."""
    return f"{PREFIX}:key:{{{key_id}}}:leases"


def ingested_slots(key_id: str) -> str:
    """Slot set of the active ingested calls of an API key (MAX_ACTIVE_INGESTED_CALLS)."""
    return f"{PREFIX}:key:{{{key_id}}}:ingested"


# A slot set is a sorted set of call ids scored by the time (ms) their slot was taken, plus the
# member SLOTS_KNOWN (score +inf) once it is known to hold every active call of its kind: a set
# without it (Redis lost it, or the key never had one) is restored from PostgreSQL before any
# slot is given, so a lost set never passes for an empty one.
SLOTS_KNOWN = "*"
# Epoch ms since which this Redis has held the limits (set when found missing: a new or flushed
# Redis). A slot set is restored from PostgreSQL only once LIMIT_RESTORE_SETTLE_MS have passed
# since, so the inserts whose slots Redis lost have committed and are counted.
LIMITS_SINCE = f"{PREFIX}:limits:since"


def rate_window(key_id: str) -> str:
    """Sorted set of the calls an API key created in the last second, scored by time ms."""
    return f"{PREFIX}:key:{{{key_id}}}:rate"


def event_window(key_id: str, second: int) -> str:
    """Counter of the events an API key posted in one epoch second."""
    return f"{PREFIX}:key:{{{key_id}}}:events:{second}"


def stream_counts(key_id: str) -> str:
    """Hash of the open streams (SSE and WebSocket) of an API key, by API process name: the key's
    streams on every process together are capped (MAX_STREAMS_PER_KEY)."""
    return f"{PREFIX}:key:{{{key_id}}}:streams"


def stream_holders(key_id: str) -> str:
    """Sorted set of the API processes counted in `stream_counts`, scored by until when (ms)
    each one's count holds: a process renews it while it lives, and a lapsed one (the process
    died) is dropped at the key's next stream."""
    return f"{PREFIX}:key:{{{key_id}}}:stream-holders"


def slot_sets(key_id: str) -> tuple[str, ...]:
    """Every slot set of an API key."""
    return (leases(key_id), ingested_slots(key_id))


def lease_keys_pattern() -> str:
    return f"{PREFIX}:key:{{*}}:leases"


def lease_holders() -> str:
    """Sorted set of the API keys that may hold leases (member key id, score its latest
    acquire in ms): upkeep's index of the lease sets, so it never walks the keyspace for them.
    Its member LEASE_HOLDERS_SEEDED (score +inf) says the index is complete."""
    return f"{PREFIX}:lease-holders"


LEASE_HOLDERS_SEEDED = "*"


def key_id_of_leases(lease_key: str) -> str:
    """The API key id in a `leases` key's name."""
    return lease_key.split("{", 1)[1].split("}", 1)[0]


# Timed work: one sorted set of timers per kind (scored by due time in epoch ms), so each kind's
# jobs take only their own. The kinds register their handlers in calls/timed_work.py. Members:
#   "adv:<call id>:<seq>:<state>"  move a simulated call on from the state it entered at seq
#   "upl:<call id>"                (re)try the upload of a call's recording
#   "cbk:<call id>"                deliver a call's next status callback (one timer per call,
#                                  whatever it has open: its deliveries go one at a time)
ADVANCE = "adv"
UPLOAD = "upl"
CALLBACK = "cbk"
TIMER_KINDS = (ADVANCE, UPLOAD, CALLBACK)
# The RQ job id of a call's spent work of a kind (RQ ids take only A-Z, a-z, 0-9, _ and -).
_DEAD_LETTERS = {UPLOAD: "upload", CALLBACK: "callbacks"}


def timers(kind: str) -> str:
    """Sorted set of the timers of one kind (`TIMER_KINDS`)."""
    return f"{PREFIX}:timers:{kind}"


def timer_kind(member: str) -> str:
    return member.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class AdvanceTimer:
    """What an `ADVANCE` member says: move `call_id` on from `status`, entered at `seq`."""

    call_id: str
    seq: int
    status: str


def advance_timer(call_id: str, seq: int, status: str) -> str:
    """Timer that moves a simulated call on from the state it entered at `seq`.

    The seq, not only the state, makes it stale once the call has moved: a call held and
    resumed is ANSWERED again, but at a later seq, so the first timer cannot end it early.
    """
    return f"{ADVANCE}:{call_id}:{seq}:{status}"


def parse_advance_timer(member: str) -> AdvanceTimer:
    """The call, seq and state an `advance_timer` member names."""
    _, call_id, seq, status = member.split(":")
    return AdvanceTimer(call_id, int(seq), status)


def upload_timer(call_id: str) -> str:
    """Timer that (re)tries the recording upload of a call."""
    return f"{UPLOAD}:{call_id}"


def callback_timer(call_id: str) -> str:
    """Timer that delivers a call's first open status callback."""
    return f"{CALLBACK}:{call_id}"


def dead_letter_id(kind: str, call_id: str) -> str:
    """The failed RQ job that holds a call's spent work of `kind` (`upload-<call id>`,
    `callbacks-<call id>`)."""
    return f"{_DEAD_LETTERS[kind]}-{call_id}"


def timer_call_id(member: str) -> str:
    """The call a timer of one call (`upload_timer`, ...) is for."""
    return member.split(":", 2)[1]
