"""The director <-> agent NATS envelope, as pure functions over bytes (no I/O here).

Request  (director -> ``agent.<agent_id>``):
    {"protocol": 3, "method": "apply", "arguments": [...], "reply_to": "director.<proc>.<agent>.<req>"}
Reply    (agent -> reply_to): {"value": ...} or {"exception": {"message": "..."}}
Async    {"value": {"agent_task_id": "...", "state": "running"}}, polled with ``get_task``.
The typed shapes of the values (apply spec, settings, heartbeat, replies) are in ``boshlab.contracts``.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, NotRequired, TypedDict

from .contracts import TaskRunning as TaskRunning  # re-exported; the shared shapes live in boshlab.contracts

PROTOCOL_VERSION = 3
MAX_REPLY_BYTES = 1024 * 1024  # the agent caps replies at 1 MiB
MAX_REQUEST_BYTES = 1024 * 1024  # and refuses requests larger than this (NATS' default max_payload)


class Request(TypedDict):
    method: str
    arguments: list[Any]
    reply_to: str
    protocol: NotRequired[int]


class WireError(ValueError):
    """A message that cannot be understood; the text names what is wrong."""


# --- subjects --------------------------------------------------------------------------------------

def agent_subject(agent_id: str) -> str:
    return f"agent.{agent_id}"


def heartbeat_subject(agent_id: str) -> str:
    return f"hm.agent.heartbeat.{agent_id}"


def shutdown_subject(agent_id: str) -> str:
    return f"hm.agent.shutdown.{agent_id}"


HEARTBEAT_WILDCARD = "hm.agent.heartbeat.*"


def director_inbox(process_uuid: str) -> str:
    return f"director.{process_uuid}"


def reply_subject(process_uuid: str, agent_id: str, request_id: str | None = None) -> str:
    """``director.<director-process-uuid>.<agent-id>.<request-uuid>`` (BOSH since 2017)."""
    return f"{director_inbox(process_uuid)}.{agent_id}.{request_id or uuid.uuid4()}"


def request_id_of(subject: str) -> str:
    """The director routes a reply by the last dot-token of its subject."""
    return subject.rsplit(".", 1)[-1]


def agent_id_of_hm_subject(subject: str) -> str:
    """``hm.agent.heartbeat.<id>`` -> ``<id>`` (the 4th token, as the health monitor takes it)."""
    parts = subject.split(".", 3)
    if len(parts) != 4:
        raise WireError(f"not an hm.agent.* subject: {subject!r}")
    return parts[3]


# --- requests --------------------------------------------------------------------------------------

def encode_request(method: str, arguments: list[Any], reply_to: str) -> bytes:
    req: Request = {"protocol": PROTOCOL_VERSION, "method": method, "arguments": arguments, "reply_to": reply_to}
    return json.dumps(req).encode()


def parse_json(data: bytes) -> Any:
    """``json.loads`` whose every failure is a WireError: bad UTF-8 or JSON (ValueError) and nesting too
    deep for the parser (``[[[[...]]]]`` 100k deep raises RecursionError)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise WireError("message is nested too deeply to parse") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireError(f"message is not JSON: {e}") from None


def decode_request(data: bytes) -> Request:
    """Parse and validate an agent request. Raises WireError naming the problem.

    A message the agent cannot parse, or without ``reply_to``, is dropped (logged) by the agent: there is
    nowhere to answer. Other problems (``method`` or ``arguments`` of the wrong type) can be answered with an
    exception, so callers should check ``reply_to`` first via :func:`reply_to_of`.
    """
    msg = parse_json(data)
    if not isinstance(msg, dict):
        raise WireError(f"message is not a JSON object but {type(msg).__name__}")
    reply_to = msg.get("reply_to")
    if not isinstance(reply_to, str) or not reply_to:
        raise WireError("message has no reply_to")
    method = msg.get("method")
    if not isinstance(method, str) or not method:
        raise WireError("message has no method (a non-empty string)")
    args = msg.get("arguments", [])
    if not isinstance(args, list):
        raise WireError(f"arguments must be a JSON array, got {type(args).__name__}")
    req: Request = {"method": method, "arguments": args, "reply_to": reply_to}
    if "protocol" in msg:
        if not isinstance(msg["protocol"], int) or isinstance(msg["protocol"], bool):
            raise WireError("protocol must be an integer")
        req["protocol"] = msg["protocol"]
    return req


def reply_to_of(data: bytes) -> str | None:
    """The reply subject of a raw message, or None when there is none to answer on."""
    try:
        msg = parse_json(data)
    except WireError:
        return None
    if isinstance(msg, dict) and isinstance(msg.get("reply_to"), str) and msg["reply_to"]:
        return str(msg["reply_to"])
    return None


# --- replies ---------------------------------------------------------------------------------------

def encode_value(value: Any) -> bytes:
    out = json.dumps({"value": value}).encode()
    if len(out) > MAX_REPLY_BYTES:
        return encode_exception("Response exceeded maximum allowed length")
    return out


def encode_exception(message: str) -> bytes:
    out = json.dumps({"exception": {"message": message}}).encode()
    if len(out) > MAX_REPLY_BYTES:
        keep = MAX_REPLY_BYTES // 2 - 64
        message = message[:keep] + "...TRUNCATED..." + message[-keep:]
        out = json.dumps({"exception": {"message": message}}).encode()
    return out


def task_running(task_id: str) -> TaskRunning:
    return {"agent_task_id": task_id, "state": "running"}


class AgentException(Exception):
    """The agent answered ``{"exception": ...}``."""


def decode_reply(data: bytes) -> Any:
    """Return the reply's value, or raise AgentException with the agent's message."""
    msg = parse_json(data)
    if not isinstance(msg, dict):
        raise WireError(f"reply is not a JSON object: {msg!r}")
    if "exception" in msg:
        exc = msg["exception"]
        if isinstance(exc, dict):
            raise AgentException(str(exc.get("message", exc)))
        raise AgentException(str(exc))
    if "value" not in msg:
        raise WireError(f"reply has neither value nor exception: {msg!r}")
    return msg["value"]


def running_task_id(value: Any) -> str | None:
    """The agent task id if ``value`` is the "still running" form, as the director normalises it."""
    if isinstance(value, dict) and value.get("state") == "running" and isinstance(value.get("agent_task_id"), str):
        if "value" not in value:
            return str(value["agent_task_id"])
    return None
