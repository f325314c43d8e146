"""scripts/run's runner (devstack/runner.py): the Procfile's processes write straight to its
output, a stop ends them all, a taken port or an unknown name is one line, and a process that
dies stops the rest."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from devstack.runner import chosen, read_procfile
from tests.integration.platform import ROOT, Platform, free_port


def runner(platform: Platform, port: int, *names: str, out: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "devstack.runner", "--port", str(port), *names],
        cwd=ROOT,
        env=platform.env | {"LOG_LEVEL": "INFO"},
        stdout=out.open("wb") if out else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


async def healthy(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing answered on {port}")


def test_process_names_and_counts_are_read_from_the_procfile() -> None:
    procfile = read_procfile()
    assert list(procfile) == ["web", "worker", "scheduler", "dashboard"]
    assert chosen(procfile, []) == [(name, 1) for name in procfile]
    assert chosen(procfile, ["web", "worker=3"]) == [("web", 1), ("worker", 3)]
    with pytest.raises(ValueError, match="no process named 'wrker'"):
        chosen(procfile, ["wrker"])
    with pytest.raises(ValueError, match="positive number"):
        chosen(procfile, ["worker=0"])


async def test_the_processes_write_straight_to_its_output_and_a_stop_ends_them_all(
    platform: Platform, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "out.log"
    started = runner(platform, port, "web", "worker", "scheduler", out=out)
    try:
        await healthy(port)
        # Its children are the processes themselves (bash execs them): no relay between.
        children = Path(f"/proc/{started.pid}/task/{started.pid}/children").read_text().split()
        assert len(children) == 3
        commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children}
        assert {c.split(b"\0")[2] for c in commands} == {b"api", b"worker", b"scheduler"}
    finally:
        begun = time.monotonic()
        os.killpg(started.pid, signal.SIGINT)
        started.wait(10)
        stopped_s = time.monotonic() - begun
    assert started.returncode == 0
    assert stopped_s < 5
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()
        )
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines() if line.startswith(b"{")]
    assert any(line["process"] == "api" and line.get("path") == "/health" for line in lines)


async def test_a_taken_port_or_an_unknown_name_is_one_line(platform: Platform) -> None:
    taken = runner(platform, int(platform.base_url.rsplit(":", 1)[1]), "web")
    _, err = taken.communicate(timeout=10)
    assert taken.returncode == 1
    assert err.decode().strip().count("\n") == 0
    assert "is taken: the platform (or something else) is already running there" in err.decode()

    unknown = runner(platform, free_port(), "web", "wroker")
    _, err = unknown.communicate(timeout=10)
    assert unknown.returncode == 2
    assert err.decode().strip() == (
        "mock-comms: no process named 'wroker' in the Procfile "
        "(it has web, worker, scheduler, dashboard)"
    )


async def test_a_process_that_dies_stops_the_others_with_its_status(platform: Platform) -> None:
    port = free_port()
    started = runner(platform, port, "web", "scheduler")
    try:
        await healthy(port)
        children = Path(f"/proc/{started.pid}/task/{started.pid}/children").read_text().split()
        scheduler = next(
            int(pid)
            for pid in children
            if b"scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(scheduler, signal.SIGKILL)
        _, err = started.communicate(timeout=10)
    finally:
        if started.poll() is None:
            os.killpg(started.pid, signal.SIGKILL)
    assert started.returncode == 128 + signal.SIGKILL
    assert "scheduler ended (killed by SIGKILL); stopping the others" in err.decode()


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "run"), *args],
        cwd=ROOT,
        env=(env or dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_scripts_run_help_and_mistakes_are_answered_before_any_set_up(
    platform: Platform,
) -> None:
    helped = run_script("--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: scripts/run [NAME[=COUNT] ...]")
    assert helped.stderr == ""  # nothing installed, found, started or migrated

    unknown = run_script("web", "wroker")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "mock-comms: no process named 'wroker' in the Procfile "
        "(it has web, worker, scheduler, dashboard)"
    )

    taken = run_script("web", env=dict(os.environ) | {"PORT": platform.base_url.rsplit(":", 1)[1]})
    assert taken.returncode == 1
    assert taken.stderr.strip().startswith("mock-comms: port ")
    assert "is taken: the platform (or something else) is already running there" in taken.stderr
    assert "\n" not in taken.stderr.strip()


def test_scripts_run_names_only_the_processes_it_starts(platform: Platform) -> None:
    """The banner gives the API's address, and rq-dashboard's only when it was asked for."""
    port = free_port()
    started = subprocess.Popen(
        [str(ROOT / "scripts" / "run"), "web=1"],
        cwd=ROOT,
        env=platform.env | {"PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert started.stderr is not None
        banner = next(line for line in started.stderr if " starting " in line)
    finally:
        os.killpg(started.pid, signal.SIGINT)
        started.wait(timeout=10)
    assert f"API: http://127.0.0.1:{port}" in banner
    assert "rq-dashboard" not in banner
