"""Persistent disks: bringing an instance's disk to its group's ``persistent_disk``, and the disk operations
(list, delete an orphaned disk, delete a deployment's disks).

* **Create**: ``create_disk`` (the CPI names it), recorded with the size the manifest asks for (MB).
* **Attach**: with a CPI that attaches disks to a running VM, ``attach_disk`` + ``mount_disk``; with one that
  cannot (Docker: a container's mounts are fixed), the VM is recreated with the disk (``create_vm`` with
  ``disk_cids``) and the agent mounts it. The registry settings name the disk (``disks.persistent.<cid>``);
  after ``mount_disk`` the director checks ``list_disk`` (BOSH checks at attach).
* **Resize** (N -> M MB): a new disk, both attached, ``mount_disk`` each, ``migrate_disk(old, new)``,
  ``unmount_disk(old)``, old one detached and deleted. The jobs were stopped (drain ``shutdown``).
* **N -> 0**: ``unmount_disk``, detached; the disk is kept as an **orphaned disk**
  (``bosh-lab disks --orphaned``) until ``bosh-lab delete-disk CID``. Instances a deploy removes orphan their
  disks too, as BOSH does. ``delete-deployment`` deletes the deployment's attached disks, keeps orphaned ones.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .cpi import CPI, LABEL_DEPLOYMENT, LABEL_INSTANCE, CPIError
from .naming import instance_path
from .nats_rpc import AgentError, Agents, RpcTimeout
from .planner import DesiredInstance, disk_change
from .store import DiskRow, Disks, Registry
from .tasks import Task, TaskFailed
from .vms import disk_settings

# Recreate the instance's VM with exactly these disks attached (and mounted, in this order).
Recreate = Callable[[DesiredInstance, list[str]], Awaitable[None]]


@dataclass
class DiskChanges:
    cpi: CPI
    disks: Disks
    registry: Registry
    agents: Agents
    task: Task
    deployment: str
    recreate: Recreate

    async def new_disk(self, inst: DesiredInstance, size: int, orphaned: bool = False) -> str:
        """A new disk for the instance, recorded (``orphaned`` until a migration to it succeeded)."""
        path = instance_path(inst.group.name, inst.id)
        try:
            cid = await self.cpi.create_disk(size, {LABEL_DEPLOYMENT: self.deployment, LABEL_INSTANCE: path})
        except CPIError as e:
            raise TaskFailed(str(e)) from None
        await self.disks.add(cid, self.deployment, inst.id, path, size, orphaned)
        self.task.info(f"{inst.label}: created disk {cid} ({size} MB; recorded, a Docker volume does not enforce it)")
        return cid

    async def for_new_vm(self, inst: DesiredInstance) -> list[str]:
        """The disks a VM made for the instance gets: the instance's disk, else (the group wants one and the
        instance has none yet) a new disk."""
        row = await self.disks.current(inst.id)
        if row is not None:
            if not await self.cpi.has_disk(row.cid):
                raise TaskFailed(f"{inst.label}: its persistent disk {row.cid} is gone")
            return [row.cid]
        if inst.group.persistent_disk > 0:
            return [await self.new_disk(inst, inst.group.persistent_disk)]
        return []

    async def pending(self, inst: DesiredInstance) -> str | None:
        return disk_change(await self.disks.current(inst.id), inst.group.persistent_disk)

    async def apply(self, inst: DesiredInstance) -> bool:
        """Bring the instance's disk to the group's ``persistent_disk`` (its jobs are stopped). True if its
        VM was recreated (the caller must talk to the new agent)."""
        have = await self.disks.current(inst.id)
        want = inst.group.persistent_disk
        change = disk_change(have, want)
        if change is None:
            return False
        if change == "create":
            cid = await self.new_disk(inst, want)
            return await self._attach(inst, [cid], [cid])
        assert have is not None
        if change == "orphan":
            return await self._orphan(inst, have)
        return await self._resize(inst, have, want)

    def _agent_id(self, inst: DesiredInstance) -> str:
        assert inst.row is not None and inst.row.agent_id is not None
        return inst.row.agent_id

    async def _attach(self, inst: DesiredInstance, new: list[str], all_disks: list[str]) -> bool:
        """Give the VM ``new`` disks so that it has ``all_disks``: live where the CPI can, else a new VM."""
        if not self.cpi.live_disk_attach:
            self.task.info(f"{inst.label}: recreating its VM with disk(s) {', '.join(all_disks) or 'none'} "
                           f"(this CPI attaches disks only to a new VM)")
            await self.recreate(inst, all_disks)
            return True
        assert inst.row is not None and inst.row.vm_cid is not None
        agent = self.agents(self._agent_id(inst))
        await self._settings_disks(inst.row.vm_cid, all_disks)
        try:
            for cid in new:
                await self.cpi.attach_disk(inst.row.vm_cid, cid)
                self.task.info(f"{inst.label}: attached disk {cid}; mount_disk {cid}")
                await agent.send_message("mount_disk", cid)
        except (CPIError, AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        return False

    async def _detach(self, inst: DesiredInstance, cid: str, keep: list[str]) -> bool:
        if not self.cpi.live_disk_attach:
            self.task.info(f"{inst.label}: recreating its VM with disk(s) {', '.join(keep) or 'none'} "
                           f"(this CPI detaches disks only by making a new VM)")
            await self.recreate(inst, keep)
            return True
        assert inst.row is not None and inst.row.vm_cid is not None
        try:
            await self.cpi.detach_disk(inst.row.vm_cid, cid)
        except CPIError as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        await self._settings_disks(inst.row.vm_cid, keep)
        self.task.info(f"{inst.label}: detached disk {cid}")
        return False

    async def _settings_disks(self, vm_cid: str, cids: list[str]) -> None:
        """The registry names the VM's disks: the agent re-reads it before mount_disk."""
        settings = await self.registry.get(vm_cid)
        if settings is not None:
            settings["disks"]["persistent"] = disk_settings(cids)
            await self.registry.put(vm_cid, settings)

    async def _unmount(self, inst: DesiredInstance, cid: str) -> None:
        try:
            self.task.info(f"{inst.label}: unmount_disk {cid}")
            r = await self.agents(self._agent_id(inst)).send_message("unmount_disk", cid)
            self.task.info(f"{inst.label}: {r.get('message') if isinstance(r, dict) else r}")
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None

    async def _orphan(self, inst: DesiredInstance, have: DiskRow) -> bool:
        await self._unmount(inst, have.cid)
        await self.disks.orphan(have.cid)
        self.task.info(f"{inst.label}: disk {have.cid} is orphaned (bosh-lab disks --orphaned; "
                       f"bosh-lab delete-disk {have.cid})")
        return await self._detach(inst, have.cid, [])

    async def _resize(self, inst: DesiredInstance, have: DiskRow, want: int) -> bool:
        old = have.cid
        new = await self.new_disk(inst, want, orphaned=True)
        self.task.info(f"{inst.label}: resizing disk {old} ({have.size} MB) -> {new} ({want} MB)")
        recreated = await self._attach(inst, [new], [old, new])
        try:
            self.task.info(f"{inst.label}: migrate_disk {old} {new}")
            await self.agents(self._agent_id(inst)).send_message("migrate_disk", old, new)
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e} (the old disk {old} keeps the data; {new} is orphaned)") from None
        await self._unmount(inst, old)
        await self.disks.migrated(old, new)
        recreated = await self._detach(inst, old, [new]) or recreated
        try:
            await self.cpi.delete_disk(old)
        except CPIError as e:
            self.task.info(f"{inst.label}: could not delete the old disk {old} (kept as orphaned): {e}")
            return recreated
        await self.disks.delete(old)
        self.task.info(f"{inst.label}: deleted the old disk {old}")
        return recreated


