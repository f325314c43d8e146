"""Processes of the dev stack: stopped with every process below them, even those that left
their process group (as honcho's children do)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from devstack.processes import Process, descendants, pid_alive, wait_for_exit
from devstack.redis import redis_server_args

# A parent that starts a child in a session of its own, then waits.
PARENT = (
    "import subprocess, sys, time;"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True);"
    "time.sleep(60)"
)


def test_stopping_a_process_ends_a_child_in_another_session(tmp_path: Path) -> None:
    parent = Process("parent", [sys.executable, "-c", PARENT], dict(os.environ), tmp_path / "log")
    parent.start()
    assert parent.pid is not None
    deadline = time.monotonic() + 10
    while not descendants(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = descendants(parent.pid)

    parent.stop(timeout_s=2)

    assert not parent.alive
    assert wait_for_exit(child, 5)
    assert not pid_alive(child)


def test_a_private_redis_persists_nothing() -> None:
    args = redis_server_args("/bin/redis-server", 6400, "--maxclients", "10")

    assert args[:5] == ["/bin/redis-server", "--port", "6400", "--bind", "127.0.0.1"]
    assert args[5:9] == ["--save", "", "--appendonly", "no"]
    assert args[-2:] == ["--maxclients", "10"]
