"""API routes that reach into one instance's VM: persistent disks, logs (``fetch_logs``), ``ssh`` setup and
cleanup, and any agent message (a debugging verb for the workshop).

    GET    /disks[?orphaned=true|false]                       the director's disks
    DELETE /disks/<cid>                                       a task: delete an orphaned disk
    POST   /deployments/D/instances/G/REF/logs?type=job|agent[,..]&filters=g1,g2
                                                              a task: fetch_logs; result {"blobstore_id","sha1"}
    GET    /resources/<blobstore_id>                          the blob (a log bundle), streamed by the director
    GET    /deployments/D/instances/G/REF/logs/follow         live ``tail -F`` of the job logs (chunked text)
    POST   /deployments/D/instances/G/REF/ssh                 {"command": "setup", "user", "public_key"} |
                                                              {"command": "cleanup", "user_regex"} -> the agent's reply
    POST   /deployments/D/instances/G/REF/agent_message       {"method", "arguments"} -> {"value"} | {"exception"}
``REF`` is the instance's index or (a prefix of) its id.
"""
from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from boshlab.dav import blob_path

from .disks import delete_disk, list_disks
from .nats_rpc import AgentClient, AgentError, RpcTimeout
from .tasks import Task, TaskFailed

if TYPE_CHECKING:
    from .app import Director

routes = web.RouteTableDef()
LOG_TYPES = ("job", "agent", "system")
FOLLOW_COMMAND = ["bash", "-O", "globstar", "-O", "nullglob", "-c",
                  "echo $$; exec tail -n 20 -F /var/vcap/sys/log/**/*.log /var/vcap/bosh/log/current 2>&1"]


def _director(request: web.Request) -> "Director":
    from .app import DIRECTOR
    return request.app[DIRECTOR]


def _accepted(task_id: int) -> web.Response:
    return web.json_response({"id": task_id, "state": "processing", "location": f"/tasks/{task_id}"},
                             status=202, headers={"Location": f"/tasks/{task_id}"})


async def _instance(request: web.Request) -> dict[str, Any]:
    d = _director(request)
    dep = request.match_info["name"]
    await d.stored(dep)
    rows = await d.select_instances(dep, request.match_info["group"], request.match_info["ref"])
    row = rows[0]
    if not row["agent_id"] or not row["vm_cid"]:
        raise web.HTTPConflict(text=f"{row['group_name']}/{row['id']} ({row['idx']}) has no VM")
    return row


def _label(row: dict[str, Any]) -> str:
    return f"{row['group_name']}/{row['id']} ({row['idx']})"


# --- disks ---------------------------------------------------------------------------------------------

@routes.get("/disks")
async def get_disks(request: web.Request) -> web.Response:
    raw = request.query.get("orphaned")
    orphaned = None if raw is None else raw.lower() in ("1", "true", "yes", "on")
    return web.json_response(await list_disks(_director(request), orphaned))


@routes.delete("/disks/{cid}")
async def delete_disk_route(request: web.Request) -> web.Response:
    d = _director(request)
    cid = request.match_info["cid"]
    row = await d.db.one("SELECT orphaned FROM disks WHERE cid=?", (cid,))
    if row is None:
        raise web.HTTPNotFound(text=f"Disk '{cid}' doesn't exist")
    if not row["orphaned"]:
        raise web.HTTPConflict(text=f"Disk '{cid}' is attached: only orphaned disks can be deleted")

    async def body(task: Task) -> str:
        return await delete_disk(d, task, cid)
    return _accepted(await d.tasks.start("delete orphaned disk", body))


# --- logs ----------------------------------------------------------------------------------------------

@routes.post("/deployments/{name}/instances/{group}/{ref}/logs")
async def post_logs(request: web.Request) -> web.Response:
    """A task: ``fetch_logs(type, filters)`` on the instance's agent; its result is the agent's JSON."""
    d = _director(request)
    row = await _instance(request)
    log_type = request.query.get("type", "job")
    if not log_type or any(t not in LOG_TYPES for t in log_type.split(",")):
        raise web.HTTPBadRequest(text=f"type must be one of {', '.join(LOG_TYPES)} (comma-joinable), got {log_type!r}")
    filters = [f for f in request.query.get("filters", "").split(",") if f] or None

    async def body(task: Task) -> str:
        agent = AgentClient(d.rpc, row["agent_id"], timeout=d.config.rpc_timeout, poll_interval=d.config.poll_interval,
                            debug=task.debug)
        async with task.step("Fetching logs", _label(row)):
            try:
                res = await agent.send_message("fetch_logs", log_type, filters)
            except (AgentError, RpcTimeout) as e:
                raise TaskFailed(f"{_label(row)}: {e}") from None
        if not isinstance(res, dict) or not {"blobstore_id", "sha1"} <= set(res):
            raise TaskFailed(f"{_label(row)}: fetch_logs answered {res!r}, expected blobstore_id and sha1")
        return json.dumps({"blobstore_id": res["blobstore_id"], "sha1": res["sha1"]})
    return _accepted(await d.tasks.start(f"fetch logs {row['group_name']}/{row['idx']}", body, row["deployment"]))


