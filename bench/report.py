"""The benchmark's results: one table with a row per figure and configuration (each beside its
target and its bare ceiling), and the JSON record of the whole run."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from rich.table import Table

from bench.targets import TARGETS, Figure


def fmt(value: float | None, unit: str) -> str:
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


def result_table(
    figures: list[Figure], ceilings: dict[str, dict[str, dict[str, Any]]], quick: bool
) -> Table:
    """Figures in the order of bench.targets.TARGETS, the configurations of each together;
    then the bare ceilings each configuration's figures were read against."""
    table = Table(title="mock-comms benchmark" + (" (--quick: short runs)" if quick else ""))
    for name, justify in (
        ("figure", "left"),
        ("configuration", "left"),
        ("value", "right"),
        ("target", "right"),
        ("vs bare ceiling", "right"),
        ("result", "left"),
        ("note", "left"),
    ):
        style = "dim" if name == "note" else None
        table.add_column(name, justify=justify, style=style)  # type: ignore[arg-type]
    order = {key: i for i, key in enumerate(TARGETS)}
    shown_key = None
    for f in sorted(figures, key=lambda f: order[f.key]):
        target = f.target
        bound = ("≥ " if target.kind == "min" else "≤ ") + fmt(target.bound, target.unit)
        share = "—"
        if f.vs_ceiling is not None:
            share = (
                f"{f.vs_ceiling:.0%} of {fmt(f.ceiling, target.unit)}"
                if target.unit == "/s"
                else f"×{f.vs_ceiling:.1f} of {fmt(f.ceiling, target.unit)}"
            )
        verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[dim]—[/dim]"}[
            f.passed
        ]
        if f.passed is None:
            verdict = "[yellow]not judged[/yellow]"
        note = f.note + (f"; {f.errors} errors" if f.errors else "")
        label = target.label if f.key != shown_key else ""
        shown_key = f.key
        value = fmt(f.value, target.unit)
        table.add_row(label, f.configuration, value, bound, share, verdict, note)
    for configuration, named in ceilings.items():
        for name, info in named.items():
            if "ok_per_s" in info and "offered_per_s" not in info:
                value = f"{info['ok_per_s']:,.0f}/s"
            else:
                value = f"p99 {info['latency_ms']['p99']:.1f} ms"
            table.add_row(f"[dim]bare ceiling: {name}[/dim]", configuration, value)
    return table


def clean(value: Any) -> Any:
    """JSON has no NaN or infinity: both become null."""
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
