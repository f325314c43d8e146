"""`GET /calls/{id}/recording`: the recording, to the call's owner only.

A local recording is streamed from disk; one on S3 is a 302 to a short-lived signed URL, so the
audio goes from the store to the client without passing through the API.

The local directory is one host's: a recording a worker stored on another host's directory is
not on this API process's storage, and the 404 says so (and the log says which setting to use).
"""

from __future__ import annotations

import logging

from aiohttp import web

from api import appkeys
from api.handlers.common import path_call
from calls.storage import LocalFile, Redirect, inline_disposition
from core.errors import NotFound
from db.recordings import fetch_recording

log = logging.getLogger(__name__)


async def get_recording(request: web.Request) -> web.StreamResponse:
    call = path_call(request)
    row = await fetch_recording(request.app[appkeys.STORES].pool, call)
    if row is None:
        raise NotFound("Recording not found (the call may not have completed yet)")
    found = await request.app[appkeys.RECORDINGS].locate(call.ref, row["storage_key"])
    match found:
        case LocalFile(path, filename):
            return web.FileResponse(
                path, headers={"Content-Disposition": inline_disposition(filename)}
            )
        case Redirect(url):
            # The URL carries a credential for this one object: no cache may keep it.
            return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
    log.warning(
        "recording %s was stored, but not in this host's RECORDINGS_DIR: a worker on another"
        " host stored it in its own; with more than one host, set S3_BUCKET",
        row["storage_key"],
        extra={"call_id": call.ref},
    )
    raise NotFound(
        "Recording not found on this API's storage: it was stored, but in a local directory"
        " another host holds (recordings kept in a local directory are one host's)"
    )