@routes.get("/resources/{blob_id}")
async def get_resource(request: web.Request) -> web.StreamResponse:
    """A blob (log bundles), fetched by the director with its own credentials and streamed as it comes."""
    d = _director(request)
    blob_id = request.match_info["blob_id"]
    if not blob_id or "/" in blob_id or ".." in blob_id:
        raise web.HTTPBadRequest(text="bad blob id")
    sess = d.dav._sess()
    async with sess.get(d.config.blobstore_endpoint + blob_path(blob_id), headers=d.dav._auth()) as r:
        if r.status == 404:
            raise web.HTTPNotFound(text=f"Resource '{blob_id}' doesn't exist")
        if r.status != 200:
            raise web.HTTPBadGateway(text=f"blobstore answered {r.status} for {blob_id}")
        out = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if r.content_length is not None:
            out.content_length = r.content_length
        await out.prepare(request)
        async for chunk in r.content.iter_chunked(1 << 16):
            await out.write(chunk)
        await out.write_eof()
        return out


@routes.get("/deployments/{name}/instances/{group}/{ref}/logs/follow")
async def follow_logs(request: web.Request) -> web.StreamResponse:
    """``tail -F`` of the instance's job logs and agent log, through a Docker exec stream, until the client
    goes away (then the exec's socket is closed and tail ends on its next write)."""
    d = _director(request)
    row = await _instance(request)
    cid = row["vm_cid"]

    def start() -> Any:
        api = d.cpi._docker().api
        ex = api.exec_create(cid, FOLLOW_COMMAND, stdout=True, stderr=True, tty=True)
        return api.exec_start(ex["Id"], socket=True, tty=True)
    sock = await d.cpi._thread(start)
    raw: socket.socket = getattr(sock, "_sock", sock)
    out = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await out.prepare(request)
    pid, head = "", b""
    try:
        while True:
            data = await asyncio.to_thread(raw.recv, 1 << 14)
            if not data:
                break
            if not pid:    # the first line is tail's pid in the VM (bash execs it), to stop it afterwards
                head += data
                if b"\n" not in head:
                    continue
                first, _, data = head.partition(b"\n")
                pid = first.decode(errors="replace").strip()
                if not data:
                    continue
            await out.write(data)
    except (ConnectionError, asyncio.CancelledError, OSError):
        pass
    finally:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raw.close()
        if pid.isdigit():
            await d.cpi.exec_in(cid, ["kill", pid])
    return out


# --- ssh and any message ---------------------------------------------------------------------------------

@routes.post("/deployments/{name}/instances/{group}/{ref}/ssh")
async def post_ssh(request: web.Request) -> web.Response:
    d = _director(request)
    row = await _instance(request)
    try:
        body = await request.json()
        command = body["command"]
        assert command in ("setup", "cleanup")
    except (ValueError, KeyError, TypeError, AssertionError):
        raise web.HTTPBadRequest(text='body must be {"command": "setup", "user": U, "public_key": K} or '
                                      '{"command": "cleanup", "user_regex": R}') from None
    params = {k: v for k, v in body.items() if k != "command"}
    agent = AgentClient(d.rpc, row["agent_id"], timeout=min(d.config.rpc_timeout, 30))
    try:
        value = await agent.call("ssh", command, params)
    except AgentError as e:
        return web.json_response({"code": 422, "description": str(e)}, status=422)
    except RpcTimeout as e:
        return web.json_response({"code": 504, "description": str(e)}, status=504)
    return web.json_response(value)


@routes.post("/deployments/{name}/instances/{group}/{ref}/agent_message")
async def post_agent_message(request: web.Request) -> web.Response:
    """Send any message to the instance's agent (long-running ones are polled with get_task) and answer
    the agent's reply as it was on the wire: ``{"value": ...}`` or ``{"exception": {"message": ...}}``."""
    d = _director(request)
    row = await _instance(request)
    try:
        body = await request.json()
        method, args = body["method"], body.get("arguments", [])
        assert isinstance(method, str) and method and isinstance(args, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise web.HTTPBadRequest(text='body must be {"method": "<name>", "arguments": [...]}') from None
    agent = AgentClient(d.rpc, row["agent_id"], timeout=min(d.config.rpc_timeout, 30),
                        poll_interval=d.config.poll_interval)
    try:
        value = await agent.send_message(method, *args)
    except AgentError as e:
        return web.json_response({"exception": {"message": str(e)}})
    except RpcTimeout as e:
        return web.json_response({"code": 504, "description": str(e)}, status=504)
    return web.json_response({"value": value})
