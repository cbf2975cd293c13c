"""Instances: one row per instance of an instance group, with its VM (if any) and its last apply spec.

Read for listings of a thousand instances and by the health monitor every few seconds, so reading is cheap:
rows are built from plain tuples, the apply spec (a few KiB of JSON) is parsed only when read and then kept,
its ``configuration_hash`` has a column of its own, and ``all()`` reads again only after a write."""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from boshlab.contracts import ApplySpec

from .db import Database
from .rows import COLUMNS, InstanceRow, NetworkAddress, parse_networks

SELECT = f"SELECT {', '.join(COLUMNS)} FROM instances"      # InstanceRow.build's order
SPECS_KEPT = 2048       # parsed apply specs kept (one per instance): listings of a deployment parse each once
ALL_MAX_AGE = 30.0      # seconds ``all()`` may answer from what it read, when this store wrote nothing since


def _hash(spec: ApplySpec) -> str | None:
    h = spec.get("configuration_hash") if isinstance(spec, dict) else None
    return h if isinstance(h, str) else None


class Instances:
    """Rows come with their apply spec unparsed (parsed on first read, see rows.LazyField); a spec read is
    kept, keyed by instance and its exact text, so listing the same instances again parses nothing (rows are
    values: a kept spec is shared by the rows read later, never change it in place)."""

    def __init__(self, db: Database, all_max_age: float = ALL_MAX_AGE) -> None:
        self.db = db
        self.all_max_age = all_max_age
        self._specs: OrderedDict[str, tuple[str, ApplySpec | None]] = OrderedDict()
        self._all: tuple[int, float, list[InstanceRow]] | None = None    # (db.changes, when, rows)
        self._nets: OrderedDict[str, dict[str, NetworkAddress]] = OrderedDict()   # networks column text -> parsed

    def _spec(self, instance_id: str, text: str) -> ApplySpec | None:
        kept = self._specs.get(instance_id)
        if kept is not None and kept[0] == text:
            self._specs.move_to_end(instance_id)
            return kept[1]
        try:
            spec: ApplySpec | None = json.loads(text)
        except (TypeError, ValueError):
            spec = None
        self._specs[instance_id] = (text, spec)
        self._specs.move_to_end(instance_id)
        while len(self._specs) > SPECS_KEPT:
            self._specs.popitem(last=False)
        return spec

    def _networks(self, text: str) -> dict[str, NetworkAddress]:
        kept = self._nets.get(text)
        if kept is None:
            kept = self._nets[text] = parse_networks(text)
            while len(self._nets) > 2 * SPECS_KEPT:
                self._nets.popitem(last=False)
        else:
            self._nets.move_to_end(text)
        return dict(kept)               # a dict of its own per row (its addresses are frozen)

    def _row(self, r: dict[str, Any]) -> InstanceRow:
        return InstanceRow.of(r, self._spec, self._networks)

    async def _select(self, where: str = "", params: tuple[Any, ...] = ()) -> list[InstanceRow]:
        """``SELECT <COLUMNS> FROM instances <where>`` as rows, read as tuples (a listing of thousands)."""
        build, spec, nets = InstanceRow.build, self._spec, self._networks
        return [build(t, spec, nets) for t in await self.db.tuples(SELECT + where, params)]

    async def get(self, instance_id: str) -> InstanceRow | None:
        r = await self.db.one("SELECT * FROM instances WHERE id=?", (instance_id,))
        return self._row(r) if r else None

    async def of_deployment(self, deployment: str) -> list[InstanceRow]:
        return await self._select(" WHERE deployment=? ORDER BY group_name, idx", (deployment,))

    async def with_vms(self) -> list[InstanceRow]:
        return await self._select(" WHERE vm_cid IS NOT NULL ORDER BY deployment, group_name, idx")

    async def all(self) -> list[InstanceRow]:
        """Every instance. The health monitor and the watch's names ask every few seconds: with 10,000
        instances the rows are read again only after a write through this store (``Database.changes``), or
        ``all_max_age`` seconds (someone else may write the file)."""
        changes, now = self.db.changes, time.monotonic()      # taken before the read: a write during it reads again
        kept = self._all
        if kept is not None and kept[0] == changes and now - kept[1] < self.all_max_age:
            return list(kept[2])
        rows = await self._select()
        self._all = (changes, now, rows)
        return list(rows)

    async def counts(self, deployment: str) -> tuple[int, int]:
        """(instances, VMs) of a deployment."""
        r = await self.db.one("SELECT COUNT(*) AS n, SUM(vm_cid IS NOT NULL) AS vms FROM instances WHERE deployment=?",
                              (deployment,)) or {}
        return int(r.get("n") or 0), int(r.get("vms") or 0)

    async def deployments_missing_vms(self) -> list[str]:
        rows = await self.db.all("SELECT DISTINCT deployment FROM instances WHERE vm_cid IS NULL ORDER BY deployment")
        return [str(r["deployment"]) for r in rows]

    async def ips_in_use(self, ip_range: str, exclude_deployment: str) -> dict[str, str]:
        """IP -> the instance holding it, on a manual network's range, outside one deployment."""
        out: dict[str, str] = {}
        for r in await self._select(" WHERE deployment != ?", (exclude_deployment,)):
            for n in r.networks.values():
                if n.range == ip_range:
                    out[n.ip] = f"{r.deployment}/{r.label}"
        return out

    async def vm_created(self, instance_id: str, deployment: str, group: str, index: int, agent_id: str, vm_cid: str,
                         vm_name: str, ip: str | None, networks: dict[str, NetworkAddress], state: str) -> InstanceRow:
        """Record the instance's new VM (a new agent; the instance keeps its id and IPs). Dirty until updated."""
        nets = {n: {"ip": a.ip, "range": a.range} for n, a in networks.items()}
        await self.db.execute(
            "INSERT INTO instances (id, deployment, group_name, idx, agent_id, vm_cid, vm_name, ip, networks, "
            "vm_created_at, state, dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(id) DO UPDATE SET "
            "agent_id=excluded.agent_id, vm_cid=excluded.vm_cid, vm_name=excluded.vm_name, ip=excluded.ip, "
            "networks=excluded.networks, vm_created_at=excluded.vm_created_at, apply_spec=NULL, configuration_hash=NULL, "
            "dirty=1",
            (instance_id, deployment, group, index, agent_id, vm_cid, vm_name, ip, json.dumps(nets), time.time(), state))
        row = await self.get(instance_id)
        assert row is not None
        return row

    async def vm_gone(self, instance_id: str) -> None:
        """The instance has no VM any more (deleted, vanished): the next deploy makes one."""
        await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, vm_name=NULL, dirty=1 WHERE id=?",
                              (instance_id,))

    async def vm_gone_by_cid(self, vm_cid: str) -> None:
        await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, vm_name=NULL, dirty=1 WHERE vm_cid=?",
                              (vm_cid,))

    async def mark_dirty(self, instance_id: str) -> None:
        await self.db.execute("UPDATE instances SET dirty=1 WHERE id=?", (instance_id,))

    async def applied(self, instance_id: str, spec: ApplySpec) -> None:
        await self.db.execute("UPDATE instances SET apply_spec=?, configuration_hash=? WHERE id=?",
                              (json.dumps(spec), _hash(spec), instance_id))

    async def updated(self, instance_id: str, spec: ApplySpec, state: str) -> None:
        """The update finished: the spec the agent runs, the state it is in, no longer dirty."""
        await self.db.execute("UPDATE instances SET apply_spec=?, configuration_hash=?, state=?, dirty=0 WHERE id=?",
                              (json.dumps(spec), _hash(spec), state, instance_id))

    async def delete(self, instance_id: str) -> None:
        await self.db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
        self._specs.pop(instance_id, None)
