"""Benchmark of the platform against the figures of issue 8, each also as a share of a bare
aiohttp app doing the same store round trips on the same machine in the same run.

    python -m bench [--quick] [--only SCENARIO,...] [--configs tuned,default] [--json out.json]
    python -m bench --base-url http://host:port --key KEY [--api-pid PID]
    (scripts/bench runs it with the project's .venv)

Without --base-url it measures each configuration in turn (bench/configurations.py), on
stores of its own: a fresh database `mc_bench_<random>` on the PostgreSQL server of
DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres), migrated and dropped at
the end, and a private redis-server on a free port.

- tuned: the bench starts one API process, N workers and one scheduler itself, with the
  lifecycle time-compressed (TIME_SCALE 0.05), logs at WARNING, the per-process caps raised by
  settings, and the workers held (SIGSTOP) during the POST /calls figures.
- default: scripts/run's runner (devstack/runner.py, the Procfile's web, worker, scheduler) with
  every setting at its default (LOG_LEVEL INFO, one worker), the workers running throughout; limits
  raised only through the keys, and a load one key's caps would refuse spread over keys.

Every figure is labelled with its configuration. Keys are made per scenario with limits that
never refuse. Everything started is stopped at the end, also on Ctrl-C.

With --base-url it drives the same client scenarios against any implementation of the API
(checking calls through the API instead of PostgreSQL); the bare ceiling still runs locally
when a PostgreSQL server answers at DATABASE_URL.

Scenarios (in order): post_calls, post_latency, open_loop, get_call, post_events, e2e, knee
(end to end at rising rates until one is not held), limits, sse, callbacks (status callbacks to
a receiver of the bench's own: on our own platform only), failover (issue 20's layout: two
API processes, three workers and two schedulers on the configuration's stores and settings,
calls at 100/s on both APIs while each scheduler is SIGKILLed in turn; on our own platform only),
purge (the request figures while a million calls past their retention are deleted). Before
each, it waits for the calls of the last one to finish. Throughput comes from wrk (2 threads),
open-loop latency from a client that sends at a fixed rate and times each request from its
intended send time. What the runs made is checked as they go (every call completed exactly once
with its recording and an unbroken history, nothing lost, limits held), and a fault counts
against the figure. Each figure is also
given as a share of the bare ceiling (bench/bare.py: the same round trips to PostgreSQL and
Redis, no logic), measured right before it on the same configuration's stores.

Logs and wrk scripts go to .run/bench/<time>/<configuration>/; the JSON (every figure, the
machine, each configuration's settings, CPU per process, Redis commands per second) to --json
or .run/bench/<time>/bench.json. Exit status: 0 every judged figure passed, 2 some did not,
1 a scenario failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bench.configurations import DEFAULT, EXTERNAL, Configuration, tuned
from bench.procfs import machine_info, raise_open_files_limit
from bench.report import clean, json_default, result_table
from bench.scenarios import SCENARIOS
from bench.session import Bench
from bench.system import System
from bench.targets import FULL, QUICK, Load
from devstack.paths import ROOT
from devstack.stores import redact

CONFIGURATIONS = ("tuned", "default")
# The options that change the load: (option, field of bench.targets.Load, type, what it is).
LOAD_OPTIONS = (
    ("--duration", "duration_s", float, "seconds per wrk and open-loop scenario"),
    ("--open-loop-rate", "open_loop_rate", float, "POST /calls per second, open loop"),
    ("--e2e-rate", "e2e_rate", float, "calls per second end to end"),
    ("--e2e-duration", "e2e_duration_s", float, "seconds end to end"),
    ("--sse-streams", "sse_streams", int, "streams to open"),
    ("--sse-rate", "sse_rate", float, "updates per second posted to them"),
    ("--drain-timeout", "drain_timeout_s", float, "seconds to wait for calls to finish"),
    ("--callbacks-rate", "callbacks_rate", float, "calls per second with status callbacks"),
    ("--failover-rate", "failover_rate", float, "calls per second while schedulers are killed"),
    ("--failover-duration", "failover_duration_s", float, "seconds of the failover run"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK.duration_s:g} s per wrk scenario, end to end"
        f" {QUICK.e2e_rate:g}/s for {QUICK.e2e_duration_s:g} s, {QUICK.sse_streams} streams",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGURATIONS),
        help=f"comma-separated configurations to measure, in turn: {','.join(CONFIGURATIONS)}"
        " (both by default)",
    )
    parser.add_argument("--base-url", help="measure a running platform instead of starting one")
    parser.add_argument("--key", help="API key for --base-url (its limits must allow the load)")
    parser.add_argument("--api-pid", type=int, help="with --base-url: the API's pid, for RSS")
    parser.add_argument("--json", type=Path, help="where to write every figure as JSON")
    for option, field, kind, what in LOAD_OPTIONS:
        full, quick = getattr(FULL, field), getattr(QUICK, field)
        parser.add_argument(
            option, type=kind, dest=field, help=f"{what} ({full:g}; quick {quick:g})"
        )
    parser.add_argument("--workers", type=int, default=2, help="tuned: RQ workers to start (2)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="tuned: a setting for the started processes (repeatable), e.g. --set TIME_SCALE=0.1",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare ceiling runs")
    parser.add_argument(
        "--lifecycle-during",
        action="store_true",
        help="tuned: keep the workers running during the POST /calls figures (by default they"
        " are held with SIGSTOP, so the figure is the API's own, and work the calls off after)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the API, a worker and the scheduler during each measurement (needs"
        " `.venv/bin/pip install py-spy`; sampling takes CPU, so figures drop)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from: {', '.join(SCENARIOS)}"
        )
    args.scenarios = chosen or list(SCENARIOS)
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    if not configs or any(name not in CONFIGURATIONS for name in configs):
        parser.error(f"--configs takes names from: {', '.join(CONFIGURATIONS)}")
    args.configurations = configs
    if args.base_url and not args.key:
        parser.error("--base-url needs --key")
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set takes NAME=VALUE, not {item!r}")
        overrides[name.strip().upper()] = value
    args.overrides = overrides
    return args


def load_of(args: argparse.Namespace) -> Load:
    """The load of this run: --quick's or the issue's, with any option given on top."""
    given = {field: getattr(args, field) for _, field, _, _ in LOAD_OPTIONS}
    base = QUICK if args.quick else FULL
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v})


def configurations_of(args: argparse.Namespace) -> list[Configuration]:
    if args.base_url:
        return [EXTERNAL]
    made = {
        "tuned": tuned(args.overrides, args.workers, args.lifecycle_during),
        "default": DEFAULT,
    }
    return [made[name] for name in args.configurations]


def make_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
        refresh_per_second=4,
    )


@dataclass
class Measured:
    """One configuration's pass over the scenarios."""

    configuration: Configuration
    bench: Bench | None = None
    failure: str | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    database_server: str | None = None

    def as_json(self) -> dict[str, Any]:
        bench = self.bench
        return {
            "description": self.configuration.describe(),
            "runner": self.configuration.runner,
            "settings": self.configuration.settings,
            "workers": self.configuration.workers,
            "workers_held_during_post_calls": self.configuration.hold_workers,
            "database_server": self.database_server,
            "figures": {f.key: f.as_json() for f in bench.figures} if bench else {},
            "ceiling": bench.ceilings if bench else {},
            "scenarios": bench.details if bench else {},
            "failure": self.failure,
        }


