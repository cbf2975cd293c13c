"""NATS RPC to agents, as the BOSH director does it (``nats_rpc.rb`` + ``agent_client.rb``).

One subscription to ``director.<process-uuid>.>``; each request gets
``reply_to = director.<process-uuid>.<agent-id>.<request-uuid>`` and is matched by the last token.
Long-running agent actions are polled with ``get_task`` until they leave the ``running`` state.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from boshlab import wire
from boshlab.httpauth import redact_url

log = logging.getLogger("director.nats")

DebugSink = Callable[[str], None]
RETRIES = {"get_state": 2, "get_task": 4}
CANCELLABLE = ("drain", "run_errand")   # the agent can cancel these (cancel_task)
# Long-running agent tasks, and how long the director waits for each before it gives up with a named error
# (BOSH_LAB_AGENT_TASK_DEADLINE, BOSH_LAB_AGENT_LONG_TASK_DEADLINE): what a lab's jobs may need, no more.
FIRST_POLL = 0.01       # seconds before the first get_task of a long-running action
POLL_FRACTION = 0.2     # then wait a fifth of the time the action has taken so far (at most the poll interval)
LONG_TASKS = ("compile_package", "drain", "migrate_disk", "fetch_logs", "run_errand")


@dataclass(frozen=True)
class Deadlines:
    task: float = 600.0          # apply, stop, start, mount_disk, ...: minutes at most in a lab
    long_task: float = 3600.0    # compiling, migrating a disk, collecting logs
    drain: float = 3600.0        # a drain script (and its dynamic drain) as a whole

    def of(self, method: str) -> float:
        if method == "drain":
            return self.drain
        return self.long_task if method in LONG_TASKS else self.task

    @staticmethod
    def setting(method: str) -> str:
        if method == "drain":
            return "BOSH_LAB_AGENT_DRAIN_DEADLINE"
        return "BOSH_LAB_AGENT_LONG_TASK_DEADLINE" if method in LONG_TASKS else "BOSH_LAB_AGENT_TASK_DEADLINE"


class RpcTimeout(Exception):
    pass


class AgentError(Exception):
    """The agent answered with an exception (its message is kept)."""


class NatsRpc:
    def __init__(self, url: str) -> None:
        self.url = url
        self.process_uuid = str(uuid.uuid4())
        self._nc: NATS | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self.connected_since: float | None = None    # monotonic time of the last (re)connection
        self._subscriptions: list[tuple[str, Callable[[Msg], Awaitable[None]]]] = []
        self._connecting: asyncio.Task[None] | None = None
        self.last_error = ""

    def start(self) -> None:
        """Connect in the background, retrying until NATS answers: the director serves its API meanwhile
        (``/info`` says NATS is down) and requests fail at once with a named error."""
        self._connecting = asyncio.create_task(self.connect(), name="nats-connect")

    async def wait_connected(self, timeout: float) -> bool:
        if self._connecting is not None:
            await asyncio.wait({self._connecting}, timeout=timeout)
        return self.connected

    async def connect(self) -> None:
        async def on_error(e: Exception) -> None:
            self.last_error = str(e) or type(e).__name__
            log.warning("NATS: %s", e)

        async def on_disconnected() -> None:
            self.connected_since = None
            log.warning("NATS: disconnected from %s", self.redacted_url)

        async def on_reconnected() -> None:
            self.connected_since = time.monotonic()
            log.info("NATS: reconnected to %s", self.redacted_url)

        nc = await nats.connect(self.url, name=f"bosh-lab-director-{self.process_uuid}", connect_timeout=3,
                                max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=on_error,
                                disconnected_cb=on_disconnected, reconnected_cb=on_reconnected)
        await nc.subscribe(wire.director_inbox(self.process_uuid) + ".>", cb=self._on_reply)
        for subject, cb in self._subscriptions:
            await nc.subscribe(subject, cb=cb)
        self._nc = nc
        self.connected_since = time.monotonic()
        log.info("connected to NATS, inbox %s", wire.director_inbox(self.process_uuid))

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.drain()

    def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
        """Listen on ``subject`` (the health monitor's heartbeats) once connected (and again on reconnects)."""
        assert self._nc is None, "subscribe before start()"
        self._subscriptions.append((subject, cb))

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def steady_for(self, seconds: float) -> bool:
        """Connected, and for at least ``seconds``: heartbeats missed during an outage have had time to come
        back, so silence means an agent is gone, not that the director could not hear it."""
        since = self.connected_since
        return self.connected and since is not None and time.monotonic() - since >= seconds

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._pending.pop(wire.request_id_of(msg.subject), None)
        if fut is not None and not fut.done():
            fut.set_result(msg.data)

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float,
                      debug: DebugSink | None = None) -> Any:
        """Send one request and return the reply's value (raises AgentError / RpcTimeout)."""
        if self._nc is None or not self._nc.is_connected:
            # NATS restarting: wait for the reconnection (within this request's time), then give up by name.
            ends = time.monotonic() + timeout
            while time.monotonic() < ends and not self.connected:   # noqa: ASYNC110 - nats-py has no event for it
                await asyncio.sleep(0.1)
        if self._nc is None or not self._nc.is_connected:
            raise RpcTimeout(f"Cannot send '{method}' to {agent_id}: the director has no NATS connection "
                             f"(NATS at {self.redacted_url}: {self.last_error or 'connecting'})")
        request_id = str(uuid.uuid4())
        reply_to = wire.reply_subject(self.process_uuid, agent_id, request_id)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        payload = wire.encode_request(method, args, reply_to)
        subject = wire.agent_subject(agent_id)
        if debug:
            debug(f"SENT: {subject} {payload.decode()}")
        await self._nc.publish(subject, payload)
        try:
            data = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise RpcTimeout(f"Timed out sending '{method}' to {agent_id} after {timeout:g} seconds") from None
        finally:
            self._pending.pop(request_id, None)
        if debug:
            debug(f"RECEIVED: {reply_to} {data.decode(errors='replace')}")
        try:
            return wire.decode_reply(data)
        except wire.AgentException as e:
            raise AgentError(str(e)) from None
        except wire.WireError as e:
            raise AgentError(f"agent {agent_id} sent a malformed reply to '{method}': {e}") from None


