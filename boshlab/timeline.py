"""The watch timeline: what crossed NATS and the blobstore, as events (docs/watch.md).

The director builds these events (director/watch/) and streams them (``GET /watch``); the CLI prints them
(``bosh-lab watch``) and replays recorded JSONL; the sequence-diagram page draws them. This module is the one
definition of an event, of the filters, and of the one-line text form: pure functions, no I/O.
"""
from __future__ import annotations

import json
import time
from typing import Any, Literal, TypedDict

Kind = Literal["request", "progress", "reply", "heartbeats", "alert", "blob", "fault", "note", "dropped"]
KINDS: tuple[str, ...] = ("request", "progress", "reply", "heartbeats", "alert", "blob", "fault", "note", "dropped")
GLOBAL_KINDS = ("heartbeats", "fault", "note", "dropped")   # kept by a deployment filter when of no deployment
CallState = Literal["sent", "running", "done", "failed", "timeout"]

DIRECTOR = "director"       # lifeline names besides instances
BLOBSTORE = "blobstore"
NATS = "nats"


class BlobAccess(TypedDict, total=False):
    method: str             # GET, HEAD, PUT, DELETE
    id: str                 # the blob id (the last path segment)
    path: str               # /<xx>/<id>
    status: int             # HTTP status nginx answered
    bytes: int              # body bytes sent (GET) or received (PUT)
    duration_ms: float
    user: str               # the DAV user: "director" or "agent"


class HeartbeatSummary(TypedDict, total=False):
    count: int                      # heartbeats seen in the window
    window_s: float                 # how long the window was
    instances: dict[str, str]       # instance -> its last job_state
    changed: list[str]              # instances whose job_state changed (the event was sent early for them)
    omitted: int                    # instances heard but not named (a summary names at most 200, changed first)


class TimelineEvent(TypedDict, total=False):
    seq: int                # the hub's order, from 1 (assigned by the director)
    ts: float               # unix seconds when the director saw it
    kind: Kind
    src: str                # a lifeline: "director", "blobstore", "nats" or an instance name ("redis/0")
    dst: str
    deployment: str | None
    instance: str | None    # "redis/0" (group/index); a compilation VM: "compilation/<short id>"
    instance_id: str | None
    agent_id: str | None
    subject: str            # the NATS subject (request, reply, heartbeat, alert)
    method: str | None      # request / progress / reply: the agent method ("apply", "drain", ...)
    call: str | None        # pairs a request with its progress and reply: the request's uuid (reply_to's last token)
    arguments: list[Any]    # request: the method's arguments
    state: CallState        # request "sent"; progress "running"; reply "done" / "failed" / "timeout"
    agent_task_id: str | None
    latency_ms: float       # reply: from the request to this reply (the whole task for long-running actions)
    polls: int              # reply of a long-running action: how many get_task polls were folded into it
    value: Any              # reply: the value
    exception: str | None   # reply: the agent's exception message
    message: Any            # the full JSON body as it crossed NATS (the request; the final reply for replies)
    blob: BlobAccess
    heartbeats: HeartbeatSummary
    text: str               # fault / note / alert / dropped: what happened, in words
    fault: dict[str, Any]   # fault: {"id", "kind", "target", "action": "injected" | "undone", ...}
    dropped: int            # dropped: how many events a slow reader missed


def matches(event: TimelineEvent, deployment: str | None = None, instance: str | None = None,
            method: str | None = None, kinds: tuple[str, ...] | None = None) -> bool:
    """The filters of ``watch``. ``instance`` is ``group/index``, a group name, an instance id or an agent id.
    An event of no deployment passes a deployment filter only when it is of no deployment by nature (a
    heartbeat summary, a fault, a note); an event of no instance passes an instance filter only when it is a
    fault or a note naming it in ``text``; ``method`` keeps only request/progress/reply of that method."""
    if kinds is not None and event.get("kind") not in kinds:
        return False
    if deployment and event.get("deployment") not in (deployment, None):
        return False
    if deployment and event.get("deployment") is None and event.get("kind") not in GLOBAL_KINDS:
        return False     # a call, blob or alert of no known deployment (the director's own blob requests)
    if method and event.get("method") != method:
        return False
    if instance:
        name = event.get("instance") or ""
        ids = (event.get("instance_id"), event.get("agent_id"))
        if not (name == instance or name.split("/", 1)[0] == instance or instance in ids):
            hb = event.get("heartbeats")
            if hb and instance in hb.get("instances", {}):
                return True
            return event.get("kind") in ("fault", "note", "dropped") and instance in (event.get("text") or "")
    return True


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def clock(ts: float, utc: bool = False) -> str:
    t = time.gmtime(ts) if utc else time.localtime(ts)
    return time.strftime("%H:%M:%S", t) + f".{int(ts * 1000) % 1000:03d}"


