"""The HTML pages (the dashboard, the API docs) and the files they load, served under a
Content-Security-Policy that runs our own scripts only: a tenant's text that reached a page as
markup still could not run."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api.handlers.common import Handler
from core.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# No inline or foreign script, style, plugin, base or frame; the pages talk to this origin only.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

# What a page may load from /static/, by its path under api/static/, with its type: nothing
# else there is served. swagger-ui/ is Swagger UI as published, for /docs, and uplot/ uPlot, for
# the dashboard's charts (see their README.md); both run under the policy above as they stand.
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "uplot/uPlot.iife.min.js": "text/javascript",
    "uplot/uPlot.min.css": "text/css",
    "docs.js": "text/javascript",
    "swagger-ui/swagger-ui-bundle.js": "text/javascript",
    "swagger-ui/swagger-ui.css": "text/css",
}


def page(filename: str) -> Handler:
    """A handler serving the HTML page `filename` of the static directory."""
    path = STATIC_DIR / filename

    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            path,
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Referrer-Policy": "no-referrer",
            },
        )

    serve.__name__ = serve.__qualname__ = f"page_{path.stem}"
    return serve


async def asset(request: web.Request) -> web.FileResponse:
    """`GET /static/{name}`: one of the pages' scripts or stylesheets, `name` a key of ASSETS."""
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"No static file named {name[:64]!r}")
    return web.FileResponse(
        STATIC_DIR / name,
        headers={"Cache-Control": "no-cache", "Content-Type": f"{content_type}; charset=utf-8"},
    )
