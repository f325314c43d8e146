"""`GET /calls/{id}/recording`: the recording, to the call's owner only.

A local recording is streamed from disk; one on S3 is a 302 to a short-lived signed URL, so the
audio goes from the store to the client without passing through the API.
"""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import path_call
from calls.storage import LocalFile, Redirect, inline_disposition
from core.errors import NotFound
from db.recordings import fetch_recording


async def get_recording(request: web.Request) -> web.StreamResponse:
    call = path_call(request)
    row = await fetch_recording(request.app[appkeys.STORES].pool, call)
    found = (
        await request.app[appkeys.RECORDINGS].locate(call.ref, row["storage_key"]) if row else None
    )
    match found:
        case LocalFile(path, filename):
            return web.FileResponse(
                path, headers={"Content-Disposition": inline_disposition(filename)}
            )
        case Redirect(url):
            # The URL carries a credential for this one object: no cache may keep it.
            return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
    raise NotFound("Recording not found (the call may not have completed yet)")
