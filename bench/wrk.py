"""Closed-loop throughput and latency with wrk: Lua scripts for each request shape, a run with a
progress callback, and the figures read back from wrk's own summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARK = "BENCH_JSON "

# wrk calls done() once at the end with its own statistics; printing them as JSON is sturdier
# than reading its text (which the result keeps as well, for the record).
_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency.max, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def _lua_string(text: str) -> str:
    level = "=" * 3
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def lua_script(
    method: str,
    path: str | Sequence[str],
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    rotate: tuple[str, Sequence[str]] | None = None,
) -> str:
    """A wrk script sending `method` to `path`, or to each of `paths` in turn (each thread
    starting at its own place in the list); `rotate` = (header, values) gives each request the
    next of the values (a load spread over several API keys)."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in (headers or {}).items():
        # A space after "[": "[[" would open a Lua long string.
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    if isinstance(path, str) and rotate is None:
        lines.append(f"wrk.path = {_lua_string(path)}")
        lines.append(_DONE)
        return "\n".join(lines)
    paths = [path] if isinstance(path, str) else list(path)
    lines.append("local paths = {")
    lines.extend(f"  {_lua_string(p)}," for p in paths)
    lines.append("}")
    rotating = ""
    if rotate is not None:
        name, values = rotate
        lines.append("local rotating = {")
        lines.extend(f"  {_lua_string(v)}," for v in values)
        lines.append("}")
        rotating = f"  wrk.headers[ {_lua_string(name)} ] = rotating[(i % #rotating) + 1]\n"
    lines.append(
        """
local threads_made = 0
setup = function(thread)
  thread:set("first", threads_made * 7919)
  threads_made = threads_made + 1
end
local i = 0
init = function(args) i = first or 0 end
request = function()
  i = i + 1
"""
        + rotating
        + """  return wrk.format(nil, paths[(i % #paths) + 1])
end
"""
    )
    lines.append(_DONE)
    return "\n".join(lines)


@dataclass
class WrkResult:
    connections: int
    threads: int
    duration_s: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    raw: str = field(repr=False, default="")

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_per_s(self) -> float:
        """2xx answers per second: what the figures use (an error answers nothing)."""
        ok = max(0, self.requests - self.non_2xx - self.socket_errors.get("timeout", 0))
        return ok / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "threads": self.threads,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "requests_per_s": round(self.requests_per_s, 1),
            "ok_per_s": round(self.ok_per_s, 1),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "latency_ms": self.latency_ms,
        }


def parse(raw: str, connections: int, threads: int) -> WrkResult:
    """wrk's figures from the line our done() prints; no such line means the script failed."""
    for line in raw.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            return WrkResult(
                connections=connections,
                threads=threads,
                duration_s=data["duration_us"] / 1e6,
                requests=data["requests"],
                non_2xx=data["status"],
                socket_errors={k: data[k] for k in ("connect", "read", "write", "timeout")},
                latency_ms={
                    "mean": round(data["mean_us"] / 1000, 3),
                    "p50": round(data["p50_us"] / 1000, 3),
                    "p75": round(data["p75_us"] / 1000, 3),
                    "p90": round(data["p90_us"] / 1000, 3),
                    "p99": round(data["p99_us"] / 1000, 3),
                    "p999": round(data["p999_us"] / 1000, 3),
                    "max": round(data["max_us"] / 1000, 3),
                },
                raw=raw,
            )
    raise RuntimeError("wrk printed no summary (did its script fail?):\n" + raw)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return found


async def run(
    url: str,
    script: str,
    script_dir: Path,
    name: str,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    on_tick: Callable[[float], None] | None = None,
    timeout_s: float = 10,
) -> WrkResult:
    """Run wrk against `url` (its origin; the script sets the paths) for `duration_s`."""
    path = script_dir / f"{name}.lua"
    path.write_text(script)
    process = await asyncio.create_subprocess_exec(
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(path),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    started = time.monotonic()
    try:
        reader = asyncio.ensure_future(process.communicate())
        while not reader.done():
            await asyncio.wait({reader}, timeout=0.25)
            if on_tick is not None:
                on_tick(time.monotonic() - started)
        out, _ = reader.result()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await process.wait()
        raise
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited {process.returncode}:\n{text}")
    return parse(text, connections, threads)
