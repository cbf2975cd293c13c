"""NATS messages -> timeline events (docs/watch.md's table). Pure: no I/O, no clock; the caller gives every
message's time and calls ``expire``/``tick`` with the time now.

BOSH puts ``reply_to`` inside the request's JSON body, so only a reader of bodies can pair a reply with its
request: the pair is keyed by the request uuid, the last token of ``reply_to``. A long-running action
answers ``{"value": {"agent_task_id": T, "state": "running"}}`` (a ``progress`` event); the director's
``get_task T`` polls and their ``running`` answers are folded (counted in ``polls``) until the answer that
ends the task, which becomes the action's one ``reply``, its latency from the original request.

Whatever arrives (garbage, huge, not JSON), nothing raises; memory is bounded (pending calls, tasks, agents)."""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boshlab import wire
from boshlab.timeline import DIRECTOR, HeartbeatSummary, Kind, TimelineEvent

# (deployment, "group/index", instance id) of an agent, or None when the director does not know it (yet).
Name = tuple[str | None, str, str | None]
Names = Callable[[str], Name | None]

MAX_PAYLOAD = 4 * 1024 * 1024     # nats-server's max_payload in the lab: anything larger is not read
MAX_KEPT = 64 * 1024              # bodies larger than this are not kept whole in events (the ring holds 10k)
MAX_PENDING = 10_000              # requests waiting for a reply; the oldest is forgotten beyond this
MAX_TASKS = 10_000                # long-running actions being polled
MAX_AGENTS = 10_000               # agents whose last job_state is remembered
MAX_SUMMARY = 200                 # instances named in one heartbeat summary (the ring holds 10k events: a 10k-VM
                                  # fleet's summaries would otherwise keep 100M entries); the rest are counted
TEXT_LIMIT = 300
RETRIED_AT_ONCE = ("ping",)       # sent again with short timeouts: a second one means the first got no answer


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _agent_of_reply_to(reply_to: str) -> str | None:
    """``director.<proc>.<agent>.<req>`` -> ``<agent>`` (None for another shape)."""
    parts = reply_to.split(".")
    return parts[2] if len(parts) == 4 and parts[0] == "director" else None


@dataclass
class _Call:
    call: str
    agent_id: str
    method: str
    arguments: list[Any]
    message: Any
    ts: float
    subject: str
    name: Name | None
    agent_task_id: str | None = None
    polls: int = 0
    same: tuple[str, str, str] = ("", "", "")   # (agent, method, arguments): a retry of it supersedes it
    last_seen: float = 0.0          # the last request or poll of it (a task the director stopped polling expires)


@dataclass
class _Poll:
    """A ``get_task`` request folded into the long-running call it polls."""
    task: _Call
    ts: float


@dataclass
class _Heartbeats:
    started: float | None = None
    count: int = 0
    states: dict[str, str] = field(default_factory=dict)


