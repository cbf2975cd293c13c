"""The tap: a NATS connection of its own as the read-only ``monitor`` user, subscribed to ``>``, feeding the
correlator, whose events go to the hub; and the blobstore's access log, followed. It reconnects forever
(each attempt with a deadline) and never stops the director: with NATS down the timeline is just quiet."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from boshlab.httpauth import redact_url
from boshlab.timeline import TimelineEvent

from . import blob_log
from .correlator import Correlator
from .directory import Directory
from .hub import Hub

log = logging.getLogger("director.watch")
CONNECT_DEADLINE = 10.0     # seconds one connection attempt may take
RETRY = 2.0                 # seconds between attempts
LOOKUP_DEADLINE = 2.0       # seconds a message may wait for the names to be read from the store
PENDING_BYTES = 64 << 20    # what nats-py may buffer for the subscription before it drops (slow consumer)
HEARTBEAT = "hm.agent.heartbeat."


def agent_of(subject: str) -> str | None:
    """The agent a subject is about: ``agent.<id>``, ``hm.agent.<kind>.<id>``, ``director.<p>.<id>.<req>``."""
    parts = subject.split(".")
    if parts[0] == "agent" and len(parts) == 2:
        return parts[1]
    if parts[0] == "hm" and len(parts) == 4:
        return parts[3]
    if parts[0] == "director" and len(parts) == 4:
        return parts[2]
    return None


class Tap:
    def __init__(self, url: Callable[[], str], hub: Hub, correlator: Correlator, directory: Directory | None = None,
                 blob_log_path: str = "", interval: float = 1.0, connect_deadline: float = CONNECT_DEADLINE,
                 retry: float = RETRY, dav_director_user: str = "director") -> None:
        self.url = url
        self.hub = hub
        self.correlator = correlator
        self.directory = directory
        self.blob_log_path = blob_log_path
        self.dav_director_user = dav_director_user
        self.interval = interval
        self.connect_deadline = connect_deadline
        self.retry = retry
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: NATS | None = None
        self.messages = 0
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._nats_loop(), name="watch-nats"),
                       asyncio.create_task(self._ticker(), name="watch-tick")]
        if self.blob_log_path:
            self._tasks.append(asyncio.create_task(
                blob_log.follow(self.blob_log_path, self._publish,
                                self.directory.by_ip if self.directory else None,
                                self.directory.names if self.directory else None,
                                director_user=self.dav_director_user), name="watch-blobs"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)     # the NATS loop closes its connection
        self._tasks = []

    def _publish(self, event: TimelineEvent) -> None:
        self.hub.publish(event)

    # --- NATS ----------------------------------------------------------------------------------------------

    async def _nats_loop(self) -> None:
        while True:
            closed = asyncio.Event()
            url = ""
            try:
                url = self.url()
                nc = await asyncio.wait_for(self._connect(url, closed), self.connect_deadline)
            except asyncio.CancelledError:
                raise
            except Exception as e:   # noqa: BLE001 - NATS down, credentials missing: try again, quietly
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.info("watch: NATS %s not reachable yet: %s", redact_url(url) if url else "?", self.last_error)
                await asyncio.sleep(self.retry)
                continue
            self._nc = nc
            log.info("watch: listening to NATS as the read-only monitor (%s)", redact_url(url))
            try:
                await closed.wait()
            finally:
                self._nc = None
                if not nc.is_closed:
                    try:
                        await asyncio.wait_for(nc.close(), 5)
                    except Exception as e:   # noqa: BLE001 - going away: nothing more to do with it
                        log.debug("watch: closing NATS: %s", e)
            await asyncio.sleep(self.retry)

    async def _connect(self, url: str, closed: asyncio.Event) -> NATS:
        async def on_error(e: Exception) -> None:
            self.last_error = str(e)[:300] or type(e).__name__

        async def on_closed() -> None:
            closed.set()

        nc = await nats.connect(url, name="bosh-lab-director-watch", connect_timeout=3, max_reconnect_attempts=-1,
                                reconnect_time_wait=1, error_cb=on_error, closed_cb=on_closed)
        try:
            await nc.subscribe(">", cb=self._on_msg, pending_msgs_limit=200_000, pending_bytes_limit=PENDING_BYTES)
        except BaseException:
            await nc.close()
            raise
        return nc

    async def _on_msg(self, msg: Msg) -> None:
        self.messages += 1
        ts = time.time()
        try:
            subject = msg.subject
            # Heartbeats (every agent, every 30 s: the bulk of the traffic of a large fleet) never wait for the
            # store: the summary names them from the next tick's read. Requests and replies of a new VM do.
            agent_id = None if subject.startswith(HEARTBEAT) else agent_of(subject)
            if agent_id and self.directory is not None and not self.directory.known(agent_id):
                try:
                    await asyncio.wait_for(self.directory.ensure(agent_id), LOOKUP_DEADLINE)
                except TimeoutError:
                    pass
            for ev in self.correlator.feed(subject, msg.data, ts):
                self.hub.publish(ev)
        except Exception as e:   # noqa: BLE001 - one message must not stop the tap
            log.warning("watch: %s: %s", msg.subject[:100], e)

    # --- time ----------------------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                now = time.time()
                for ev in self.correlator.expire(now) + self.correlator.tick(now):
                    self.hub.publish(ev)
                if self.directory is not None:
                    await asyncio.wait_for(self.directory.refresh_if_missed(), LOOKUP_DEADLINE * 5)
            except asyncio.CancelledError:
                raise
            except Exception as e:   # noqa: BLE001 - the ticker must go on
                log.warning("watch: tick: %s", e)