class Agents:
    """Makes an AgentClient per agent, with the director's timeouts and a task's debug log."""

    def __init__(self, rpc: NatsRpc, timeout: float = 45.0, poll_interval: float = 1.0,
                 debug: DebugSink | None = None, deadlines: Deadlines | None = None) -> None:
        self.rpc, self.timeout, self.poll_interval, self.debug = rpc, timeout, poll_interval, debug
        self.deadlines = deadlines or Deadlines()

    def __call__(self, agent_id: str, timeout: float | None = None) -> AgentClient:
        return AgentClient(self.rpc, agent_id, timeout=timeout or self.timeout, poll_interval=self.poll_interval,
                           debug=self.debug, deadlines=self.deadlines)

    def for_task(self, debug: DebugSink) -> Agents:
        return Agents(self.rpc, self.timeout, self.poll_interval, debug, self.deadlines)

    @property
    def connected(self) -> bool:
        return self.rpc.connected

    @property
    def redacted_url(self) -> str:
        return self.rpc.redacted_url


def poll_delay(elapsed: float, poll_interval: float) -> float:
    """How long to wait before the next ``get_task`` of an action running for ``elapsed`` seconds.

    BOSH polls every second; most agent tasks end in milliseconds or a second or two, and a fixed second
    (or a doubling one) makes the director learn of the end up to a second (or as long again) late. The lab
    asks after 10 ms, then after a fifth of the time taken so far: it learns of the end at most ~20 % (and
    one round trip) late, with a few dozen polls for a task of seconds, and polls every ``poll_interval`` (1 s)
    once a task runs for 5 s or more (compiles). ``get_task`` itself is BOSH's, unchanged."""
    return min(max(FIRST_POLL, elapsed * POLL_FRACTION), poll_interval)


class AgentClient:
    """Talks to one agent: plain requests, and long-running ones polled with ``get_task``."""

    def __init__(self, rpc: NatsRpc, agent_id: str, *, timeout: float = 45.0, poll_interval: float = 1.0,
                 debug: DebugSink | None = None, deadlines: Deadlines | None = None) -> None:
        self.rpc, self.agent_id, self.timeout, self.poll_interval, self.debug = rpc, agent_id, timeout, poll_interval, debug
        self.deadlines = deadlines or Deadlines()

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
        """Send; if the agent answers with a running task, poll get_task until it is done, at most the
        method's deadline (then RpcTimeout names it). When the director's task is cancelled meanwhile, or the
        deadline passes, a cancellable agent task (drain) is cancelled too (``cancel_task``)."""
        value = await self.call(method, *args)
        task_id = wire.running_task_id(value)
        deadline = self.deadlines.of(method)
        started = time.monotonic()
        ends = started + deadline
        try:
            while task_id is not None:
                now = time.monotonic()
                if now >= ends:
                    raise RpcTimeout(f"'{method}' on agent {self.agent_id} did not finish within {deadline:g} seconds "
                                     f"(agent task {task_id}; {Deadlines.setting(method)})")
                await asyncio.sleep(poll_delay(now - started, self.poll_interval))
                try:
                    value = await self.call("get_task", task_id)
                except AgentError as e:
                    if "could not be found" in str(e):
                        raise AgentError(f"the agent no longer knows its task {task_id} of '{method}' (did the agent "
                                         f"restart?): its outcome is unknown ({e})") from None
                    raise
                if wire.running_task_id(value) is None:
                    return value
        except (asyncio.CancelledError, RpcTimeout):
            if task_id is not None and method in CANCELLABLE:
                try:
                    await asyncio.shield(self.call("cancel_task", task_id, timeout=5))
                except (AgentError, RpcTimeout) as e:
                    log.warning("cancel_task %s on %s: %s", task_id, self.agent_id, e)
            raise
        return value

    async def ping(self, timeout: float = 1.0) -> bool:
        try:
            return bool(await self.rpc.request(self.agent_id, "ping", [], timeout, self.debug) == "pong")
        except (RpcTimeout, AgentError):
            return False
