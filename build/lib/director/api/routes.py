"""The director's HTTP API (BOSH's routes where BOSH has them). Handlers parse the request, call one
operation and shape the answer: no SQL, no logic."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..operations import task_json
from .http import IDENTITY, OPERATIONS, flag, json_body, task_accepted, text_body

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    ident = request.app[IDENTITY]
    return web.json_response(request.app[OPERATIONS].info(ident.version, ident.process_uuid))


@routes.post("/releases")
async def post_release(request: web.Request) -> web.Response:
    ops = request.app[OPERATIONS]
    limit = ops.config.max_release_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=f"the release is {request.content_length} bytes, more than the "
                                                 f"limit of {limit} (BOSH_LAB_MAX_RELEASE_BYTES)")
    path = ops.upload_dir() / f"upload-{time.time_ns()}.tgz"
    size = 0
    try:
        with open(path, "wb") as f:   # stream to disk: release bodies may be large
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size,
                                                        text=f"the release is more than the limit of {limit} bytes "
                                                             f"(BOSH_LAB_MAX_RELEASE_BYTES)")
                await asyncio.to_thread(f.write, chunk)
        if size == 0:
            raise web.HTTPBadRequest(text="empty body: send the release tarball")
    except BaseException:
        path.unlink(missing_ok=True)   # an aborted or refused upload leaves nothing behind
        raise
    return task_accepted(await ops.upload_release_task(path))


@routes.get("/releases")
async def get_releases(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OPERATIONS].releases())


@routes.delete("/releases/{name}")
async def delete_release(request: web.Request) -> web.Response:
    """``?version=V`` deletes one version (default: all); ``?force=true`` goes on when a blob cannot be deleted."""
    version = request.query.get("version") or None
    return task_accepted(await request.app[OPERATIONS].delete_release_task(request.match_info["name"], version,
                                                                           flag(request, "force")))


@routes.post("/deployments")
async def post_deployment(request: web.Request) -> web.Response:
    text = await text_body(request, "the deployment manifest (YAML)")
    if not text.strip():
        raise web.HTTPBadRequest(text="empty body: send the deployment manifest (YAML)")
    return task_accepted(await request.app[OPERATIONS].deploy_task(text, skip_drain=flag(request, "skip_drain")))


@routes.get("/deployments")
async def get_deployments(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OPERATIONS].deployments())


@routes.get("/deployments/{name}")
async def get_deployment(request: web.Request) -> web.Response:
    row = await request.app[OPERATIONS].stored(request.match_info["name"])
    return web.json_response({"name": row.name, "manifest": row.manifest, "releases": row.releases})


@routes.delete("/deployments/{name}")
async def delete_deployment(request: web.Request) -> web.Response:
    """Drain, stop and delete every VM, the deployment's disks and networks; ``?force=true`` goes on past
    agents that do not answer."""
    return task_accepted(await request.app[OPERATIONS].delete_deployment_task(request.match_info["name"],
                                                                              flag(request, "force")))


@routes.get("/deployments/{name}/instances")
async def get_instances(request: web.Request) -> web.Response:
    """``?format=full`` adds each instance's processes (get_state), as ``bosh instances --ps``."""
    full = request.query.get("format") == "full"
    return web.json_response(await request.app[OPERATIONS].instances(request.match_info["name"], full=full))


@routes.get("/deployments/{name}/vms")
async def get_vms(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OPERATIONS].vms_of(request.match_info["name"]))


STATE_ACTIONS = {"started": "start", "stopped": "stop", "restart": "restart", "recreate": "recreate",
                 "start": "start", "stop": "stop"}


async def _change_state(request: web.Request, group: str | None, ref: str | None) -> web.Response:
    action = STATE_ACTIONS.get(request.query.get("state", ""))
    if action is None:
        raise web.HTTPBadRequest(text="state must be started, stopped, restart or recreate")
    task_id = await request.app[OPERATIONS].change_state_task(request.match_info["name"], group, ref, action,
                                                               flag(request, "skip_drain"))
    return task_accepted(task_id)


@routes.put("/deployments/{name}/jobs/{group}")
async def put_group_state(request: web.Request) -> web.Response:
    """BOSH's ``PUT /deployments/D/jobs/G?state=started|stopped|restart|recreate`` (G ``*``: every group)."""
    return await _change_state(request, request.match_info["group"], None)


