"""Log lines leave through a writer thread, many per write: the caller never waits on its stdout,
a full pipe costs lines (counted and said), never a blocked event loop."""

from __future__ import annotations

import logging
import os
import threading
import time

import orjson
import pytest

from core import logs
from core.logs import JsonFormatter, LineWriter, LineWriterHandler


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_every_line_is_written_in_order_in_few_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    writes = []
    real_write = os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(logs.os, "write", counted)
    writer = LineWriter(write_end)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(read_all(read_end)))
    reader.start()

    for i in range(10_000):
        writer.put(f"line {i}".encode())
    writer.flush()
    writer.close()
    os.close(write_end)
    reader.join(5)

    assert out[0].split(b"\n")[:-1] == [f"line {i}".encode() for i in range(10_000)]
    assert len(writes) < 1_000  # batched, not one write per line


def test_a_stdout_that_does_not_drain_costs_lines_not_a_blocked_caller() -> None:
    """Nobody reads the pipe: its buffer fills, the writer thread blocks in write, and `put`
    keeps returning at once, dropping past its bound; once the pipe drains the writer says
    how many it dropped."""
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end, max_pending=1_000)
    line = b"x" * 1_000

    started = time.monotonic()
    for _ in range(5_000):  # ~5 MB against a pipe of 64 KB and 1,000 pending lines
        writer.put(line)
    assert time.monotonic() - started < 2  # never waits on the pipe (it would wait for ever)

    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(read_all(read_end)))
    reader.start()
    writer.flush(5)
    writer.put(b'{"msg": "after"}')
    writer.flush(5)
    writer.close()
    os.close(write_end)
    reader.join(5)
    lines = out[0].split(b"\n")[:-1]
    notes = [orjson.loads(x) for x in lines if x.startswith(b"{") and b"dropped" in x]
    assert len(notes) == 1
    kept = sum(1 for x in lines if x == line)
    assert notes[0]["dropped"] == 5_000 - kept > 0
    assert notes[0]["level"] == "warning"
    assert b'{"msg": "after"}' in lines


def test_a_record_through_the_handler_is_the_formatter_s_json_line() -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end)
    handler = LineWriterHandler(writer)
    handler.setFormatter(JsonFormatter("worker"))
    record = logging.LogRecord("calls.transitions", logging.INFO, __file__, 1, "moved", None, None)
    record.call_id = "c-1"

    handler.emit(record)
    writer.flush()
    writer.close()
    os.close(write_end)

    entry = orjson.loads(read_all(read_end))
    assert entry["process"] == "worker" and entry["msg"] == "moved"
    assert entry["call_id"] == "c-1" and entry["level"] == "info"


def test_an_access_line_written_directly_has_the_formatter_s_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end)
    monkeypatch.setattr(logs, "_writer", writer)
    monkeypatch.setattr(logs, "_process", "api")
    token = logs.request_id.set("req-7")
    try:
        logs.write_info("aiohttp.access", "request", {"method": "GET", "status": 200})
    finally:
        logs.request_id.reset(token)
    writer.flush()
    writer.close()
    os.close(write_end)

    entry = orjson.loads(read_all(read_end))
    assert set(entry) == {
        "ts",
        "level",
        "process",
        "logger",
        "msg",
        "request_id",
        "method",
        "status",
    }
    assert (entry["process"], entry["level"], entry["request_id"]) == ("api", "info", "req-7")


def test_a_flush_with_nothing_written_returns_at_once() -> None:
    read_end, write_end = os.pipe()
    writer = LineWriter(write_end)
    started = time.monotonic()
    writer.flush(2)
    assert time.monotonic() - started < 0.5
    writer.close()
    os.close(write_end)
    os.close(read_end)
