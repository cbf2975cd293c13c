"""Who an agent or an address is, for the timeline: read from the store (instances; the registry's settings
for VMs without an instance yet, compilation VMs among them), cached, read again on a miss (at most once a
``min_interval``). The lookups themselves are synchronous (the correlator is pure): ``ensure`` awaits a
refresh first when an agent is not known, misses of ``by_ip`` are refreshed by the tap's next tick.

A miss reads the store again only if the director wrote to it since the last read (``Store.changes``), or that
read is older than ``max_age``: an agent no instance or VM of this director has (10,000 simulated agents
heartbeating, another lab's agents on the same NATS) stays unknown without a read of every instance per
message."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..store import Store
from .correlator import Name

log = logging.getLogger("director.watch")
MAX_ENTRIES = 50_000      # agents remembered (deleted VMs' late messages keep their names); cleared beyond


class Directory:
    def __init__(self, store: Store, lab_name: str = "", min_interval: float = 0.05, per_agent: float = 1.0,
                 max_age: float = 30.0) -> None:
        self.store = store
        self.lab_name = lab_name
        self.min_interval = min_interval      # between two reads of the store
        self.per_agent = per_agent            # between two reads for the same unknown agent
        self.max_age = max_age                # a miss reads the store again after this long even without a write
        self._changes = -1                    # the store's write count at the last read
        self._tried: dict[str, float] = {}
        self._names: dict[str, Name] = {}
        self._partial: set[str] = set()      # named from the VM's name only: its instance row may come
        self._ips: dict[str, str] = {}
        self._last = 0.0
        self._lock = asyncio.Lock()
        self.missed = False
        self.refreshes = 0

    # --- the synchronous lookups (the correlator's ``names``, the blob log's ``by_ip``) ---------------------

    def names(self, agent_id: str) -> Name | None:
        name = self._names.get(agent_id)
        if name is None or agent_id in self._partial:
            self.missed = True
        return name

    def by_ip(self, ip: str) -> str | None:
        agent_id = self._ips.get(ip)
        if agent_id is None:
            self.missed = True
        return agent_id

    def known(self, agent_id: str) -> bool:
        return agent_id in self._names and agent_id not in self._partial

    # --- refreshing ------------------------------------------------------------------------------------------

    async def ensure(self, agent_id: str) -> None:
        """Read the store again if the agent is not known (waiting for the read once per ``per_agent`` seconds
        for each agent), or known only by its VM's name (not waiting: its instance is recorded any moment)."""
        if self.known(agent_id):
            return
        if agent_id in self._names:
            await self.refresh()
            return
        now = time.monotonic()
        if now - self._tried.get(agent_id, -1e9) < self.per_agent:
            return
        if len(self._tried) > 1000:
            self._tried = {a: t for a, t in self._tried.items() if now - t < self.per_agent}
        self._tried[agent_id] = now
        await self.refresh(wait=True)

    async def refresh_if_missed(self) -> None:
        if self.missed:
            await self.refresh()

    def stale(self) -> bool:
        """Whether a read could find something new: the director wrote to the store since the last read, or
        that read is older than ``max_age`` (someone else may have written)."""
        return self.store.changes != self._changes or time.monotonic() - self._last >= self.max_age

    async def refresh(self, force: bool = False, wait: bool = False) -> None:
        """Read the store again, unless nothing was written since the last read (``stale``) or it was read less
        than ``min_interval`` ago (``wait``: then wait for it)."""
        if not force and not self.stale():
            self.missed = False
            return
        async with self._lock:
            since = time.monotonic() - self._last
            if not force and not self.stale():
                self.missed = False
                return
            if not force and since < self.min_interval:
                if not wait:
                    return
                await asyncio.sleep(self.min_interval - since)
            self._last = time.monotonic()
            self._changes = self.store.changes
            self.missed = False
            try:
                await self._load()
            except Exception as e:   # noqa: BLE001 - names are a nicety; the timeline goes on without them
                log.warning("watch: reading names from the store: %s", e)

    async def _load(self) -> None:
        instances = await self.store.instances.all()
        registry = await self.store.registry.all()
        names: dict[str, Name] = {}
        partial: set[str] = set()
        ips: dict[str, str] = {}
        for row in instances:
            if row.agent_id:
                names[row.agent_id] = (row.deployment, f"{row.group}/{row.index}", row.id)
                for ip in row.ips():
                    ips[ip] = row.agent_id
        deployments: list[str] | None = None
        for settings in registry.values():
            s: dict[str, Any] = dict(settings)
            agent_id = s.get("agent_id")
            if not isinstance(agent_id, str) or not agent_id:
                continue
            for net in dict(s.get("networks") or {}).values():
                if isinstance(net, dict) and isinstance(net.get("ip"), str) and net["ip"]:
                    ips.setdefault(net["ip"], agent_id)
            if agent_id in names:
                continue
            vm = s.get("vm")
            vm_name = str(vm.get("name", "")) if isinstance(vm, dict) else ""
            if "-compile-" in vm_name:
                names[agent_id] = (None, f"compilation/{agent_id[:8]}", None)
                continue
            if deployments is None:
                deployments = sorted((d.name for d in await self.store.deployments.all()), key=len, reverse=True)
            guess = self.guess(vm_name, agent_id, deployments)
            if guess is not None:
                names[agent_id] = guess
                partial.add(agent_id)
        if len(self._names) + len(names) > MAX_ENTRIES:
            self._names.clear()
        self._names.update(names)
        self._partial = {a for a in self._partial if a not in names} | partial
        self._ips = ips
        self.refreshes += 1

    def guess(self, vm_name: str, agent_id: str, deployments: list[str]) -> Name | None:
        """``<lab>-<deployment>-<group>-<index>-<agent id[:8]>`` (director/vms.py's VM names) -> a name, for a
        VM whose instance is not recorded yet (the director records it once the agent answered ``ping``)."""
        rest = vm_name
        if self.lab_name and rest.startswith(self.lab_name + "-"):
            rest = rest[len(self.lab_name) + 1:]
        if rest.endswith("-" + agent_id[:8]):
            rest = rest[:-(len(agent_id[:8]) + 1)]
        for d in deployments:
            if rest.startswith(d + "-"):
                group, _, index = rest[len(d) + 1:].rpartition("-")
                if group and index.isdigit():
                    return (d, f"{group}/{index}", None)
        parts = rest.rsplit("-", 2)
        if len(parts) == 3 and parts[2].isdigit() and parts[0] and parts[1]:
            return (parts[0], f"{parts[1]}/{parts[2]}", None)
        return None
