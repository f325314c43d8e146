"""The platform's processes as a layout: how many API processes, workers and schedulers, each
`python -m <module>` in the checkout with one environment (each API process on a port of its
own) and a log file of its own. The integration tests and the benchmark start the platform
through here; scripts/run's runner starts the Procfile's processes instead."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import Process

# The platform's modules (`python -m <module>`), in the order a layout starts them.
MODULES = ("api", "worker", "scheduler")


@dataclass(frozen=True, slots=True)
class Layout:
    """How many of each platform process to run."""

    apis: int = 1
    workers: int = 1
    schedulers: int = 1

    def members(self) -> list[tuple[str, str]]:
        """(name, module) of each process, in the order they start: api, api2, …, worker1,
        worker2, …, scheduler, scheduler2, …"""
        return (
            [(numbered("api", i), "api") for i in range(self.apis)]
            + [(f"worker{i + 1}", "worker") for i in range(self.workers)]
            + [(numbered("scheduler", i), "scheduler") for i in range(self.schedulers)]
        )

    def describe(self) -> str:
        return (
            f"{self.apis} API process{'es' if self.apis != 1 else ''}, {self.workers}"
            f" worker{'s' if self.workers != 1 else ''}, {self.schedulers}"
            f" scheduler{'s' if self.schedulers != 1 else ''}"
        )


def numbered(base: str, index: int) -> str:
    """The first of a kind by its kind's name, the next ones numbered from 2 (api, api2)."""
    return base if index == 0 else f"{base}{index + 1}"


def start_process(name: str, module: str, env: dict[str, str], workdir: Path) -> Process:
    """`python -m <module>` with `env`, its output appended to `<workdir>/<name>.log`."""
    process = Process(name, [sys.executable, "-m", module], env, workdir / f"{name}.log")
    process.start()
    return process


def start_layout(
    layout: Layout, env: dict[str, str], workdir: Path, api_ports: Sequence[int]
) -> dict[str, Process]:
    """Start every process of `layout`, the Nth API process on `api_ports[N]` (HOST and PORT
    set for it); returns them by name, in the order they started."""
    if len(api_ports) < layout.apis:
        raise ValueError(f"{layout.apis} API processes need as many ports, not {len(api_ports)}")
    started: dict[str, Process] = {}
    apis = iter(api_ports)
    for name, module in layout.members():
        own = env | ({"HOST": "127.0.0.1", "PORT": str(next(apis))} if module == "api" else {})
        started[name] = start_process(name, module, own, workdir)
    return started