class Correlator:
    """Feed every message (``feed``); call ``expire(now)`` and ``tick(now)`` about every second.

    ``timeout``: seconds after which an unanswered request is a ``reply`` of state ``timeout`` (the director's
    RPC timeout) and after which a long-running action nobody polls any more times out. ``window``: seconds of
    heartbeats summarised in one ``heartbeats`` event."""

    def __init__(self, names: Names, timeout: float = 45.0, window: float = 10.0,
                 max_pending: int = MAX_PENDING) -> None:
        self.names = names
        self.timeout = timeout
        self.window = window
        self.max_pending = max_pending
        self._pending: OrderedDict[str, _Call | _Poll] = OrderedDict()
        self._tasks: OrderedDict[tuple[str, str], _Call] = OrderedDict()
        self._job_states: OrderedDict[str, str] = OrderedDict()     # agent id -> last job_state
        self._latest: dict[tuple[str, str, str], str] = {}            # (agent, method, args) -> pending call
        self._hb = _Heartbeats()
        self.evicted = 0            # pending calls forgotten because of the cap
        self.ignored = 0            # messages that were not understood

    # --- entry point -----------------------------------------------------------------------------------

    def feed(self, subject: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        try:
            return self._feed(subject, payload, ts)
        except Exception as e:   # noqa: BLE001 - a message must never stop the timeline
            self.ignored += 1
            return [self._note(ts, subject, f"could not read a message on {_clip(subject, 80)}: "
                                            f"{type(e).__name__}: {_clip(str(e), 120)}")]

    def _feed(self, subject: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        if subject.startswith("agent."):
            return self._request(subject, subject[len("agent."):], payload, ts)
        if subject.startswith("hm.agent.heartbeat."):
            return self._heartbeat(subject, payload, ts)
        if subject.startswith("hm.agent.alert."):
            return self._alert(subject, payload, ts)
        if subject.startswith("hm.agent.shutdown."):
            agent_id = subject[len("hm.agent.shutdown."):]
            ev = self._base("note", ts, subject, agent_id, self._name(agent_id))
            ev["src"] = ev.get("instance") or agent_id
            ev["text"] = f"{ev['src']}: the agent is shutting down"
            return [ev]
        key = wire.request_id_of(subject)
        if key in self._pending:
            return self._reply(subject, key, payload, ts)
        return []                  # anything else crossing NATS (operators' traffic, other inboxes)

    # --- requests --------------------------------------------------------------------------------------

    def _request(self, subject: str, agent_id: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        if len(payload) > MAX_PAYLOAD:
            self.ignored += 1
            return [self._note(ts, subject, f"a message of {len(payload)} bytes on {_clip(subject, 80)}: not read")]
        try:
            req = wire.decode_request(payload)
        except wire.WireError as e:
            self.ignored += 1
            return [self._note(ts, subject, f"not an agent request on {_clip(subject, 80)}: {_clip(str(e), 120)}")]
        call = wire.request_id_of(req["reply_to"])
        method, args = req["method"], req["arguments"]
        if method == "get_task" and args and isinstance(args[0], str):
            task = self._tasks.get((agent_id, args[0]))
            if task is not None:
                task.polls += 1
                task.last_seen = ts
                self._remember(call, _Poll(task, ts))
                return []
        kept = self._kept(payload, req)
        out: list[TimelineEvent] = []
        same = (agent_id, method, json.dumps(args, default=str)[:200] if kept is req else str(len(payload)))
        earlier = self._latest.get(same) if method in RETRIED_AT_ONCE else None
        if earlier is not None:
            # The same ping again while the first is unanswered: the director gave up on it and asked again
            # (a new VM is pinged with short timeouts until its agent answers). The first timed out, now.
            old = self._pending.get(earlier)
            if isinstance(old, _Call):
                self._forget(earlier)
                out.append(self._timed_out(old, ts))
        c = _Call(call, agent_id, method, list(args) if kept is req else ["…"], kept, ts, subject,
                  self._name(agent_id), same=same, last_seen=ts)
        self._remember(call, c)
        self._latest[same] = call
        ev = self._call_event("request", c, ts)
        ev["state"] = "sent"
        out.append(ev)
        return out

    def _remember(self, call: str, what: _Call | _Poll) -> None:
        self._pending[call] = what
        self._pending.move_to_end(call)
        while len(self._pending) > self.max_pending:
            self._forget(next(iter(self._pending)))
            self.evicted += 1

    def _forget(self, key: str) -> _Call | _Poll | None:
        what = self._pending.pop(key, None)
        if isinstance(what, _Call) and self._latest.get(what.same) == key:
            del self._latest[what.same]
        return what

    # --- replies ---------------------------------------------------------------------------------------

    def _reply(self, subject: str, key: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        pending = self._forget(key)
        assert pending is not None
        value: Any = None
        exception: str | None = None
        body: Any = None
        if len(payload) > MAX_PAYLOAD:
            exception = f"a reply of {len(payload)} bytes (not read)"
        else:
            try:
                body = wire.parse_json(payload)
            except wire.WireError as e:
                exception = f"malformed reply: {_clip(str(e), 120)}"
            else:
                if isinstance(body, dict) and "exception" in body:
                    exc = body["exception"]
                    exception = str(exc.get("message", exc) if isinstance(exc, dict) else exc)
                elif isinstance(body, dict) and "value" in body:
                    value = body["value"]
                else:
                    exception = f"malformed reply: {_clip(json.dumps(body, default=str), 120)}"
        if isinstance(pending, _Poll):
            task = pending.task
            task.last_seen = ts
            if exception is None and wire.running_task_id(value) == task.agent_task_id:
                return []                                   # still running: folded
            self._tasks.pop((task.agent_id, task.agent_task_id or ""), None)
            return [self._final(task, subject, ts, value, exception, body, payload)]
        c = pending
        if exception is None:
            task_id = wire.running_task_id(value)
            if task_id is not None:
                c.agent_task_id = task_id
                c.last_seen = ts
                self._tasks[(c.agent_id, task_id)] = c
                while len(self._tasks) > MAX_TASKS:
                    self._tasks.popitem(last=False)
                ev = self._call_event("progress", c, ts)
                ev["state"] = "running"
                ev["subject"] = subject
                ev["latency_ms"] = round((ts - c.ts) * 1000, 1)
                ev["value"] = value
                return [ev]
        return [self._final(c, subject, ts, value, exception, body, payload)]

    def _final(self, c: _Call, subject: str, ts: float, value: Any, exception: str | None, body: Any,
               payload: bytes) -> TimelineEvent:
        ev = self._call_event("reply", c, ts)
        ev["subject"] = subject
        ev["state"] = "failed" if exception is not None else "done"
        ev["latency_ms"] = round((ts - c.ts) * 1000, 1)
        if c.agent_task_id is not None:
            ev["polls"] = c.polls
        if exception is not None:
            ev["exception"] = _clip(exception, 4096)
        else:
            ev["value"] = value if len(payload) <= MAX_KEPT else {"truncated_bytes": len(payload)}
        ev["message"] = body if len(payload) <= MAX_KEPT and body is not None else {"truncated_bytes": len(payload)}
        return ev

    # --- time ------------------------------------------------------------------------------------------

    def expire(self, now: float) -> list[TimelineEvent]:
        """Requests unanswered for ``timeout`` seconds -> ``reply`` state ``timeout``; long-running actions no
        one has polled for ``timeout`` seconds (the director gave up) likewise. Unanswered polls are dropped."""
        out: list[TimelineEvent] = []
        while self._pending:
            key, first = next(iter(self._pending.items()))
            started = first.ts
            if now - started < self.timeout:
                break
            self._forget(key)
            if isinstance(first, _Call) and first.agent_task_id is None:
                out.append(self._timed_out(first, now))
        for tkey, task in list(self._tasks.items()):
            if now - task.last_seen >= self.timeout:    # polls renew last_seen: the director stopped polling
                del self._tasks[tkey]
                out.append(self._timed_out(task, now))
        return out

    def _timed_out(self, c: _Call, now: float) -> TimelineEvent:
        ev = self._call_event("reply", c, now)
        ev["state"] = "timeout"
        ev["latency_ms"] = round((now - c.ts) * 1000, 1)
        if c.agent_task_id is not None:
            ev["polls"] = c.polls
        return ev

    def tick(self, now: float) -> list[TimelineEvent]:
        """The heartbeat summary of the window, once ``window`` seconds passed since its first heartbeat."""
        hb = self._hb
        if hb.started is None or now - hb.started < self.window:
            return []
        return [self._flush(now, [])]

    def _flush(self, now: float, changed: list[str]) -> TimelineEvent:
        hb = self._hb
        started = now if hb.started is None else hb.started
        states = hb.states
        if len(states) > MAX_SUMMARY:
            kept = {name: states[name] for name in changed if name in states}
            for name, state in states.items():
                if len(kept) >= MAX_SUMMARY:
                    break
                kept.setdefault(name, state)
            omitted = len(states) - len(kept)
        else:
            kept, omitted = dict(states), 0
        summary: HeartbeatSummary = {"count": hb.count, "window_s": round(now - started, 3), "instances": kept}
        if omitted:
            summary["omitted"] = omitted
        if changed:
            summary["changed"] = changed
        self._hb = _Heartbeats()
        ev: TimelineEvent = {"kind": "heartbeats", "ts": now, "src": "nats", "dst": DIRECTOR,
                             "subject": "hm.agent.heartbeat.*", "heartbeats": summary}
        if changed:
            ev["text"] = f"{', '.join(changed)}: job_state changed"
        return ev

    # --- health monitor subjects -----------------------------------------------------------------------

    def _heartbeat(self, subject: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        agent_id = subject[len("hm.agent.heartbeat."):]
        state = "?"
        if len(payload) <= MAX_KEPT:
            try:
                body = wire.parse_json(payload)
            except wire.WireError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("job_state"), str):
                state = _clip(body["job_state"], 40)
        name = self._name(agent_id)
        who = name[1] if name else agent_id
        hb = self._hb
        if hb.started is None:
            hb.started = ts
        hb.count += 1
        hb.states[who] = state
        if len(hb.states) > MAX_AGENTS:
            hb.states.pop(next(iter(hb.states)))
        before = self._job_states.get(agent_id)
        self._job_states[agent_id] = state
        self._job_states.move_to_end(agent_id)
        while len(self._job_states) > MAX_AGENTS:
            self._job_states.popitem(last=False)
        if before is not None and before != state:
            ev = self._flush(ts, [who])
            if name:
                ev["deployment"], ev["instance"], ev["instance_id"] = name
            ev["agent_id"] = agent_id
            return [ev]
        return []

    def _alert(self, subject: str, payload: bytes, ts: float) -> list[TimelineEvent]:
        agent_id = subject[len("hm.agent.alert."):]
        ev = self._base("alert", ts, subject, agent_id, self._name(agent_id))
        ev["src"] = ev.get("instance") or agent_id
        ev["dst"] = DIRECTOR
        text = f"{len(payload)} bytes (not read)"
        if len(payload) <= MAX_KEPT:
            try:
                body = wire.parse_json(payload)
            except wire.WireError as e:
                text = f"unreadable alert: {_clip(str(e), 120)}"
            else:
                ev["message"] = body
                if isinstance(body, dict):
                    parts = [str(body[k]) for k in ("severity", "title", "summary") if body.get(k) not in (None, "")]
                    text = " ".join(parts) if parts else json.dumps(body, default=str)
                else:
                    text = json.dumps(body, default=str)
        ev["text"] = _clip(text)
        return [ev]

    # --- event shapes ----------------------------------------------------------------------------------

    def _name(self, agent_id: str) -> Name | None:
        try:
            return self.names(agent_id)
        except Exception:   # noqa: BLE001 - a lookup failing must not lose the event
            return None

    def _base(self, kind: Kind, ts: float, subject: str, agent_id: str, name: Name | None) -> TimelineEvent:
        ev: TimelineEvent = {"kind": kind, "ts": ts, "subject": subject, "agent_id": agent_id,
                             "deployment": None, "instance": None, "instance_id": None}
        if name is not None:
            ev["deployment"], ev["instance"], ev["instance_id"] = name
        return ev

    def _call_event(self, kind: Kind, c: _Call, ts: float) -> TimelineEvent:
        if c.name is None or c.name[2] is None:
            c.name = self._name(c.agent_id) or c.name     # a new VM's instance is known once the director recorded it
        ev = self._base(kind, ts, c.subject, c.agent_id, c.name)
        ev["src"] = DIRECTOR
        ev["dst"] = ev.get("instance") or c.agent_id
        ev["method"] = c.method
        ev["call"] = c.call
        ev["arguments"] = c.arguments
        if c.agent_task_id is not None:
            ev["agent_task_id"] = c.agent_task_id
        if kind == "request":
            ev["message"] = c.message
        return ev

    def _note(self, ts: float, subject: str, text: str) -> TimelineEvent:
        return {"kind": "note", "ts": ts, "subject": subject, "src": "nats", "text": _clip(text)}

    @staticmethod
    def _kept(payload: bytes, req: wire.Request) -> Any:
        return req if len(payload) <= MAX_KEPT else {"truncated_bytes": len(payload), "method": req["method"]}
