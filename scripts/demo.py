"""Creates a call and follows it live in the terminal: each transition as the API streams it,
then the recording.

    scripts/demo [--url http://localhost:3000] [--key demo-key] [--from N] [--to N]

Exits 0 once the call is COMPLETED; 1 when the API cannot be reached, answers an error or the
call does not complete within --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.status import Status
from rich.text import Text

STATUS_STYLES = {
    "QUEUED": "bright_blue",
    "RINGING": "yellow",
    "ANSWERED": "green",
    "ON_HOLD": "magenta",
    "UNANSWERED": "red",
    "COMPLETED": "bold cyan",
}
TERMINAL_STATUS = "COMPLETED"

# A dropped stream is resumed with Last-Event-ID this many times in a row before giving up.
RECONNECTS = 5
RECONNECT_DELAY_S = 0.5
# After COMPLETED the recording is uploaded by a job: how long to wait for its URL.
RECORDING_WAIT_S = 10.0

# The timeline's columns: title, width, right-aligned.
COLUMNS = (
    ("elapsed", 9, True),
    ("in prev.", 10, True),
    ("seq", 5, True),
    ("status", 12, False),
    ("event", 16, False),
    ("flags", 0, False),
)


def timeline_row(cells: list[tuple[str, str]]) -> Text:
    """One line of the timeline from (text, style) cells, padded to the columns."""
    row = Text("  ")
    for (text, style), (_, width, right) in zip(cells, COLUMNS, strict=True):
        row.append(text.rjust(width) if right else text.ljust(width), style=style)
        row.append("  ")
    row.rstrip()
    return row


class ApiError(Exception):
    """The API answered with an error status; the message says which and why."""


@dataclass
class SseMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None


async def read_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SseMessage]:
    """The messages of a text/event-stream body (comments such as pings are skipped)."""
    message, data = SseMessage(), []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                message.data = "\n".join(data)
                yield message
            message, data = SseMessage(), []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            message.event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            message.id = value


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Timeline:
    """The call's transitions as they arrive, printed one line each."""

    console: Console
    seen: list[dict[str, Any]] = field(default_factory=list)
    last_arrival: float = field(default_factory=time.monotonic)

    @property
    def last_seq(self) -> int:
        return self.seen[-1]["seq"] if self.seen else 0

    @property
    def status(self) -> str | None:
        return self.seen[-1]["status"] if self.seen else None

    @property
    def completed(self) -> bool:
        return self.status == TERMINAL_STATUS

    def header(self) -> None:
        self.console.print(timeline_row([(title, "bold") for title, _, _ in COLUMNS]))

    def add(self, message: dict[str, Any]) -> None:
        if message["seq"] <= self.last_seq:
            return  # a resumed stream may repeat what was already shown
        at = parse_time(message["timestamp"])
        first = parse_time(self.seen[0]["timestamp"]) if self.seen else at
        previous = parse_time(self.seen[-1]["timestamp"]) if self.seen else None
        self.seen.append(message)
        self.last_arrival = time.monotonic()
        status = message["status"]
        in_previous = f"{(at - previous).total_seconds():.3f} s" if previous else "–"
        self.console.print(
            timeline_row(
                [
                    (f"{(at - first).total_seconds():.3f} s", ""),
                    (in_previous, "dim"),
                    (str(message["seq"]), "dim"),
                    (status, STATUS_STYLES.get(status, "bold")),
                    (message["event"] or "", ""),
                    (", ".join(message["flags"]) or "–", "italic"),
                ]
            )
        )

    def waiting(self) -> str:
        """The spinner's text while the call is live."""
        since = time.monotonic() - self.last_arrival
        return f"{self.status or 'connecting'} for {since:.1f} s, waiting for the next transition…"

    def path(self) -> Text:
        path = Text()
        for i, message in enumerate(self.seen):
            if i:
                path.append(" → ")
            path.append(message["status"], style=STATUS_STYLES.get(message["status"], "bold"))
        return path

    def total_s(self) -> float:
        return (
            parse_time(self.seen[-1]["timestamp"]) - parse_time(self.seen[0]["timestamp"])
        ).total_seconds()


