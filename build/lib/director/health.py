"""The health monitor, inside the director (BOSH runs it as bosh-monitor): it listens to
``hm.agent.heartbeat.*``, says ``unresponsive agent`` for an instance whose heartbeats stopped more than
``agent_timeout`` seconds ago (above two heartbeat intervals, so one late heartbeat never flips it), and, where
resurrection is on, recreates such VMs through a "scan and fix" task, as BOSH's resurrector plugin does.

Meltdown protection (BOSH: ``resurrector.percent_threshold``/``minimum_down_jobs``): when too large a share of
a deployment is down at once, something bigger is wrong (NATS, the host) and recreating VMs would only add
load, so nothing is resurrected and the director says so."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from boshlab import wire

from .store import InstanceRow, Instances
from .tasks import DeploymentLocked

log = logging.getLogger("director.health")

UNRESPONSIVE = "unresponsive agent"
NO_VM = "no vm"


@dataclass
class Heartbeat:
    at: float
    payload: dict[str, Any]


def process_state(has_vm: bool, hb: Heartbeat | None, now: float, timeout: float, watching_since: float) -> str:
    """What ``instances`` shows: the agent's last ``job_state`` while heartbeats are fresh; ``unresponsive
    agent`` once none came for ``timeout`` seconds (or none at all since the director started listening that
    long ago); ``unknown`` while the director has not listened long enough to tell."""
    if not has_vm:
        return NO_VM
    last = hb.at if hb is not None else None
    if last is None:
        return UNRESPONSIVE if now - watching_since > timeout else "unknown"
    if now - last > timeout:
        return UNRESPONSIVE
    return str(hb.payload.get("job_state") or "unknown") if hb is not None else "unknown"


def meltdown(down: int, total: int, percent: float, minimum: int) -> bool:
    return total > 0 and down >= minimum and 100.0 * down / total > percent


@dataclass(frozen=True)
class HealthSettings:
    agent_timeout: float
    interval: float
    meltdown_percent: float = 50.0
    meltdown_minimum: int = 5


class HealthMonitor:
    """``resurrection_enabled(deployment)``, ``locked(deployment)`` and ``resurrect(deployment, instance ids)``
    (which starts a scan-and-fix task) are the only ways it acts on the rest of the director. It acts only
    while ``nats_steady()``: during a NATS outage, and for an agent timeout after it, every agent looks
    silent, and recreating healthy VMs would be the worst answer."""

    def __init__(self, instances: Instances, settings: HealthSettings,
                 resurrection_enabled: Callable[[str], Awaitable[bool]], locked: Callable[[str], bool],
                 resurrect: Callable[[str, list[str]], Awaitable[int]],
                 nats_steady: Callable[[], bool] = lambda: True) -> None:
        self.instances = instances
        self.settings = settings
        self.resurrection_enabled = resurrection_enabled
        self.locked = locked
        self.resurrect = resurrect
        self.nats_steady = nats_steady
        self.held_back = 0            # rounds the monitor did not act because NATS was not steady
        self.heartbeats: dict[str, Heartbeat] = {}
        self.started_at = time.time()
        self.received = 0
        self._loop: asyncio.Task[None] | None = None
        self._cooldown: dict[str, float] = {}       # deployment -> no resurrection before this time

    async def on_heartbeat(self, msg: Msg) -> None:
        try:
            agent_id = wire.agent_id_of_hm_subject(msg.subject)
            payload = json.loads(msg.data)
        except (wire.WireError, ValueError):
            return
        if isinstance(payload, dict):
            self.heartbeats[agent_id] = Heartbeat(time.time(), payload)
            self.received += 1

    def observe(self, agent_id: str, job_state: str) -> None:
        """What the director itself just saw (get_state, stop): shown at once rather than at the next heartbeat."""
        hb = self.heartbeats.get(agent_id)
        payload = dict(hb.payload) if hb is not None else {}
        payload["job_state"] = job_state
        self.heartbeats[agent_id] = Heartbeat(time.time(), payload)

    def state_of(self, row: InstanceRow, now: float | None = None) -> str:
        hb = self.heartbeats.get(row.agent_id or "")
        return process_state(row.has_vm, hb, now or time.time(), self.settings.agent_timeout, self.started_at)

    def start(self) -> None:
        self.started_at = time.time()
        self._loop = asyncio.create_task(self.run(), name="health-monitor")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    def prune(self, now: float, known: set[str]) -> None:
        """Forget agents no instance has and that have been silent a long while (recreated VMs' old agents)."""
        horizon = now - max(600.0, 10 * self.settings.agent_timeout)
        for agent_id in [a for a, hb in self.heartbeats.items() if hb.at < horizon and a not in known]:
            del self.heartbeats[agent_id]

    async def check(self) -> None:
        rows = await self.instances.all()
        now = time.time()
        self.prune(now, {r.agent_id for r in rows if r.agent_id})
        if not self.nats_steady():
            self.held_back += 1
            return
        by_dep: dict[str, list[InstanceRow]] = {}
        for r in rows:
            by_dep.setdefault(r.deployment, []).append(r)
        s = self.settings
        for dep, members in by_dep.items():
            # unresponsive agents, and instances left without a VM (a replacement that failed): retried
            down = [r for r in members if self.state_of(r, now) in (UNRESPONSIVE, NO_VM)]
            if not down or not await self.resurrection_enabled(dep):
                continue
            if self.locked(dep) or now < self._cooldown.get(dep, 0):
                continue
            if meltdown(len(down), len(members), s.meltdown_percent, s.meltdown_minimum):
                log.warning("meltdown: %d of %d instances of %s are unresponsive; not resurrecting", len(down),
                            len(members), dep)
                self._cooldown[dep] = now + s.agent_timeout
                continue
            log.info("resurrector: %s of %s unresponsive: recreating their VMs", ", ".join(r.label for r in down), dep)
            try:
                await self.resurrect(dep, [r.id for r in down])
            except DeploymentLocked:
                continue
            self._cooldown[dep] = now + s.agent_timeout
