"""`GET /dashboard`: the live page a supervisor leaves open (it asks for the key itself)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

_PAGE = Path(__file__).resolve().parents[1] / "static" / "dashboard.html"


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_PAGE, headers={"Cache-Control": "no-cache"})
