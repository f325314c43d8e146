"""Benchmark of the platform against the figures of issue 8, each also as a share of a bare
aiohttp app doing the same store round trips on the same machine in the same run.

    scripts/bench [--quick] [--only SCENARIO,...] [--json out.json] [--duration S]
    scripts/bench --base-url http://host:port --key KEY [--api-pid PID]

Without --base-url it starts its own system: a fresh database `mc_bench_<random>` on the
PostgreSQL server of DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
migrated and dropped at the end; a private redis-server on a free port; one API process, N
workers and one scheduler (lifecycle time-compressed, logs at WARNING); and keys with limits
that never refuse. It stops all of it at the end, also on Ctrl-C.

With --base-url it drives the same client scenarios against any implementation of the API
(checking calls through the API instead of PostgreSQL); the bare ceiling still runs locally
when a PostgreSQL server answers at DATABASE_URL.

Scenarios (in order): post_calls, post_latency, open_loop, get_call, post_events, e2e, limits,
sse. Before each, it waits for the calls of the last one to finish. Throughput comes from wrk
(2 threads), open-loop latency from a client that sends at a fixed rate and times each request
from its intended send time. What the runs made is checked as they go (every call completed
exactly once with its recording and an unbroken history, nothing lost, limits held), and a
fault counts against the figure. Each figure is also given as a share of the bare ceiling
(scripts/bench_bare.py: the same round trips to PostgreSQL and Redis, no logic), measured right
before it.

Logs and wrk scripts go to .run/bench/<time>/; the JSON (every figure, the machine, the
settings, CPU per process, Redis commands per second) to --json or .run/bench/<time>/bench.json.
Exit status: 0 every judged figure passed, 2 some did not, 1 a scenario failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import signal
import sys
import time
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
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scenarios import SCENARIOS, Bench, Figure
from bench_system import ROOT, System, machine_info, raise_open_files_limit, redact


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 s per wrk scenario, end to end 100/s for 5 s, 500 streams",
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}"
    )
    parser.add_argument("--base-url", help="measure a running platform instead of starting one")
    parser.add_argument("--key", help="API key for --base-url (its limits must allow the load)")
    parser.add_argument("--api-pid", type=int, help="with --base-url: the API's pid, for RSS")
    parser.add_argument("--json", type=Path, help="where to write every figure as JSON")
    parser.add_argument(
        "--duration", type=float, help="seconds per wrk and open-loop scenario (30; quick 3)"
    )
    parser.add_argument("--open-loop-rate", type=float, default=1000, help="requests/s (1000)")
    parser.add_argument("--e2e-rate", type=float, help="calls/s end to end (500; quick 100)")
    parser.add_argument("--e2e-duration", type=float, help="seconds end to end (60; quick 5)")
    parser.add_argument("--sse-streams", type=int, help="streams to open (10000; quick 500)")
    parser.add_argument("--sse-rate", type=float, help="updates/s posted to them (1000; quick 500)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers to start (2)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the started processes (repeatable), e.g. --set TIME_SCALE=0.1",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare ceiling runs")
    parser.add_argument(
        "--lifecycle-during",
        action="store_true",
        help="keep the workers running during the POST /calls figures (by default they are held"
        " with SIGSTOP, so the figure is the API's own, and work the calls off afterwards)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the API, a worker and the scheduler during each measurement (needs"
        " `.venv/bin/pip install py-spy`; sampling takes CPU, so figures drop)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, help="seconds to wait for calls to finish (120; quick 60)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3 if quick else 30)
    args.e2e_rate = args.e2e_rate or (100 if quick else 500)
    args.e2e_duration = args.e2e_duration or (5 if quick else 60)
    args.sse_streams = args.sse_streams or (500 if quick else 10_000)
    args.sse_rate = args.sse_rate or (500 if quick else 1000)
    args.drain_timeout = args.drain_timeout or (60 if quick else 120)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from: {', '.join(SCENARIOS)}"
        )
    args.scenarios = chosen or list(SCENARIOS)
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


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return f"> 10 s ({unit})"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.0f} {unit}" if unit != "problems" else f"{value:,.0f}"


def result_table(figures: list[Figure], ceilings: dict[str, dict[str, Any]], quick: bool) -> Table:
    table = Table(title="mock-comms benchmark" + (" (--quick: short runs)" if quick else ""))
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("vs bare ceiling", justify="right")
    table.add_column("result")
    table.add_column("note", style="dim")
    for f in figures:
        target = "—"
        if f.target is not None:
            target = ("≥ " if f.kind == "min" else "≤ ") + _fmt(f.target, f.unit)
        share = "—"
        if f.vs_ceiling is not None:
            share = (
                f"{f.vs_ceiling:.0%} of {_fmt(f.ceiling, f.unit)}"
                if f.unit == "/s"
                else f"×{f.vs_ceiling:.1f} of {_fmt(f.ceiling, f.unit)}"
            )
        verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[dim]—[/dim]"}[
            f.passed
        ]
        if f.passed is None and f.target is not None:
            verdict = "[yellow]not judged[/yellow]"
        note = f.note + (f"; {f.errors} errors" if f.errors else "")
        table.add_row(f.label, _fmt(f.value, f.unit), target, share, verdict, note)
    for name, info in ceilings.items():
        if "ok_per_s" in info and "offered_per_s" not in info:
            value = f"{info['ok_per_s']:,.0f}/s"
        else:
            value = f"p99 {info['latency_ms']['p99']:.1f} ms"
        table.add_row(f"[dim]bare ceiling: {name}[/dim]", value, "", "", "", "")
    return table


async def run(args: argparse.Namespace, console: Console) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / ".run" / "bench" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    nofile = raise_open_files_limit()
    if "sse" in args.scenarios and nofile < args.sse_streams + 1000:
        console.print(
            f"[yellow]open files limit is {nofile}: fewer than {args.sse_streams} streams can"
            " open (raise `ulimit -n`)[/yellow]"
        )
    machine = machine_info()
    started_at = datetime.now(UTC)
    progress = make_progress(console)
    system: System | None = None
    ceiling: System | None = None
    bench: Bench | None = None
    failure: str | None = None
    try:
        with progress:
            say = lambda text: progress.console.print(f"[dim]{text}[/dim]")  # noqa: E731
            if args.base_url:
                base_url = args.base_url.rstrip("/")
                if not args.no_ceiling:
                    ceiling = System(workdir, with_platform=False)
                    try:
                        await ceiling.start(say)
                    except Exception as exc:
                        console.print(f"[yellow]no bare ceiling (no PostgreSQL?): {exc}[/yellow]")
                        await ceiling.stop()
                        ceiling = None
            else:
                system = System(workdir, args.overrides, workers=args.workers)
                atexit.register(system.kill_all)
                await system.start(say)
                base_url = system.base_url
                ceiling = None if args.no_ceiling else system
            if ceiling is not None:
                await ceiling.start_bare()
            bench = Bench(
                opts=args,
                console=console,
                progress=progress,
                base_url=base_url,
                workdir=workdir,
                system=system,
                ceiling=ceiling,
                shared_key=args.key,
            )
            for name in args.scenarios:
                console.rule(f"[bold]{name}[/bold]: {SCENARIOS[name].__doc__.splitlines()[0]}")
                # Start each scenario on a quiet platform: the calls of the last one finished.
                await bench.settle(name, args.drain_timeout)
                t0 = time.monotonic()
                try:
                    await SCENARIOS[name](bench)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    failure = f"{name}: {type(exc).__name__}: {exc}"
                    console.print(f"[red]scenario {name} failed: {exc!r}[/red]")
                    bench.detail(name)["failed"] = repr(exc)
                    if system is not None:
                        console.print(system.logs(15))
                bench.detail(name)["wall_s"] = round(time.monotonic() - t0, 2)
        versions = {}
        for source in (system, ceiling):
            if source is not None:
                versions |= await source.versions()
    finally:
        for source in {id(s): s for s in (system, ceiling) if s is not None}.values():
            with contextlib.suppress(Exception):
                await source.stop()
    if bench is None:
        return 1

    console.print(result_table(bench.figures, bench.ceilings, args.quick))
    machine["loadavg_at_end"] = list(os.getloadavg())
    machine |= versions
    report = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "mode": "quick" if args.quick else "full",
        "target": args.base_url or "self-started",
        "machine": machine,
        "options": {
            k: v
            for k, v in vars(args).items()
            if k not in ("key", "json", "set") and not k.startswith("_")
        }
        | {"json": str(args.json) if args.json else None},
        "settings": (system.settings if system else {}),
        "workers": args.workers if system else None,
        "database_server": redact(system.server_dsn) if system else None,
        "figures": {f.key: f.as_json() for f in bench.figures},
        "ceiling": bench.ceilings,
        "scenarios": bench.details,
        "logs": str(workdir),
    }
    out = args.json or workdir / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(report), indent=2, default=_json_default) + "\n")
    console.print(f"figures written to {out}; logs in {workdir}")
    if failure:
        console.print(f"[red]a scenario failed: {failure}[/red]")
        return 1
    judged = [f.passed for f in bench.figures if f.passed is not None]
    return 0 if all(judged) else 2


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: both become null."""
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # a log file or a pipe: room for the table
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
