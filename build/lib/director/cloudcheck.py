"""cloud-check: scan a deployment for VMs that vanished or whose agent does not answer, and apply the
resolutions a person (or the resurrector) chose. The scan is read-only and quick (the CPI + ping); the
resolutions run as a task, recreating VMs through the deploy flow."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .cpi import CPI
from .deploy import DeployRequest
from .nats_rpc import Agents
from .store import Deployments, InstanceRow, Instances
from .tasks import Task, TaskFailed
from .vms import VMs

Redeploy = Callable[[DeployRequest], Awaitable[str]]

RESOLUTIONS = {
    "ignore": "Skip for now",
    "reboot_vm": "Reboot VM",
    "recreate_vm": "Recreate VM and wait for processes to start",
    "delete_vm": "Delete VM",
    "delete_vm_reference": "Delete VM reference",
}
PROBLEM_RESOLUTIONS = {
    "missing_vm": ["ignore", "recreate_vm", "delete_vm_reference"],
    "unresponsive_agent": ["ignore", "reboot_vm", "recreate_vm", "delete_vm", "delete_vm_reference"],
}


@dataclass
class Problem:
    id: str                     # the instance's id: one problem per instance
    type: str                   # missing_vm | unresponsive_agent
    instance: str               # group/id (index)
    description: str
    vm_cid: str
    resolutions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "instance": self.instance, "description": self.description,
                "vm_cid": self.vm_cid,
                "resolutions": [{"name": r, "plan": RESOLUTIONS[r]} for r in self.resolutions]}


async def scan(cpi: CPI, agents: Agents, rows: list[InstanceRow]) -> list[Problem]:
    """VMs whose container vanished (missing_vm), exited, or whose agent does not answer ping
    (unresponsive_agent)."""
    async def check(r: InstanceRow) -> Problem | None:
        if not r.vm_cid:
            return None
        label, cid = r.label, r.vm_cid
        status = await cpi.vm_status(cid)
        if not status.exists:
            return Problem(r.id, "missing_vm", label, f"VM for '{label}' with cloud ID '{cid[:12]}' missing: its "
                           f"container is gone", cid, PROBLEM_RESOLUTIONS["missing_vm"])
        if not status.running:
            return Problem(r.id, "unresponsive_agent", label, f"VM for '{label}' with cloud ID '{cid[:12]}' is not "
                           f"responding: its container exited with code {status.exit_code}", cid,
                           PROBLEM_RESOLUTIONS["unresponsive_agent"])
        if r.agent_id:
            client = agents(r.agent_id)
            for _ in range(2):
                if await client.ping(1.5):
                    return None
        return Problem(r.id, "unresponsive_agent", label, f"VM for '{label}' with cloud ID '{cid[:12]}' is not "
                       f"responding: its agent does not answer ping", cid, PROBLEM_RESOLUTIONS["unresponsive_agent"])
    found = await asyncio.gather(*(check(r) for r in rows))
    return [p for p in found if p is not None]


@dataclass
class CloudCheck:
    cpi: CPI
    agents: Agents
    vms: VMs
    instances: Instances
    deployments: Deployments
    task: Task
    redeploy: Redeploy

    async def forget_vm(self, row: InstanceRow) -> None:
        """Delete the VM if it is still there and drop the instance's reference to it (the instance stays:
        the next deploy, cloud-check or resurrection makes a new VM)."""
        if row.vm_cid:
            await self.vms.delete(row.vm_cid)
        await self.instances.vm_gone(row.id)
        self.task.info(f"{row.label}: VM {str(row.vm_cid or '-')[:12]} deleted, reference removed")

    async def apply_resolutions(self, deployment: str, wanted: dict[str, str]) -> str:
        """Scan again (a problem may have gone away meanwhile), then apply each chosen resolution."""
        task = self.task
        for pid, res in wanted.items():
            if res not in RESOLUTIONS:
                raise TaskFailed(f"unknown resolution '{res}' for problem {pid} (one of {', '.join(RESOLUTIONS)})")
        async with task.step("Scanning VMs", "Checking VM states"):
            rows = [r for r in await self.instances.of_deployment(deployment) if r.id in wanted]
            problems = {p.id: p for p in await scan(self.cpi, self.agents, rows)}
        recreate: list[str] = []
        done: list[str] = []
        steps = [(pid, res) for pid, res in wanted.items()]
        for n, (pid, res) in enumerate(steps, 1):
            p = problems.get(pid)
            row = await self.instances.get(pid)
            if p is None or row is None or row.deployment != deployment:
                task.info(f"problem {pid} is gone: nothing to do")
                continue
            if p.resolutions and res not in p.resolutions:
                raise TaskFailed(f"'{res}' does not resolve {p.type} (one of {', '.join(p.resolutions)})")
            async with task.step("Applying problem resolutions", f"{p.type} {p.instance}: {RESOLUTIONS[res]}", n, len(steps)):
                if res == "ignore":
                    continue
                if res in ("delete_vm", "delete_vm_reference"):
                    await self.forget_vm(row)
                elif res == "reboot_vm":
                    assert row.vm_cid is not None and row.agent_id is not None
                    await self.cpi.reboot_vm(row.vm_cid)
                    await self.vms.wait_until_ready(row.agent_id, row.vm_cid, row.vm_name or row.vm_cid)
                elif res == "recreate_vm":
                    await self.forget_vm(row)
                    recreate.append(pid)
                done.append(f"{p.instance}: {res}")
        if recreate:
            await self._redeploy_only(deployment, recreate)
        return f"{len(done)} resolved" + (f": {'; '.join(done)}" if done else "")

    async def _redeploy_only(self, deployment: str, instance_ids: list[str]) -> None:
        """Deploy the stored manifest (its release versions pinned) for just these instances: new VMs."""
        dep = await self.deployments.get(deployment)
        if dep is None:
            raise TaskFailed(f"Deployment '{deployment}' doesn't exist")
        await self.redeploy(DeployRequest(dep.manifest, only=set(instance_ids), pinned=dep.releases, store=False))

    async def resurrect(self, deployment: str, instance_ids: list[str]) -> str:
        """Recreate the VMs of unresponsive instances; deploy instances that have no VM at all."""
        rows = {r.id: r for r in await self.instances.of_deployment(deployment)}
        no_vm = [i for i in instance_ids if i in rows and not rows[i].has_vm]
        out = []
        with_vm = [i for i in instance_ids if i in rows and rows[i].has_vm]
        if with_vm:
            out.append(await self.apply_resolutions(deployment, {i: "recreate_vm" for i in with_vm}))
        if no_vm:
            self.task.info(f"{', '.join(rows[i].label for i in no_vm)}: no VM: creating")
            await self._redeploy_only(deployment, no_vm)
            out.append(f"{len(no_vm)} VM(s) created")
        return "; ".join(out) or "nothing to do"
