"""JSON logs, one object per line, with the request id of the work being done.

The API sets the request id (`X-Request-ID`, or one it makes) for each request; a call keeps the
id of the request that created it, and the workers log its transitions and upload under it.
Nothing here logs headers or query strings, so keys and `access_token` never reach a log.

Lines leave through a writer thread of their own, many per write: a process never waits on its
stdout (a slow terminal, a full pipe), and a thousand lines cost a few writes, not a thousand.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord attributes that are not extra fields of our own.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# The formatted second the last line was written in: lines of one second share it.
_second: tuple[int, str] = (-1, "")


def timestamp(created: float) -> str:
    """A log line's time: ISO 8601 in UTC with milliseconds (2026-12-05T16:07:25.299+00:00)."""
    global _second
    second = int(created)
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((created - second) * 1000):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "process": self._process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class LineWriter:
    """Lines for a file descriptor, written by a thread of their own every FLUSH_INTERVAL_S (or
    as soon as HIGH_WATER lines wait), as many per write as have come in meanwhile: the thread
    wakes a few dozen times a second, not once per line (each wake takes the GIL from a busy
    event loop). `put` never blocks: when the descriptor cannot keep up and `max_pending` lines
    wait, further lines are dropped and counted, and a line saying how many follows."""

    FLUSH_INTERVAL_S = 0.05
    HIGH_WATER = 1_000

    def __init__(self, fd: int, max_pending: int = 100_000) -> None:
        self._fd = fd
        self._max_pending = max_pending
        self._pending: deque[bytes] = deque()
        self._dropped = 0
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> None:
        """Queue one line (without its newline)."""
        if len(self._pending) >= self._max_pending:
            self._dropped += 1
            return
        self._pending.append(line)
        if len(self._pending) >= self.HIGH_WATER and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.FLUSH_INTERVAL_S)
            self._wake.clear()
            self._idle.clear()
            self._write_pending()
            self._idle.set()
            if self._closing:
                return

    def _write_pending(self) -> None:
        while self._pending or self._dropped:
            lines = [self._pending.popleft() for _ in range(len(self._pending))]
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                lines.append(_dropped_line(dropped))
            data = b"\n".join(lines) + b"\n"
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError:
                return  # stdout closed: nothing left to say it on

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (at most `timeout_s`) until what was put so far is written."""
        deadline = time.monotonic() + timeout_s
        while (
            self._pending or self._dropped or not self._idle.is_set()
        ) and time.monotonic() < deadline:
            self._wake.set()
            self._idle.wait(0.01)

    def close(self, timeout_s: float = 2.0) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)


def _dropped_line(count: int) -> bytes:
    return orjson.dumps(
        {
            "ts": timestamp(time.time()),
            "level": "warning",
            "logger": "logs",
            "msg": f"dropped {count} log lines: stdout did not keep up",
            "dropped": count,
        }
    )


class LineWriterHandler(logging.Handler):
    """Formats a record in the caller's thread and hands the line to a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record).encode())
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


# The process's writer and name, once setup_logging made them (the access log uses them).
_writer: LineWriter | None = None
_process = ""


def write_info(logger: str, msg: str, fields: dict[str, Any]) -> None:
    """Write one INFO line as the formatter would, bypassing the logging machinery (its
    records, locks and stack walks): for a line written on every request."""
    if _writer is None:  # logging not set up (a test's app): the usual way
        logging.getLogger(logger).info(msg, extra=fields)
        return
    entry: dict[str, Any] = {
        "ts": timestamp(time.time()),
        "level": "info",
        "process": _process,
        "logger": logger,
        "msg": msg,
    }
    current = request_id.get()
    if current is not None:
        entry["request_id"] = current
    entry.update(fields)
    _writer.put(orjson.dumps(entry, default=str))


class RedactParserErrors(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses (a bad header, an overlong line) with the
    offending line quoted, which can hold a key or an access_token: keep only that it happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiohttp.server" and record.exc_info:
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "error"
            record.msg = "refused a request the HTTP parser could not read (%s)"
            record.args = (kind,)
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(process: str, level: str) -> None:
    """Send every logger's records to stdout as JSON lines, through the process's writer."""
    global _writer
    sys.stdout.flush()
    if _writer is None:
        _writer = LineWriter(sys.stdout.fileno())
        atexit.register(_writer.close)
    handler = LineWriterHandler(_writer)
    handler.setFormatter(JsonFormatter(process))
    handler.addFilter(RedactParserErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    global _process
    _process = process
