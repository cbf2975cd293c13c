"""``GET /watch``: the timeline (docs/watch.md) as server-sent events (``Accept: text/event-stream``) or JSON
lines, live or (``follow=0``) what is buffered. The events come from the hub (``WATCH_HUB``); a reader too
slow for the stream gets a ``dropped`` event, and the director never waits for a reader."""
from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from boshlab.timeline import KINDS, TimelineEvent

from ..watch.hub import Filters, Hub, Subscription

WATCH_HUB = web.AppKey("watch_hub", Hub)
KEEPALIVE = 15.0          # seconds between SSE keepalive comments
GONE_CHECK = 1.0          # seconds between looks whether a quiet reader is still connected
WRITE_DEADLINE = 30.0     # seconds a write to a reader may take before the reader is given up
QUEUE = 2000              # events a reader may be behind before it loses some
MAX_PARAM = 200           # characters of a filter

routes = web.RouteTableDef()


def _int(request: web.Request, name: str, value: str | None, low: int = 0) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number, not {value[:40]!r}") from None
    if n < low:
        raise web.HTTPBadRequest(text=f"{name} must be at least {low}, not {n}")
    return n


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_PARAM:
        raise web.HTTPBadRequest(text=f"{name} is longer than {MAX_PARAM} characters")
    return value


def _follow(request: web.Request) -> bool:
    raw = request.query.get("follow", "1").lower()
    if raw in ("1", "true", "yes", "on", ""):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise web.HTTPBadRequest(text=f"follow must be 0 or 1, not {raw[:40]!r}")


def _kinds(request: web.Request) -> tuple[str, ...] | None:
    raw = _text(request, "kind")
    if raw is None:
        return None
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise web.HTTPBadRequest(text=f"kind must be among {', '.join(KINDS)} (comma-separated), not {raw[:60]!r}")
    return kinds


def encode(event: TimelineEvent, sse: bool) -> bytes:
    data = json.dumps(event, separators=(",", ":"), default=str)
    if not sse:
        return (data + "\n").encode()
    head = f"id: {event['seq']}\n" if "seq" in event else ""
    return f"{head}event: timeline\ndata: {data}\n\n".encode()


@routes.get("/watch")
async def watch(request: web.Request) -> web.StreamResponse:
    hub = request.app[WATCH_HUB]
    for name in request.query:
        if name not in ("deployment", "instance", "method", "kind", "since", "history", "follow"):
            raise web.HTTPBadRequest(text=f"unknown parameter {name[:40]!r} (deployment, instance, method, kind, "
                                          f"since, history, follow)")
    filters = Filters(_text(request, "deployment"), _text(request, "instance"), _text(request, "method"),
                      _kinds(request))
    since = _int(request, "since", request.query.get("since"))
    history = _int(request, "history", request.query.get("history"))
    if since is None and "Last-Event-ID" in request.headers:
        since = _int(request, "Last-Event-ID", request.headers["Last-Event-ID"].strip())
    follow = _follow(request)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    content_type = "text/event-stream" if sse else "application/x-ndjson"
    if not follow:
        events = hub.history(since, history, filters)
        return web.Response(body=b"".join(encode(e, sse) for e in events), content_type=content_type)
    resp = web.StreamResponse(headers={"Content-Type": f"{content_type}; charset=utf-8", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    sub = hub.subscribe(filters, since=since, history=history, maxsize=QUEUE)
    try:
        await _stream(request, resp, sub, sse)
    except (ConnectionResetError, TimeoutError):
        pass                          # the reader went away, or stopped reading
    finally:
        sub.close()
    return resp


async def _stream(request: web.Request, resp: web.StreamResponse, sub: Subscription, sse: bool) -> None:
    if sse:
        await asyncio.wait_for(resp.write(b": watching\n\n"), WRITE_DEADLINE)
    wrote = time.monotonic()
    while True:
        event = await sub.get(min(GONE_CHECK, KEEPALIVE))
        if event is None:
            if sub.closed or request.transport is None or request.transport.is_closing():
                return                      # the director stops, or the reader went away while all was quiet
            if sse and time.monotonic() - wrote >= KEEPALIVE:
                await asyncio.wait_for(resp.write(b": keepalive\n\n"), WRITE_DEADLINE)
                wrote = time.monotonic()
            continue
        chunk = [encode(event, sse)]
        while len(chunk) < 500:                     # what else is waiting goes in the same write
            more = sub.get_nowait()
            if more is None:
                break
            chunk.append(encode(more, sse))
        await asyncio.wait_for(resp.write(b"".join(chunk)), WRITE_DEADLINE)
        wrote = time.monotonic()