async def measure(
    args: argparse.Namespace,
    load: Load,
    configuration: Configuration,
    console: Console,
    workdir: Path,
) -> Measured:
    """Start what `configuration` runs, take every chosen scenario on it, stop it."""
    measured = Measured(configuration)
    progress = make_progress(console)
    system: System | None = None
    ceiling: System | None = None
    try:
        with progress:
            say = lambda text: progress.console.print(f"[dim]{text}[/dim]")  # noqa: E731
            if args.base_url:
                base_url = args.base_url.rstrip("/")
                if not args.no_ceiling:
                    ceiling = System(workdir, configuration, with_platform=False)
                    try:
                        await ceiling.start(say)
                    except Exception as exc:
                        console.print(f"[yellow]no bare ceiling (no PostgreSQL?): {exc}[/yellow]")
                        await ceiling.stop()
                        ceiling = None
            else:
                system = System(workdir, configuration)
                atexit.register(system.kill_all)
                measured.database_server = redact(system.server_dsn)
                await system.start(say)
                base_url = system.base_url
                ceiling = None if args.no_ceiling else system
            if ceiling is not None:
                await ceiling.start_bare()
            bench = measured.bench = Bench(
                opts=args,
                load=load,
                configuration=configuration,
                console=console,
                progress=progress,
                base_url=base_url,
                workdir=workdir,
                system=system,
                ceiling=ceiling,
                shared_key=args.key,
            )
            for name in args.scenarios:
                title = SCENARIOS[name].__doc__.splitlines()[0]
                console.rule(f"[bold]{name}[/bold] ({configuration.name}): {title}")
                # Start each scenario on a quiet platform: the calls of the last one finished.
                await bench.settle(name, load.drain_timeout_s)
                t0 = time.monotonic()
                try:
                    await SCENARIOS[name](bench)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    measured.failure = f"{configuration.name} {name}: {type(exc).__name__}: {exc}"
                    console.print(f"[red]scenario {name} failed: {exc!r}[/red]")
                    bench.detail(name)["failed"] = repr(exc)
                    if system is not None:
                        console.print(system.logs(15))
                bench.detail(name)["wall_s"] = round(time.monotonic() - t0, 2)
        for source in (system, ceiling):
            if source is not None:
                measured.versions |= await source.versions()
    finally:
        for source in {id(s): s for s in (system, ceiling) if s is not None}.values():
            with contextlib.suppress(Exception):
                await source.stop()
    return measured


