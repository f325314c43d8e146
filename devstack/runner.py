"""`python -m devstack.runner [NAME[=COUNT] ...] [--port PORT]`: run the Procfile's processes
in the foreground, as `scripts/run` does, until Ctrl-C (or SIGTERM), then stop them all.

Every process writes to the runner's own stdout and stderr: its log lines are JSON naming their
process, so nothing relays them (a runner that reads every child's output line by line, as
honcho does, costs a core's fraction per thousands of lines, and when it falls behind a child's
full pipe blocks that child's event loop). A process that ends on its own stops the others, and
its exit status is the runner's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.paths import ROOT

PROCFILE = ROOT / "Procfile"
# How long the processes have to stop after SIGTERM before they are killed.
STOP_S = 5.0


@dataclass
class Child:
    name: str
    command: str
    env: dict[str, str]
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches the runner, which stops the
        # processes in order, not every process at once.
        self.popen = subprocess.Popen(
            ["bash", "-c", "exec " + self.command],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)


def read_procfile(path: Path = PROCFILE) -> dict[str, str]:
    """The Procfile's process types and commands, in order."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not line.lstrip().startswith("#"):
            found[name.strip()] = command.strip()
    return found


def chosen(procfile: dict[str, str], asked: list[str]) -> list[tuple[str, int]]:
    """The process types asked for (`name` or `name=count`), each with its count; every type
    once when none is asked for. Raises ValueError naming what the Procfile does not have."""
    if not asked:
        return [(name, 1) for name in procfile]
    picked: list[tuple[str, int]] = []
    for item in asked:
        name, _, count = item.partition("=")
        if name not in procfile:
            raise ValueError(
                f"no process named {name!r} in the Procfile (it has {', '.join(procfile)})"
            )
        if count and (not count.isdigit() or int(count) < 1):
            raise ValueError(f"{item!r}: the count after '=' must be a positive number")
        picked.append((name, int(count or 1)))
    return picked


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def say(message: str) -> None:
    print(f"mock-comms: {message}", file=sys.stderr, flush=True)


def run(asked: list[str], port: int, host: str) -> int:
    procfile = read_procfile()
    try:
        picked = chosen(procfile, asked)
    except ValueError as exc:
        say(str(exc))
        return 2
    webs = dict(picked).get("web", 0)
    for i in range(webs):
        if port_taken(host, port + i):
            say(
                f"port {port + i} on {host} is taken: the platform (or something else) is already"
                " running there; stop it, or choose another with PORT"
            )
            return 1
    # The Procfile's `python` (and rq-dashboard) are the runner's own environment's.
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    children = [
        Child(
            name if count == 1 else f"{name}.{i + 1}",
            procfile[name],
            # The API listens on PORT: each web process on its own, the others ignore it.
            os.environ | {"PATH": path, "PORT": str(port + i if name == "web" else port)},
        )
        for name, count in picked
        for i in range(count)
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.start()
    status = 0
    while not stopping:
        ended = [c for c in children if c.popen is not None and c.popen.poll() is not None]
        if ended:
            first = ended[0]
            code = first.popen.returncode if first.popen else 1
            # A process killed by signal N is a shell's status 128 + N.
            status = code if code >= 0 else 128 - code
            how = f"exit status {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
            say(f"{first.name} ended ({how}); stopping the others")
            break
        time.sleep(0.1)
    _stop_all(children)
    return status  # 0 when asked to stop


def _stop_all(children: list[Child]) -> None:
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    for child in children:
        if child.popen is None:
            continue
        try:
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop within {STOP_S:g} s of SIGTERM; killing it")
            child.signal(signal.SIGKILL)
            child.popen.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("processes", nargs="*", metavar="NAME[=COUNT]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    args = parser.parse_args(argv)
    return run(args.processes, args.port, args.host)


if __name__ == "__main__":
    sys.exit(main())
