"""Child processes of our own (each in its own session, output to a log file, stopped with its
whole tree), and what /proc says about processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import ROOT


@dataclass
class Process:
    """A program we run: `args` with `env`, in the checkout, output appended to `log_path`."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches whoever started it, which stops
            # everything in order, rather than every child at once.
            self.popen = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return bool(self.popen and self.popen.poll() is None)

    def signal(self, sig: int) -> None:
        """Send `sig` to the process and everything in its session's process group."""
        if self.popen and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; descendants that left the process group (a
        process manager's children in sessions of their own) are killed if still there."""
        if not self.alive:
            return
        assert self.popen is not None
        tree = descendants(self.popen.pid)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout_s)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would end it."""
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        """The last lines of its log, under a header naming it."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


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
        cmdline = command_line(pid)
    except OSError:
        return False
    return any(name in comm or name in cmdline for name in names)


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces (raises OSError when it is gone)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when the
    process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def parent_pid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _by_parent() -> dict[int, list[int]]:
    """Every process on this machine (that /proc shows), by its parent's pid."""
    found: dict[int, list[int]] = {}
    if not Path("/proc/self").exists():
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = parent_pid(int(entry.name))
            if parent is not None:
                found.setdefault(parent, []).append(int(entry.name))
    return found


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent`."""
    return _by_parent().get(parent, [])


def descendants(root: int) -> list[int]:
    """Every process below `root`, parents before their children."""
    by_parent = _by_parent()
    found: list[int] = []
    pending = [root]
    while pending:
        for child in by_parent.get(pending.pop(0), []):
            found.append(child)
            pending.append(child)
    return found
