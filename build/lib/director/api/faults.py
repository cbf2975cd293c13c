"""The game-day fault verbs (director/faults.py), for ``bosh-lab fault`` and ``bosh-lab faults``:

    GET    /faults[?all=true]      the active faults (with all=true: the undone ones too, newest first)
    POST   /faults                 {"kind", "deployment", "instance", "job", "seconds"} -> the fault (201)
    DELETE /faults/<id>            undo one -> the fault, undone (delete-vm: with the recreate "task")
    DELETE /faults                 undo every active fault -> a list (an "error" for one that could not be undone)
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..operations import BadRequest, Unavailable
from .http import FAULTS, flag, json_body

routes = web.RouteTableDef()
SHAPE = '{"kind": "...", "deployment": "...", "instance": "GROUP/INDEX", "job": "...", "seconds": N}'


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {value!r}")
    return value


@routes.get("/faults")
async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(await request.app[FAULTS].listing(include_undone=flag(request, "all")))


@routes.post("/faults")
async def inject(request: web.Request) -> web.Response:
    body = await json_body(request, SHAPE)
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object: {SHAPE}")
    seconds = body.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)):
        raise BadRequest(f"seconds must be a number, got {seconds!r}")
    kind = _str(body, "kind")
    if not kind:
        raise BadRequest(f"kind is required: {SHAPE}")
    try:
        fault = await request.app[FAULTS].inject(kind, _str(body, "deployment"), _str(body, "instance"),
                                                 _str(body, "job"), float(seconds) if seconds is not None else None)
    except Unavailable as e:
        raise web.HTTPBadGateway(text=str(e)) from None
    return web.json_response(fault, status=201)


@routes.delete("/faults/{id}")
async def undo(request: web.Request) -> web.Response:
    try:
        return web.json_response(await request.app[FAULTS].undo(request.match_info["id"]))
    except Unavailable as e:
        raise web.HTTPBadGateway(text=str(e)) from None


@routes.delete("/faults")
async def undo_all(request: web.Request) -> web.Response:
    return web.json_response(await request.app[FAULTS].undo_all())
