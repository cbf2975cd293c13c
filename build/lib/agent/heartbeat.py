"""Heartbeats on ``hm.agent.heartbeat.<agent_id>`` (protocol.md §1.3): one at start (a single try), then
one every ``env.bosh.heartbeat_interval`` seconds (default 30), each retried up to 60 times, 1 s apart."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from boshlab.contracts import Heartbeat
from boshlab.contracts import Vitals as VitalsReport
from boshlab.wire import heartbeat_subject

from .jobsupervisor import JobSupervisor
from .log import log
from .spec import ApplySpec
from .vitals import Vitals


class Publisher(Protocol):
    async def publish(self, subject: str, payload: bytes) -> None: ...
    async def flush(self, timeout: int) -> None: ...


def heartbeat_payload(spec: ApplySpec, job_state: str, vitals: VitalsReport,
                      number_of_processes: int | None) -> Heartbeat:
    job = spec.get("job")
    return {
        "deployment": spec.get("deployment", ""),
        "job": job.get("name") if isinstance(job, dict) else None,
        "index": spec.get("index"),
        "job_state": job_state,
        "vitals": vitals,
        "node_id": spec.get("id", ""),
        "number_of_processes": number_of_processes,
    }


async def collect_payload(spec: ApplySpec, supervisor: JobSupervisor, vitals: Vitals) -> Heartbeat:
    status = await supervisor.status()
    count = None if status is None else len(status.group())
    return heartbeat_payload(spec, supervisor.job_state(status), await asyncio.to_thread(vitals.collect), count)


class Heartbeater:
    def __init__(self, mbus: Publisher, agent_id: str, payload: Callable[[], Awaitable[Heartbeat]],
                 interval: float, retries: int = 60, retry_delay: float = 1.0) -> None:
        self.mbus = mbus
        self.subject = heartbeat_subject(agent_id)
        self.payload = payload
        self.interval = interval
        self.retries = retries
        self.retry_delay = retry_delay

    async def beat(self) -> None:
        data = json.dumps(await self.payload()).encode()
        await self.mbus.publish(self.subject, data)
        log.info("Heartbeat sent")
        await self.mbus.flush(timeout=5)
        log.debug("Heartbeat delivered")

    async def beat_with_retries(self, tries: int) -> None:
        for attempt in range(1, tries + 1):
            try:
                await self.beat()
                return
            except Exception as e:  # noqa: BLE001 - a failed heartbeat must never stop the loop
                log.warning("Heartbeat failed (attempt %d/%d): %s: %s", attempt, tries, type(e).__name__, e)
                if attempt < tries:
                    await asyncio.sleep(self.retry_delay)

    async def run(self) -> None:
        await self.beat_with_retries(1)
        while True:
            await asyncio.sleep(self.interval)
            await self.beat_with_retries(self.retries)