async def run(args: argparse.Namespace, console: Console) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / ".run" / "bench" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    load = load_of(args)
    nofile = raise_open_files_limit()
    if "sse" in args.scenarios and nofile < load.sse_streams + 1000:
        console.print(
            f"[yellow]open files limit is {nofile}: fewer than {load.sse_streams} streams can"
            " open (raise `ulimit -n`)[/yellow]"
        )
    if (ROOT / ".env").exists() and not args.base_url:
        console.print(
            "[yellow].env exists: the platform's processes read it, as they would under"
            " scripts/run, so each configuration runs with its settings too[/yellow]"
        )
    machine = machine_info()
    started_at = datetime.now(UTC)
    passes = []
    for configuration in configurations_of(args):
        try:
            measured = await measure(
                args, load, configuration, console, workdir / configuration.name
            )
        except Exception as exc:  # it could not start: the other configurations still run
            console.print(f"[red]{configuration.name} could not run: {exc}[/red]")
            console.print_exception()
            measured = Measured(configuration, failure=f"{configuration.name}: {exc}")
        passes.append(measured)
    figures = [f for p in passes if p.bench for f in p.bench.figures]
    ceilings = {p.configuration.name: p.bench.ceilings for p in passes if p.bench}
    console.print(result_table(figures, ceilings, args.quick))
    machine["loadavg_at_end"] = list(os.getloadavg())
    for p in passes:
        machine |= p.versions
    report = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "mode": "quick" if args.quick else "full",
        "target": args.base_url or "self-started",
        "machine": machine,
        "load": dataclasses.asdict(load),
        "options": {
            k: v
            for k, v in vars(args).items()
            if k not in ("key", "json", "set") and not k.startswith("_")
        }
        | {"json": str(args.json) if args.json else None},
        "configurations": {p.configuration.name: p.as_json() for p in passes},
        "logs": str(workdir),
    }
    out = args.json or workdir / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean(report), indent=2, default=json_default) + "\n")
    console.print(f"figures written to {out}; logs in {workdir}")
    failures = [p.failure for p in passes if p.failure or p.bench is None]
    if failures:
        for failure in failures:
            console.print(f"[red]a scenario failed: {failure}[/red]")
        return 1
    judged = [f.passed for f in figures if f.passed is not None]
    return 0 if all(judged) else 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file or a pipe: room for the table
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        main_task: list[asyncio.Task[int]] = []

        async def guarded() -> int:
            main_task.append(asyncio.current_task())  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, main_task[0].cancel)
            return await run(args, console)

        try:
            return runner.run(guarded())
        except (KeyboardInterrupt, asyncio.CancelledError):
            console.print("[yellow]interrupted: everything this run started is stopped[/yellow]")
            return 130


if __name__ == "__main__":
    sys.exit(main())
