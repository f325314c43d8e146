"""What the machine and /proc say: each process's CPU time and memory, the machine the run was
on, and the open-files limit the streams need."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack.processes import stat_fields

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, or None when it is gone."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else None


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Each process's CPU use between two snapshots, in % of one core. Names `group:pid` are
    summed as `group` and count from zero when they started meanwhile (PostgreSQL's backends as
    `pg`, a process manager's helpers); `worker<N>` are summed as `workers`."""
    shares: dict[str, float] = {}
    for name, used in after.items():
        group, _, member = name.partition(":")
        if (name not in before and not member) or wall_s <= 0:
            continue
        group = "postgres" if group == "pg" else group
        group = "workers" if re.fullmatch(r"worker\d*", group) else group
        shares[group] = shares.get(group, 0.0) + (used - before.get(name, 0.0)) / wall_s * 100
    return {name: round(value, 1) for name, value in shares.items()}


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (children inherit it);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError):
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_total = int(match.group(1)) * 1024 if match else None
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).splitlines()[0].strip() if out else ""
    import aiohttp

    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_bytes": mem_total,
        "kernel": platform.platform(),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "wrk": wrk_version,
        "loadavg_at_start": list(os.getloadavg()),
    }
