"""The registry agents read their settings from at boot (2013 BOSH: ``GET /instances/<id>/settings``).
Each VM has credentials of its own (in its user data), good for its own settings only."""
from __future__ import annotations

from aiohttp import web

from .http import OPERATIONS, authorized

routes = web.RouteTableDef()


@routes.get("/instances/{instance_id}/settings")
async def registry_settings(request: web.Request) -> web.Response:
    ops = request.app[OPERATIONS]
    instance_id = request.match_info["instance_id"]
    creds = await ops.registry_credentials(instance_id)
    if creds is None:   # not (yet) there: the agent asks again
        return web.json_response({"status": "not_found"}, status=404)
    if not authorized(request.headers.get("Authorization", ""), *creds):
        return web.json_response({"status": "unauthorized", "description": "these are not this VM's credentials"},
                                 status=401, headers={"WWW-Authenticate": 'Basic realm="Registry"'})
    settings = await ops.registry_settings(instance_id)
    if settings is None:
        return web.json_response({"status": "not_found"}, status=404)
    return web.json_response({"settings": settings, "status": "ok"})