@routes.put("/deployments/{name}/jobs/{group}/{ref}")
async def put_instance_state(request: web.Request) -> web.Response:
    """One instance: ``{ref}`` is its index or (a prefix of) its id."""
    return await _change_state(request, request.match_info["group"], request.match_info["ref"])


@routes.get("/deployments/{name}/problems")
async def get_problems(request: web.Request) -> web.Response:
    """cloud-check's scan: VMs that vanished, exited, or whose agent does not answer (read-only)."""
    return web.json_response(await request.app[OPERATIONS].problems(request.match_info["name"]))


@routes.put("/deployments/{name}/problems")
async def put_problems(request: web.Request) -> web.Response:
    """``{"resolutions": {"<problem id>": "recreate_vm" | "delete_vm_reference" | ...}}`` -> a task."""
    shape = '{"resolutions": {"<problem id>": "<resolution>"}}'
    body = await json_body(request, shape)
    wanted = body.get("resolutions") if isinstance(body, dict) else None
    if not isinstance(wanted, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wanted.items()):
        raise web.HTTPBadRequest(text=f"body must be {shape}")
    return task_accepted(await request.app[OPERATIONS].resolve_task(request.match_info["name"], wanted))


@routes.get("/resurrection")
async def get_resurrection(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OPERATIONS].resurrection())


@routes.put("/resurrection")
async def put_resurrection(request: web.Request) -> web.Response:
    """``{"resurrection_paused": bool}`` (BOSH) or ``{"enabled": bool}``, optionally ``"deployment": name``."""
    shape = '{"enabled": true|false} (and optionally "deployment")'
    body = await json_body(request, shape)
    enabled: Any = None
    if isinstance(body, dict):
        enabled = body["enabled"] if "enabled" in body else (
            not body["resurrection_paused"] if isinstance(body.get("resurrection_paused"), bool) else None)
    dep = body.get("deployment") if isinstance(body, dict) else None
    if not isinstance(enabled, bool) or not (dep is None or isinstance(dep, str)):
        raise web.HTTPBadRequest(text=f"body must be {shape}")
    if dep is not None and not dep.strip():
        raise web.HTTPBadRequest(text='"deployment" must name a deployment; leave it out to change the default')
    await request.app[OPERATIONS].set_resurrection(enabled, dep)
    return web.json_response({"deployment": dep or "*", "enabled": enabled})


@routes.get("/tasks")
async def get_tasks(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "30")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise web.HTTPBadRequest(text=f"limit must be a number, got {raw[:40]!r}")
    limit = min(int(raw), 10_000)
    state = request.query.get("state")
    return web.json_response(await request.app[OPERATIONS].recent_tasks(limit, state.split(",") if state else None))


MAX_ID = 2 ** 63 - 1     # sqlite's integers


def _task_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise web.HTTPBadRequest(text=f"task id must be a number, got {raw[:40]!r}")
    value = int(raw)
    if value > MAX_ID:
        raise web.HTTPNotFound(text=f"Task {raw} doesn't exist")
    return value


@routes.get("/tasks/{id}")
async def get_task(request: web.Request) -> web.Response:
    return web.json_response(task_json(await request.app[OPERATIONS].task(_task_id(request))))


@routes.delete("/tasks/{id}")
@routes.delete("/task/{id}")   # BOSH's route
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a running task: its current step stops (an agent's drain is cancelled with cancel_task)."""
    task_id = _task_id(request)
    state = await request.app[OPERATIONS].cancel_task(task_id)
    return web.json_response({"id": task_id, "state": state}, status=202)


@routes.get("/tasks/{id}/output")
async def get_task_output(request: web.Request) -> web.StreamResponse:
    """``?type=event|debug|result``; ``offset`` (bytes) lets clients follow a running task."""
    raw = request.query.get("offset", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise web.HTTPBadRequest(text=f"offset must be a byte offset >= 0, got {raw[:40]!r}")
    offset = int(raw)
    try:
        row, data = await request.app[OPERATIONS].task_output(_task_id(request), request.query.get("type", "event"),
                                                              offset)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    return web.Response(body=data, content_type="text/plain",
                        headers={"X-Task-State": row.state, "X-Next-Offset": str(offset + len(data))})
