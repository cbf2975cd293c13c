"""The sequence-diagram page (docs/watch.md): three static files from ``director/watch/ui/``, served by the
director itself so a projected browser tab needs nothing from the internet.

    GET /watch/ui            index.html
    GET /watch/ui/<name>     index.html, app.js or app.css (only those: a fixed list, never a path)

Behind the API's basic auth like every other route. ``Cache-Control: no-cache`` (a lab's page changes with its
checkout) and a Content-Security-Policy that lets the page load and connect to its own origin only.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).resolve().parent.parent / "watch" / "ui"
FILES: dict[str, str] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
}

routes = web.RouteTableDef()


async def _serve(name: str) -> web.Response:
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text=f"no such file of the watch page: {name!r} (there are {', '.join(FILES)})")
    body = await asyncio.to_thread((UI_DIR / name).read_bytes)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)


@routes.get("/watch/ui")
@routes.get("/watch/ui/")
async def get_page(request: web.Request) -> web.Response:
    return await _serve("index.html")


@routes.get("/watch/ui/{name}")
async def get_file(request: web.Request) -> web.Response:
    return await _serve(request.match_info["name"])
