"""What the route table says of each route: who serves it, who may call it, what it takes and
answers. The auth middleware and the OpenAPI document both read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What a response that is not JSON carries, for the document.
SSE, WEBSOCKET, AUDIO, PROMETHEUS, HTML = (
    "text/event-stream",
    "websocket",
    "audio/*",
    "text/plain",
    "text/html",
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    # The answers besides the errors every route shares (401, 405, 413, 503 …).
    ok: dict[int, type[BaseModel] | str]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    public: bool = False
    # Browsers cannot set headers on EventSource or WebSocket: streams take `access_token=`.
    query_token: bool = False
    # A call's own streams also open with its stream token (`token=`), which names no key.
    call_token: bool = False
    tag: str = "calls"
    # What the platform POSTs to the URL the body's `status_callback` names (its callbacks).
    callback: type[BaseModel] | None = None
