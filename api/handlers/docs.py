"""`GET /openapi.json` and `GET /docs`: the API described, and that description rendered."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api import appkeys
from api.handlers.common import base_url, json_response
from api.openapi import build_document

_PAGE = Path(__file__).resolve().parents[1] / "static" / "docs.html"


async def openapi(request: web.Request) -> web.Response:
    routes = list(request.app[appkeys.ROUTES].values())
    return json_response(build_document(routes, base_url(request)))


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_PAGE, headers={"Cache-Control": "no-cache"})
