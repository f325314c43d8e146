"""`GET /calls/{id}/recording`: the recording file, to the call's owner only."""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import path_uuid
from core.errors import NotFound
from db.recordings import fetch_recording


async def get_recording(request: web.Request) -> web.FileResponse:
    call_id = path_uuid(request)
    row = await fetch_recording(
        request.app[appkeys.STORES].pool, call_id, appkeys.api_key(request).id
    )
    path = request.app[appkeys.RECORDINGS].path_of(row["storage_key"]) if row else None
    if path is None:
        raise NotFound("Recording not found (the call may not have completed yet)")
    return web.FileResponse(
        path, headers={"Content-Disposition": f'inline; filename="{call_id}{path.suffix}"'}
    )