async def delete_deployment_disks(cpi: CPI, disks: Disks, deployment: str) -> list[str]:
    """The deployment's attached disks (and unrecorded disks made for it); orphaned disks stay."""
    keep = {d.cid for d in await disks.list(orphaned=True, deployment=deployment)}
    gone = []
    for cid in await cpi.list_disks({LABEL_DEPLOYMENT: deployment}):
        if cid in keep:
            continue
        await cpi.delete_disk(cid)
        gone.append(cid)
    await disks.delete_attached(deployment)
    return gone


async def delete_orphaned_disk(cpi: CPI, disks: Disks, task: Task, cid: str) -> str:
    row = await disks.get(cid)
    if row is None:
        raise TaskFailed(f"Disk '{cid}' doesn't exist")
    if not row.orphaned:
        raise TaskFailed(f"Disk '{cid}' is attached to {row.deployment}/{row.instance}: only orphaned disks "
                         f"can be deleted (set persistent_disk: 0, or delete the deployment)")
    async with task.step("Deleting orphaned disks", cid):
        try:
            existed = await cpi.delete_disk(cid)
        except CPIError as e:
            raise TaskFailed(str(e)) from None
        await disks.delete(cid)
    return f"disk {cid} deleted" + ("" if existed else " (it was already gone)")
