"""NATS RPC to agents, as the BOSH director does it (``nats_rpc.rb`` + ``agent_client.rb``).

One subscription to ``director.<process-uuid>.>``; each request gets
``reply_to = director.<process-uuid>.<agent-id>.<request-uuid>`` and is matched by the last token.
Long-running agent actions are polled with ``get_task`` until they leave the ``running`` state.
"""
from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from boshlab import wire

log = logging.getLogger("director.nats")

DebugSink = Callable[[str], None]
RETRIES = {"get_state": 2, "get_task": 4}
CANCELLABLE = ("drain", "run_errand")   # the agent can cancel these (cancel_task)


class RpcTimeout(Exception):
    pass


class AgentError(Exception):
    """The agent answered with an exception (its message is kept)."""


class NatsRpc:
    def __init__(self, url: str) -> None:
        self.url = url
        self.process_uuid = str(uuid.uuid4())
        self.nc: NATS | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def connect(self) -> None:
        async def on_error(e: Exception) -> None:
            log.warning("NATS: %s", e)

        self.nc = await nats.connect(self.url, name=f"bosh-lab-director-{self.process_uuid}",
                                     max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=on_error)
        await self.nc.subscribe(wire.director_inbox(self.process_uuid) + ".>", cb=self._on_reply)
        log.info("connected to NATS, inbox %s", wire.director_inbox(self.process_uuid))

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()
            self.nc = None

    @property
    def redacted_url(self) -> str:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.url)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._pending.pop(wire.request_id_of(msg.subject), None)
        if fut is not None and not fut.done():
            fut.set_result(msg.data)

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float,
                      debug: DebugSink | None = None) -> Any:
        """Send one request and return the reply's value (raises AgentError / RpcTimeout)."""
        assert self.nc is not None, "not connected to NATS"
        request_id = str(uuid.uuid4())
        reply_to = wire.reply_subject(self.process_uuid, agent_id, request_id)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        payload = wire.encode_request(method, args, reply_to)
        subject = wire.agent_subject(agent_id)
        if debug:
            debug(f"SENT: {subject} {payload.decode()}")
        await self.nc.publish(subject, payload)
        try:
            data = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise RpcTimeout(f"Timed out sending '{method}' to {agent_id} after {timeout:g} seconds") from None
        finally:
            self._pending.pop(request_id, None)
        if debug:
            debug(f"RECEIVED: {reply_to} {data.decode(errors='replace')}")
        try:
            return wire.decode_reply(data)
        except wire.AgentException as e:
            raise AgentError(str(e)) from None


class AgentClient:
    """Talks to one agent: plain requests, and long-running ones polled with ``get_task``."""

    def __init__(self, rpc: NatsRpc, agent_id: str, *, timeout: float = 45.0, poll_interval: float = 1.0,
                 debug: DebugSink | None = None) -> None:
        self.rpc, self.agent_id, self.timeout, self.poll_interval, self.debug = rpc, agent_id, timeout, poll_interval, debug

    async def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        retries = RETRIES.get(method, 0)
        while True:
            try:
                return await self.rpc.request(self.agent_id, method, list(args), timeout or self.timeout, self.debug)
            except RpcTimeout:
                if retries <= 0:
                    raise
                retries -= 1

    async def send_message(self, method: str, *args: Any) -> Any:
        """Send; if the agent answers with a running task, poll get_task until it is done. When the director's
        task is cancelled meanwhile, a cancellable agent task (drain) is cancelled too (``cancel_task``)."""
        value = await self.call(method, *args)
        task_id = wire.running_task_id(value)
        try:
            while task_id is not None:
                await asyncio.sleep(self.poll_interval)
                value = await self.call("get_task", task_id)
                if wire.running_task_id(value) is None:
                    return value
        except asyncio.CancelledError:
            if task_id is not None and method in CANCELLABLE:
                try:
                    await self.call("cancel_task", task_id, timeout=5)
                except (AgentError, RpcTimeout) as e:
                    log.warning("cancel_task %s on %s: %s", task_id, self.agent_id, e)
            raise
        return value

    async def ping(self, timeout: float = 1.0) -> bool:
        try:
            return bool(await self.rpc.request(self.agent_id, "ping", [], timeout, self.debug) == "pong")
        except RpcTimeout:
            return False
