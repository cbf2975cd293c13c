"""The NATS transport, nothing more: connect (retrying), subscribe ``agent.<agent_id>``, publish, flush.

The mbus URL carries the shared user and password (``nats://nats:nats@nats:4222``, the 2013 model);
nats-py takes them from the URL. Reconnects are retried without limit.

Bounds: at most ``max_inflight`` (64) messages are handled at once; while that many are, the subscription
waits, and what arrives meanwhile waits in nats-py's pending queue, itself bounded (``pending_msgs`` 1000
messages, ``pending_bytes`` 64 MiB; beyond that nats-py drops messages and reports a slow consumer).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from boshlab.httpauth import redact_url
from boshlab.wire import agent_subject

from .log import log

Handler = Callable[[bytes], Coroutine[Any, Any, None]]


redact = redact_url


class MBus:
    def __init__(self, url: str, agent_id: str, connect_timeout: float = 5.0, max_inflight: int = 64,
                 pending_msgs: int = 1000, pending_bytes: int = 64 * 1024 * 1024) -> None:
        self.url = url
        self.agent_id = agent_id
        self.connect_timeout = connect_timeout
        self.max_inflight = max_inflight
        self.pending_msgs = pending_msgs
        self.pending_bytes = pending_bytes
        self.nc: Client | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_inflight)

    async def connect(self) -> None:
        """Connect, retrying every 2 s × attempt (at most 10 s) until NATS answers."""
        attempt = 0
        while True:
            attempt += 1
            log.info("Connecting to NATS at %s", redact(self.url))
            try:
                self.nc = await nats.connect(
                    servers=[self.url], name=f"bosh-lab-agent.{self.agent_id}", allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=2, connect_timeout=self.connect_timeout,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected)
                log.info("Connected to NATS at %s", redact(self.url))
                return
            except Exception as e:  # noqa: BLE001 - keep trying whatever the reason
                delay = min(2 * attempt, 10)
                log.warning("NATS connection failed (%s: %s), retrying in %d s", type(e).__name__, e, delay)
                await asyncio.sleep(delay)

    def _client(self) -> Client:
        if self.nc is None:
            raise RuntimeError("not connected to NATS")
        return self.nc

    async def subscribe(self, handler: Handler) -> None:
        """Deliver every message on ``agent.<agent_id>`` to ``handler``, each in its own task, so a slow
        sync action never holds up the next message (e.g. a ``ping`` during ``start``); at most
        ``max_inflight`` at once (nats-py calls ``on_message`` for one message after the other, so waiting
        for a slot here holds the rest in the subscription's bounded pending queue)."""
        async def run(data: bytes) -> None:
            try:
                await handler(data)
            finally:
                self._slots.release()

        async def on_message(msg: Msg) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(run(msg.data))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        subject = agent_subject(self.agent_id)
        await self._client().subscribe(subject, cb=on_message, pending_msgs_limit=self.pending_msgs,
                                       pending_bytes_limit=self.pending_bytes)
        log.info("Subscribed to %s", subject)

    async def publish(self, subject: str, payload: bytes) -> None:
        await self._client().publish(subject, payload)

    async def flush(self, timeout: int = 5) -> None:
        await self._client().flush(timeout=timeout)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()

    async def _on_error(self, e: Exception) -> None:
        log.warning("NATS error: %s: %s", type(e).__name__, e)

    async def _on_disconnected(self) -> None:
        log.warning("Disconnected from NATS")

    async def _on_reconnected(self) -> None:
        log.info("Reconnected to NATS at %s", redact(self.url))