class Demo:
    """One call through the API: create it, follow its stream, fetch its recording URL."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"}

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        body = await response.read()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if response.status >= 400:
            message = payload.get("message") if isinstance(payload, dict) else None
            reason = message or body.decode(errors="replace").strip() or response.reason
            raise ApiError(
                f"{response.method} {response.url.path} answered {response.status}: {reason}"
            )
        return payload

    async def create_call(self, from_number: str, to_number: str) -> dict[str, Any]:
        body = {"from": from_number, "to": to_number, "metadata": {"source": "scripts/demo"}}
        async with self.http.post(
            self.base_url + "/calls", json=body, headers=self.headers
        ) as response:
            call = await self._json(response)
        if not isinstance(call, dict) or "call_id" not in call:
            raise ApiError(
                f"POST {self.base_url}/calls did not answer with a call: is it mock-comms?"
            )
        return call

    async def fetch_call(self, call_id: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.base_url}/calls/{call_id}", headers=self.headers
        ) as response:
            return await self._json(response)

    async def follow(self, call_id: str, timeline: Timeline) -> None:
        """Stream the call's transitions into `timeline` until COMPLETED. Asks for everything
        after seq 0, so no transition is missed however fast the call moves, and resumes a
        dropped stream from the last seq shown."""
        failures, cause = 0, "it ended"
        while not timeline.completed:
            headers = self.headers | {
                "Last-Event-ID": str(timeline.last_seq),
                "Accept": "text/event-stream",
            }
            seen_before = timeline.last_seq
            try:
                async with self.http.get(
                    f"{self.base_url}/calls/{call_id}/stream", headers=headers
                ) as response:
                    if response.status != 200:
                        await self._json(response)
                    async for message in read_sse(response):
                        if message.event == "call":
                            timeline.add(orjson.loads(message.data))
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                cause = str(exc) or type(exc).__name__
            if timeline.completed:
                break
            failures = 0 if timeline.last_seq > seen_before else failures + 1
            if failures > RECONNECTS:
                raise ApiError(
                    f"the stream of call {call_id} stopped before COMPLETED "
                    f"({cause}; resumed {RECONNECTS} times)"
                )
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def recording_url(self, call_id: str) -> str | None:
        deadline = time.monotonic() + RECORDING_WAIT_S
        while True:
            call = await self.fetch_call(call_id)
            if call.get("recording_url") or time.monotonic() >= deadline:
                return call.get("recording_url")
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, console: Console) -> None:
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        demo = Demo(http, args.url, args.key)
        call = await demo.create_call(args.from_number, args.to_number)
        call_id = call["call_id"]
        console.rule(Text(f"call {call_id}", style="bold"))
        console.print(
            Text.assemble(
                ("from ", "dim"),
                call["from"],
                ("  to ", "dim"),
                call["to"],
                ("  via ", "dim"),
                demo.base_url,
            )
        )
        console.print()
        timeline = Timeline(console)
        timeline.header()
        with console.status(timeline.waiting(), spinner="dots") as status:
            ticker = asyncio.create_task(_tick(status, timeline))
            try:
                await demo.follow(call_id, timeline)
            finally:
                ticker.cancel()
        console.print()
        console.print(
            Text.assemble(
                ("✔ COMPLETED", STATUS_STYLES[TERMINAL_STATUS]),
                f" after {timeline.total_s():.3f} s: ",
                timeline.path(),
            )
        )
        flags = timeline.seen[-1]["flags"]
        console.print(Text.assemble(("  flags      ", "dim"), ", ".join(flags) or "none"))
        with console.status("waiting for the recording upload…", spinner="dots"):
            url = await demo.recording_url(call_id)
        if url:
            console.print(
                Text.assemble(
                    ("  recording  ", "dim"),
                    (url, "link " + url),
                    ("  (fetch it with the same key)", "dim"),
                )
            )
        else:
            console.print(
                Text.assemble(
                    ("  recording  ", "dim"),
                    f"not uploaded yet: GET {demo.base_url}/calls/{call_id} shows its "
                    "recording_url once it is",
                )
            )


async def _tick(status: Status, timeline: Timeline) -> None:
    while True:
        status.update(timeline.waiting())
        await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", default="http://localhost:3000", help="the API's base URL (default: %(default)s)"
    )
    parser.add_argument(
        "--key", default="demo-key", help="the API key to call with (default: %(default)s)"
    )
    parser.add_argument(
        "--from",
        dest="from_number",
        default="+1234567890",
        metavar="NUMBER",
        help="caller, E.164 (default: %(default)s)",
    )
    parser.add_argument(
        "--to",
        dest="to_number",
        default="+0987654321",
        metavar="NUMBER",
        help="callee, E.164 (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="give up when the call has not completed after S seconds (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    # Soft wrap: a long URL stays on one line, whole, for the terminal to fold or not.
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        asyncio.run(asyncio.wait_for(run(args, console), args.timeout))
    except ApiError as exc:
        errors.print(Text(f"demo: {exc}", style="bold red"))
        return 1
    except aiohttp.InvalidURL:
        errors.print(Text(f"demo: --url {args.url!r} is not a URL", style="bold red"))
        return 1
    except aiohttp.ClientConnectionError as exc:
        errors.print(Text(f"demo: cannot reach the API at {args.url} ({exc})", style="bold red"))
        return 1
    except TimeoutError:
        errors.print(
            Text(f"demo: the call did not complete within {args.timeout:g} s", style="bold red")
        )
        return 1
    except KeyboardInterrupt:
        errors.print(Text("demo: interrupted", style="bold red"))
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
