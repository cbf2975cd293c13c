"""Instances: one row per instance of an instance group, with its VM (if any) and its last apply spec."""
from __future__ import annotations

import json
import time

from boshlab.contracts import ApplySpec

from .db import Database
from .rows import InstanceRow, NetworkAddress


class Instances:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, instance_id: str) -> InstanceRow | None:
        r = await self.db.one("SELECT * FROM instances WHERE id=?", (instance_id,))
        return InstanceRow.of(r) if r else None

    async def of_deployment(self, deployment: str) -> list[InstanceRow]:
        rows = await self.db.all("SELECT * FROM instances WHERE deployment=? ORDER BY group_name, idx", (deployment,))
        return [InstanceRow.of(r) for r in rows]

    async def with_vms(self) -> list[InstanceRow]:
        rows = await self.db.all("SELECT * FROM instances WHERE vm_cid IS NOT NULL ORDER BY deployment, group_name, idx")
        return [InstanceRow.of(r) for r in rows]

    async def all(self) -> list[InstanceRow]:
        return [InstanceRow.of(r) for r in await self.db.all("SELECT * FROM instances")]

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
        rows = await self.db.all("SELECT * FROM instances WHERE deployment != ?", (exclude_deployment,))
        for r in map(InstanceRow.of, rows):
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
            "networks=excluded.networks, vm_created_at=excluded.vm_created_at, apply_spec=NULL, dirty=1",
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
        await self.db.execute("UPDATE instances SET apply_spec=? WHERE id=?", (json.dumps(spec), instance_id))

    async def updated(self, instance_id: str, spec: ApplySpec, state: str) -> None:
        """The update finished: the spec the agent runs, the state it is in, no longer dirty."""
        await self.db.execute("UPDATE instances SET apply_spec=?, state=?, dirty=0 WHERE id=?",
                              (json.dumps(spec), state, instance_id))

    async def delete(self, instance_id: str) -> None:
        await self.db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
