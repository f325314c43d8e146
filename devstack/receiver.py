"""A status callback receiver on a free loopback port, for the tests and the bench: it keeps every
request it gets (POST, or GET for the Twilio face's StatusCallbackMethod=GET), with the time it
came, and answers each as it is told (per path: a status, a wait before answering)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from devstack.ports import free_port


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    # time.time() when it came in.
    at: float
    method: str = "POST"
    # The whole URL it was sent to, as its sender named it (the query included).
    url: str = ""

    def form(self) -> dict[str, str]:
        """Its form parameters: the body's for a POST, the query's for a GET."""
        text = self.url.partition("?")[2] if self.method == "GET" else self.body.decode()
        return dict(parse_qsl(text, keep_blank_values=True))

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    """How to answer one request: `status`, after `wait_s`."""

    status: int = 200
    wait_s: float = 0.0


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Answer]] = {}
        self._waits: dict[str, float] = {}
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: int | Answer) -> None:
        """Answer the next requests to `path` so, in order (a status, or an Answer); later
        ones get 200."""
        script = self._scripts.setdefault(path, deque())
        script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def slow(self, path: str, wait_s: float) -> None:
        """Wait `wait_s` before answering any unscripted request to `path`."""
        self._waits[path] = wait_s

    def to(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def wait_for(
        self, done: Callable[[list[Received]], bool], within_s: float = 15.0
    ) -> list[Received]:
        """Wait until `done(self.received)`; raises TimeoutError after `within_s`."""
        async with asyncio.timeout(within_s):
            async with self._arrived:
                await self._arrived.wait_for(lambda: done(self.received))
        return self.received

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        url = f"http://127.0.0.1:{self.port}{request.raw_path}"
        self.received.append(
            Received(request.path, dict(request.headers), body, time.time(), request.method, url)
        )
        async with self._arrived:
            self._arrived.notify_all()
        script = self._scripts.get(request.path)
        answer = script.popleft() if script else Answer(wait_s=self._waits.get(request.path, 0))
        if answer.wait_s:
            await asyncio.sleep(answer.wait_s)
        return web.Response(status=answer.status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._handle)
        app.router.add_route("GET", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
