"""`GET /openapi.json`: the API described (`/docs`, from api/handlers/pages.py, renders it)."""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import base_url, json_response


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[appkeys.OPENAPI](base_url(request)))
