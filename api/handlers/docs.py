"""`GET /openapi.json`: the API described (`/docs`, from api/handlers/pages.py, renders it)."""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import base_url, json_response
from api.openapi import build_document


async def openapi(request: web.Request) -> web.Response:
    routes = list(request.app[appkeys.ROUTES].values())
    return json_response(build_document(routes, base_url(request)))
