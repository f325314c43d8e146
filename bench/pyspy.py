"""`python -m bench --profile`: py-spy samples the platform's processes while a scenario runs,
keeps the collapsed stacks, and names the frames where the CPU went."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from devstack.paths import ROOT

# Frames of the platform's own code (after _short), for the inclusive view.
PLATFORM = ("api/", "calls/", "core/", "db/", "worker/", "scheduler/")
# Where a thread waits rather than works (py-spy cannot always tell).
IDLE = ("EpollSelector.select", "Condition.wait", "_worker (concurrent/futures/thread.py")

# A frame as py-spy writes it: "function (path/to/file.py:line)".
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """py-spy from the venv or PATH (`.venv/bin/pip install py-spy`), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy on each of some processes, from start() until stop()."""

    def __init__(self, pids: dict[str, int], out_dir: Path, label: str) -> None:
        self.pids = pids
        self.out_dir = out_dir
        self.label = label
        self._running: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}

    async def start(self) -> None:
        binary = py_spy()
        if binary is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"{self.label}-{name}.txt"
            process = await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            self._running[name] = (process, out)

    async def stop(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        """Stop sampling; for each process the top frames by own time and, among the
        platform's own modules, by inclusive time (in % of samples)."""
        tops: dict[str, dict[str, list[tuple[str, float]]]] = {}
        for name, (process, out) in self._running.items():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if out.exists():
                text = out.read_text()
                tops[name] = {
                    "own": top_frames(text),
                    "platform": top_inclusive(text, PLATFORM, count=10),
                }
        self._running.clear()
        return tops


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.split(f"{ROOT}/", 1)[-1]
    line = match.group("line")
    return f"{match.group('func')} ({path}{':' + line if line else ''})"


def _busy_stacks(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """Each stack of a collapsed profile (its frames, root first) with its samples; stacks
    that wait rather than work are left out."""
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = stack.split(";")
        if _short(frames[-1]).startswith(IDLE):
            continue
        yield frames, int(samples)


def top_frames(collapsed: str, count: int = 10) -> list[tuple[str, float]]:
    """The frames with the most samples of their own (the leaf of each stack)."""
    own: Counter[str] = Counter()
    total = 0
    for frames, n in _busy_stacks(collapsed):
        total += n
        own[_short(frames[-1])] += n
    if not total:
        return []
    return [(frame, round(n / total * 100, 1)) for frame, n in own.most_common(count)]


def top_inclusive(
    collapsed: str, prefix: str | tuple[str, ...] = "", count: int = 15
) -> list[tuple[str, float]]:
    """Frames by samples anywhere in the stack (each counted once per stack), among those
    whose file starts with `prefix`; waiting stacks are left out."""
    seen: Counter[str] = Counter()
    total = 0
    for frames, n in _busy_stacks(collapsed):
        total += n
        for frame in {_short(f) for f in frames}:
            if frame.partition(" (")[2].startswith(prefix):
                seen[frame] += n
    if not total:
        return []
    return [(frame, round(n / total * 100, 1)) for frame, n in seen.most_common(count)]
