"""One update routine per instance, used by deploy, start/stop/restart/recreate, cloud-check and delete:

    drain ─► stop ─► [recreate the VM / change its disk] ─► apply ─► start ─► watch (get_state until running)

as much of it as the instance needs; and its counterpart for an instance that goes away
(drain shutdown ─► stop ─► delete the VM ─► forget the instance)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cpi import CPI, LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_ROLE, CPIError
from .disks import DiskChanges
from .drain import DrainError, drain
from .manifest import Manifest
from .naming import instance_path
from .nats_rpc import AgentClient, AgentError, Agents, RpcTimeout
from .planner import Change, DesiredInstance, VMAddress, needs_apply, network_spec
from .store import Disks, InstanceRow, Instances, Registry
from .tasks import Task, TaskFailed
from .templates import Renderer
from .vms import VMs

Observe = Callable[[str, str], None]     # (agent id, job_state): what the director just saw


@dataclass
class InstanceUpdater:
    manifest: Manifest
    cpi: CPI
    agents: Agents
    vms: VMs
    instances: Instances
    disks: Disks
    registry: Registry
    renderer: Renderer
    observe: Observe
    task: Task
    director_name: str = "bosh-lab"
    static_networks: dict[str, str] | None = None    # manual network -> the CPI network made for its subnet
    skip_drain: bool = False

    def __post_init__(self) -> None:
        self.disk_changes = DiskChanges(self.cpi, self.disks, self.registry, self.agents, self.task,
                                        self.manifest.name, self.recreate_vm)

    # --- VMs ------------------------------------------------------------------------------------------

    async def new_vm(self, inst: DesiredInstance, disks: list[str] | None = None) -> None:
        """Make the instance's VM and record it (a new agent id; the instance keeps its id and IPs)."""
        m = self.manifest
        if disks is None:
            disks = await self.disk_changes.for_new_vm(inst)
        nets = self.static_networks or {}
        path = instance_path(inst.group.name, inst.id)
        vm = await self.vms.create(
            f"{m.name}-{inst.group.name}-{inst.index}",
            {LABEL_ROLE: "instance", LABEL_DEPLOYMENT: m.name, LABEL_INSTANCE: path},
            lambda info: network_spec(m, inst.group, VMAddress(info.ip, info.prefix_len, info.gateway), inst.ips),
            {nets[n]: ip for n, ip in inst.ips.items()}, disks, inst.label)
        first = vm.settings["networks"][inst.group.networks[0]]
        inst.row = await self.instances.vm_created(inst.id, m.name, inst.group.name, inst.index, vm.agent_id, vm.cid,
                                                   vm.info.name, first.get("ip"), inst.addresses(m), inst.desired_state)
        inst.vm_fresh = True
        try:
            await self.cpi.set_vm_metadata(vm.cid, {"director": self.director_name, "deployment": m.name,
                                                    "job": inst.group.name, "index": str(inst.index), "id": inst.id,
                                                    "name": path})
        except CPIError as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        inst.spec["networks"] = vm.settings["networks"]
        await self.renderer.render(inst)   # the real IP may change what templates render

    async def recreate_vm(self, inst: DesiredInstance, disks: list[str] | None = None) -> None:
        assert inst.row is not None
        if inst.row.vm_cid:
            await self.vms.delete(inst.row.vm_cid)
        await self.instances.vm_gone(inst.id)
        await self.new_vm(inst, disks)

    def _agent(self, inst: DesiredInstance) -> AgentClient:
        assert inst.row is not None and inst.row.agent_id is not None
        return self.agents(inst.row.agent_id)

    # --- update ---------------------------------------------------------------------------------------

    async def update(self, change: Change, watch_schedule: list[float]) -> None:
        """drain ─► stop ─► [recreate the VM] ─► [disk change] ─► apply ─► start ─► watch."""
        inst = change.instance
        row = inst.row
        assert row is not None
        was_stopped = row.state == "stopped" and not row.dirty
        recreate = change.kind == "recreate" and not inst.vm_fresh
        disk = await self.disk_changes.pending(inst)
        apply = recreate or needs_apply(inst)
        await self.instances.mark_dirty(inst.id)
        agent = self._agent(inst)
        try:
            if not was_stopped:
                if not self.skip_drain:
                    kind = "shutdown" if recreate or disk or inst.desired_state == "stopped" else "update"
                    await drain(agent, kind, inst.spec if kind == "update" else None, inst.label, self.task.info)
                self.task.info(f"{inst.label}: stop")
                await agent.send_message("stop")
            if recreate:
                self.task.info(f"{inst.label}: recreating its VM ({'; '.join(change.reasons)})")
                await self.recreate_vm(inst)
                agent = self._agent(inst)
            if disk and await self.disk_changes.apply(inst):
                agent = self._agent(inst)
                apply = True
            if apply:
                self.task.info(f"{inst.label}: apply")
                await agent.send_message("apply", inst.spec)
                await self.instances.applied(inst.id, inst.spec)
            if inst.desired_state == "started":
                self.task.info(f"{inst.label}: start")
                await agent.call("start")
        except (AgentError, RpcTimeout, DrainError) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        if inst.desired_state == "started":
            await self.watch(agent, inst, watch_schedule)
        else:
            self.observe(agent.agent_id, "stopped")
        await self.instances.updated(inst.id, inst.spec, inst.desired_state)

    async def watch(self, agent: AgentClient, inst: DesiredInstance, schedule: list[float]) -> None:
        """BOSH's wait_until_running: get_state on the watch schedule until the job is running."""
        state: dict[str, Any] = {}
        for delay in schedule:
            await asyncio.sleep(delay)
            try:
                got = await agent.call("get_state")
            except (AgentError, RpcTimeout) as e:
                self.task.info(f"{inst.label}: get_state failed: {e}")
                continue
            state = got if isinstance(got, dict) else {}
            self.task.info(f"{inst.label}: job_state {state.get('job_state')}")
            if isinstance(state.get("job_state"), str):
                self.observe(agent.agent_id, state["job_state"])
            if state.get("job_state") == "running":
                return
        failing = [p.get("name") for p in state.get("processes") or [] if isinstance(p, dict)
                   and p.get("state") != "running"]
        raise TaskFailed(f"'{inst.label}' is not running after update (job_state {state.get('job_state', 'unknown')}). "
                         f"Review logs for failed jobs: "
                         f"{', '.join(str(f) for f in failing) or ', '.join(j.name for j in inst.group.jobs)}")


async def delete_instance(row: InstanceRow, force: bool, *, cpi: CPI, agents: Agents, vms: VMs,
                          instances: Instances, task: Task) -> None:
    """drain shutdown (waiting as its answer says, dynamic drain included), stop, delete the VM, forget the
    instance. With ``force``, agent errors are logged and the deletion goes on."""
    if row.vm_cid:
        status = await cpi.vm_status(row.vm_cid)
        if status.running and row.agent_id:
            agent = agents(row.agent_id)
            try:
                if not await agent.ping(2.0):
                    raise RpcTimeout(f"agent {row.agent_id} does not answer ping")
                await drain(agent, "shutdown", None, row.label, task.info)
                task.info(f"{row.label}: stop")
                await agent.send_message("stop")
            except (AgentError, RpcTimeout, DrainError) as e:
                if not force:
                    raise TaskFailed(f"{row.label}: {e} (use --force to delete anyway)") from None
                task.info(f"ignoring '{e}' while deleting {row.label}")
        await vms.delete(row.vm_cid)
    await instances.delete(row.id)