Painter = Any   # (text, ansi code) -> text


def _plain(text: str, code: str) -> str:
    return text


def unanswered(events: list[TimelineEvent]) -> set[int]:
    """The seqs of the requests in ``events`` that have neither a progress nor a reply among them (yet)."""
    answered = {e.get("call") for e in events if e.get("kind") in ("progress", "reply")}
    return {int(e.get("seq", 0)) for e in events if e.get("kind") == "request" and e.get("call") not in answered}


def render_line(event: TimelineEvent, paint: Painter = _plain, utc: bool = False,
                show_requests: bool = False, pending: bool = False) -> str | None:
    """One readable line for an event, or None when the event is folded into another line: a request is
    shown by its reply (``drain ["update",…] → 0  3 ms``) unless ``show_requests``, or ``pending`` (a
    request known to have no reply: ``ping [] … no reply yet``)."""
    kind = event.get("kind")
    stamp = clock(event.get("ts", 0.0), utc)
    who = event.get("instance") or event.get("agent_id") or "?"
    method = event.get("method") or "?"
    if kind == "request":
        if pending:
            return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {_short(event.get('arguments', []), 40)} " \
                   f"… {paint('no reply yet', '33')}"
        if not show_requests:
            return None
        return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {_short(event.get('arguments', []))} …"
    if kind == "progress":
        return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} … running (agent task {event.get('agent_task_id')})"
    if kind == "reply":
        state = event.get("state")
        args = _short(event.get("arguments", []), 40)
        took = duration(event.get("latency_ms"))
        polls = event.get("polls")
        folded = f", {polls} get_task poll{'s' if polls != 1 else ''}" if polls else ""
        if state == "done":
            out = f"→ {_short(event.get('value'), 50)}"
            verb = {"apply": "applied", "drain": "drained", "stop": "stopped", "start": "started",
                    "compile_package": "compiled", "migrate_disk": "migrated", "fetch_logs": "fetched"}.get(method)
            if verb and event.get("agent_task_id"):
                out = f"… {verb} in {took}{folded} → {_short(event.get('value'), 40)}"
                return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {args} {out}"
            return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {args} {out}  {paint(took, '2')}{folded}"
        if state == "timeout":
            return f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {args} {paint('no reply', '31')} after {took}"
        return (f"{stamp}  {DIRECTOR} → {who:<14} {paint(method, '1')} {args} "
                f"{paint('exception: ' + str(event.get('exception')), '31')}  {paint(took, '2')}{folded}")
    if kind == "blob":
        b = event.get("blob", {})
        src = event.get("src") or "?"
        ok = int(b.get("status", 0)) < 400
        status = str(b.get("status", "?")) if ok else paint(str(b.get("status", "?")), "31")
        arrow = "←" if b.get("method") in ("GET", "HEAD") else "→"
        return (f"{stamp}  {src:<8} {arrow} {BLOBSTORE}  {b.get('method', '?')} {b.get('id', b.get('path', '?'))} "
                f"{size(b.get('bytes'))} {status}  {paint(duration(b.get('duration_ms')), '2')}")
    if kind == "heartbeats":
        hb = event.get("heartbeats", {})
        states = ", ".join(f"{k} {paint(v, '32' if v == 'running' else '33')}"
                           for k, v in sorted(hb.get("instances", {}).items()))
        more = f" and {hb['omitted']} more" if hb.get("omitted") else ""
        return f"{stamp}  heartbeats: {hb.get('count', 0)} in {hb.get('window_s', 0):.0f} s  {states}{more}"
    if kind == "alert":
        return f"{stamp}  {who} ⚠ {paint('alert', '33')}: {event.get('text', '')}"
    if kind == "fault":
        return f"{stamp}  {paint('fault', '35')}: {event.get('text', '')}"
    if kind == "dropped":
        missed = f"… {event.get('dropped', 0)} events dropped (reader too slow)"
        return f"{stamp}  {paint(missed, '31')}"
    return f"{stamp}  {event.get('text', '')}"
