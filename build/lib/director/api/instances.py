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

from aiohttp import web

from ..nats_rpc import RpcTimeout
from ..operations import Unavailable
from ..store import InstanceRow
from .http import OPERATIONS, json_body, task_accepted

routes = web.RouteTableDef()


async def _instance(request: web.Request) -> InstanceRow:
    m = request.match_info
    return await request.app[OPERATIONS].instance_with_vm(m["name"], m["group"], m["ref"])


@routes.get("/disks")
async def get_disks(request: web.Request) -> web.Response:
    raw = request.query.get("orphaned")
    orphaned = None if raw is None else raw.lower() in ("1", "true", "yes", "on")
    return web.json_response(await request.app[OPERATIONS].disks(orphaned))


@routes.delete("/disks/{cid}")
async def delete_disk(request: web.Request) -> web.Response:
    return task_accepted(await request.app[OPERATIONS].delete_disk_task(request.match_info["cid"]))


@routes.post("/deployments/{name}/instances/{group}/{ref}/logs")
async def post_logs(request: web.Request) -> web.Response:
    """A task: ``fetch_logs(type, filters)`` on the instance's agent; its result is the agent's JSON."""
    row = await _instance(request)
    filters = [f for f in request.query.get("filters", "").split(",") if f] or None
    return task_accepted(await request.app[OPERATIONS].fetch_logs_task(row, request.query.get("type", "job"), filters))


@routes.get("/resources/{blob_id}")
async def get_resource(request: web.Request) -> web.StreamResponse:
    """A blob (log bundles), fetched by the director with its own credentials and streamed as it comes."""
    chunks = request.app[OPERATIONS].resource(request.match_info["blob_id"])
    out: web.StreamResponse | None = None
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise web.HTTPBadGateway(text="the blobstore sent nothing") from None
    except Unavailable as e:
        await chunks.aclose()
        raise web.HTTPBadGateway(text=str(e)) from None
    try:
        out = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if first[0] is not None:
            out.content_length = first[0]
        await out.prepare(request)
        async for _, chunk in chunks:
            if chunk:
                await out.write(chunk)
    finally:
        await chunks.aclose()
    await out.write_eof()
    return out


@routes.get("/deployments/{name}/instances/{group}/{ref}/logs/follow")
async def follow_logs(request: web.Request) -> web.StreamResponse:
    """``tail -F`` of the instance's job logs and agent log until the client goes away."""
    row = await _instance(request)
    lines = request.app[OPERATIONS].follow_logs(row)
    try:
        first = await anext(lines)     # the VM answers (or the error is a clean answer, before any output)
    except StopAsyncIteration:
        first = b""
    except Unavailable as e:
        await lines.aclose()
        raise web.HTTPBadGateway(text=str(e)) from None
    out = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await out.prepare(request)
    try:
        await out.write(first)
        async for data in lines:
            await out.write(data)
    except (ConnectionError, OSError, Unavailable):
        pass
    finally:
        await lines.aclose()
    return out


@routes.post("/deployments/{name}/instances/{group}/{ref}/ssh")
async def post_ssh(request: web.Request) -> web.Response:
    row = await _instance(request)
    shape = '{"command": "setup", "user": U, "public_key": K} or {"command": "cleanup", "user_regex": R}'
    body = await json_body(request, shape)
    if not isinstance(body, dict) or body.get("command") not in ("setup", "cleanup"):
        raise web.HTTPBadRequest(text=f"body must be {shape}")
    params = {k: v for k, v in body.items() if k != "command"}
    try:
        reply = await request.app[OPERATIONS].ssh(row, str(body["command"]), params)
    except RpcTimeout as e:
        return web.json_response({"code": 504, "description": str(e)}, status=504)
    if reply.exception is not None:
        return web.json_response({"code": 422, "description": reply.exception}, status=422)
    return web.json_response(reply.value)


@routes.post("/deployments/{name}/instances/{group}/{ref}/agent_message")
async def post_agent_message(request: web.Request) -> web.Response:
    """Send any message to the instance's agent (long-running ones are polled with get_task) and answer
    the agent's reply as it was on the wire: ``{"value": ...}`` or ``{"exception": {"message": ...}}``."""
    row = await _instance(request)
    shape = '{"method": "<name>", "arguments": [...]}'
    body = await json_body(request, shape)
    method = body.get("method") if isinstance(body, dict) else None
    args = body.get("arguments", []) if isinstance(body, dict) else None
    if not isinstance(method, str) or not method or not isinstance(args, list):
        raise web.HTTPBadRequest(text=f"body must be {shape}")
    try:
        reply = await request.app[OPERATIONS].agent_message(row, method, args)
    except RpcTimeout as e:
        return web.json_response({"code": 504, "description": str(e)}, status=504)
    if reply.exception is not None:
        return web.json_response({"exception": {"message": reply.exception}})
    return web.json_response({"value": reply.value})
