"""HTTP plumbing shared by the API and the registry: the AppKeys, basic auth, errors as BOSH-style JSON."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..faults import Faults
from ..operations import BadRequest, Conflict, NotFound, Operations
from ..tasks import DeploymentLocked, TaskNotRunning, TooManyTasks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Identity:
    version: str
    process_uuid: str


OPERATIONS = web.AppKey("operations", Operations)
IDENTITY = web.AppKey("identity", Identity)
FAULTS = web.AppKey("faults", Faults)        # the game-day fault verbs (api/faults.py)


def authorized(header: str, user: str, password: str) -> bool:
    if not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return given == f"{user}:{password}"


def basic_auth(user: str, password: str, realm: str, open_paths: tuple[str, ...] = ()) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or authorized(request.headers.get("Authorization", ""), user, password):
            return await handler(request)
        return web.json_response({"code": 401, "description": "Not authorized: give the director's user and password"},
                                 status=401, headers={"WWW-Authenticate": f'Basic realm="{realm}"'})
    return mw


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as e:
        return web.json_response({"code": 404, "description": str(e)}, status=404)
    except (DeploymentLocked, TaskNotRunning, Conflict) as e:
        return web.json_response({"code": 409, "description": str(e)}, status=409)
    except BadRequest as e:
        return web.json_response({"code": 400, "description": str(e)}, status=400)
    except UnicodeEncodeError:   # a lone surrogate (JSON "\ud800") in a name or path: sqlite cannot store it
        return web.json_response({"code": 400, "description": "text must be valid Unicode (no lone surrogates)"},
                                 status=400)
    except TooManyTasks as e:
        return web.json_response({"code": 429, "description": str(e)}, status=429, headers={"Retry-After": "5"})
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            return web.json_response({"code": e.status, "description": e.text or e.reason}, status=e.status)
        raise


def task_accepted(task_id: int) -> web.Response:
    return web.json_response({"id": task_id, "state": "processing", "location": f"/tasks/{task_id}"},
                             status=202, headers={"Location": f"/tasks/{task_id}"})


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


async def text_body(request: web.Request, what: str) -> str:
    """The body as UTF-8 text (whatever charset the request claims); 400 naming ``what`` if it is not."""
    raw = await request.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise web.HTTPBadRequest(text=f"body must be {what} in UTF-8: {e}") from None


async def json_body(request: web.Request, shape: str) -> Any:
    text = await text_body(request, f"JSON: {shape}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text=f"body must be JSON: {shape}") from None
