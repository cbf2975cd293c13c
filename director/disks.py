"""Persistent disks through the Docker CPI: a disk is a Docker volume named by its cid (``<lab>-disk-<uuid>``).

* **Create**: ``docker volume create`` with the lab's labels (lab, deployment, instance). Docker volumes have
  no size: the size the manifest asks for (``persistent_disk``, MB) is recorded in the ``disks`` table only,
  and a resize is a real migration to a new volume all the same (as BOSH does with a new IaaS disk).
* **Attach = (re)create the VM with the volume mounted** at ``/var/vcap/store_disks/<cid>``: Docker cannot
  add a mount to a running container. The registry settings name the disk
  (``disks.persistent.<cid>.path``); after every VM (re)creation with disks the director sends ``mount_disk``
  for each (the first goes to ``/var/vcap/store``, a second to ``/var/vcap/store_migration_target``) and
  checks with ``list_disk`` that the agent really mounted them (BOSH checks at attach).
* **Resize** (N -> M MB): new volume, VM recreated with both, ``mount_disk(old)``, ``mount_disk(new)``,
  ``migrate_disk(old, new)``, ``unmount_disk(old)``, VM recreated with only the new one, ``mount_disk(new)``,
  old volume deleted. The jobs were stopped before (drain ``shutdown``: the disk changes).
* **N -> 0**: ``unmount_disk``, VM recreated without it; the volume is kept as an **orphaned disk**
  (``bosh-lab disks --orphaned``), deleted only by ``bosh-lab delete-disk CID``. Instances removed by a
  deploy (scale down) orphan their disks too, as BOSH does. ``delete-deployment`` deletes the deployment's
  attached disks and keeps its orphaned ones.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import docker.errors

from .cpi import DISK_MOUNT_DIR, LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_LAB, CPIError, DockerCPI
from .nats_rpc import AgentError, RpcTimeout
from .tasks import Task, TaskFailed

if TYPE_CHECKING:
    from .app import Director
    from .deployer import Deployer, PlannedInstance
    from .manifest import Manifest


# --- the CPI's disk calls (docker SDK, in the CPI's threads) -------------------------------------------

async def create_volume(cpi: DockerCPI, cid: str, labels: dict[str, str]) -> None:
    def go() -> None:
        try:
            cpi._docker().volumes.create(name=cid, driver="local", labels={LABEL_LAB: cpi.lab, **labels})
        except docker.errors.APIError as e:
            raise CPIError(f"create_disk {cid}: {e.explanation or e}") from None
    await cpi._thread(go)


async def delete_volume(cpi: DockerCPI, cid: str) -> bool:
    """Delete the volume; False when it did not exist."""
    def go() -> bool:
        try:
            cpi._docker().volumes.get(cid).remove(force=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            raise CPIError(f"delete_disk {cid}: {e.explanation or e}") from None
        return True
    return await cpi._thread(go)


async def volume_exists(cpi: DockerCPI, cid: str) -> bool:
    def go() -> bool:
        try:
            cpi._docker().volumes.get(cid)
        except docker.errors.NotFound:
            return False
        return True
    return await cpi._thread(go)


async def lab_volumes(cpi: DockerCPI, deployment: str | None = None) -> list[str]:
    def go() -> list[str]:
        labels = [f"{LABEL_LAB}={cpi.lab}"] + ([f"{LABEL_DEPLOYMENT}={deployment}"] if deployment else [])
        return [str(v.name) for v in cpi._docker().volumes.list(filters={"label": labels})]
    return await cpi._thread(go)


# --- the director's records ----------------------------------------------------------------------------

def disk_settings(cids: list[str]) -> dict[str, Any]:
    """``disks.persistent`` of the registry settings for the disks attached to a VM."""
    return {cid: {"path": f"{DISK_MOUNT_DIR}/{cid}"} for cid in cids}


async def current_disk(d: "Director", instance_id: str) -> dict[str, Any] | None:
    return await d.db.one("SELECT * FROM disks WHERE instance_id=? AND orphaned=0 ORDER BY created_at DESC",
                          (instance_id,))


async def new_disk(dep: "Deployer", inst: "PlannedInstance", size: int, orphaned: bool = False) -> str:
    """A new volume for the instance, recorded (``orphaned`` until a migration to it succeeded)."""
    d = dep.d
    assert dep.manifest is not None
    cid = f"{d.cpi.lab}-disk-{uuid.uuid4()}"
    label = f"{inst.group.name}/{inst.id}"
    try:
        await create_volume(d.cpi, cid, {LABEL_DEPLOYMENT: dep.manifest.name, LABEL_INSTANCE: label})
    except CPIError as e:
        raise TaskFailed(str(e)) from None
    await d.db.execute("INSERT INTO disks (cid, deployment, instance_id, instance, size, orphaned, created_at, orphaned_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (cid, dep.manifest.name, inst.id, label, size, int(orphaned), time.time(),
                        time.time() if orphaned else None))
    dep.task.info(f"{inst.label}: created disk {cid} ({size} MB; a Docker volume: the size is recorded, not enforced)")
    return cid


async def disks_for_new_vm(dep: "Deployer", inst: "PlannedInstance") -> list[str]:
    """The disks a VM made for the instance gets: what a disk change asked for, else the instance's disk,
    else (the group wants one and the instance has none yet) a new disk."""
    wanted = dep.disk_attach
    if inst.id in wanted:
        return list(wanted[inst.id])
    row = await current_disk(dep.d, inst.id)
    if row is not None:
        if not await volume_exists(dep.d.cpi, row["cid"]):
            raise TaskFailed(f"{inst.label}: its persistent disk {row['cid']} (Docker volume) is gone")
        return [str(row["cid"])]
    if inst.group.persistent_disk > 0:
        return [await new_disk(dep, inst, inst.group.persistent_disk)]
    return []


async def mount_disks(dep: "Deployer", agent_id: str, cids: list[str], label: str) -> None:
    """mount_disk for each disk (in order: the first at /var/vcap/store), then list_disk must list them all."""
    agent = dep.agent(agent_id)
    try:
        for cid in cids:
            dep.task.info(f"{label}: mount_disk {cid}")
            await agent.send_message("mount_disk", cid)
        listed = await agent.send_message("list_disk")
    except (AgentError, RpcTimeout) as e:
        raise TaskFailed(f"{label}: {e}") from None
    missing = [c for c in cids if not isinstance(listed, list) or c not in listed]
    if missing:
        raise TaskFailed(f"{label}: the agent does not list disk(s) {', '.join(missing)} as mounted after mount_disk "
                         f"(list_disk answered {json.dumps(listed)})")


def disk_change(have: dict[str, Any] | None, want: int) -> str | None:
    """None, 'create' (0 -> N), 'resize' (N -> M) or 'orphan' (N -> 0)."""
    size = int(have["size"]) if have else 0
    if have is None:
        return "create" if want > 0 else None
    if want == 0:
        return "orphan"
    return "resize" if size != want else None


async def pending_change(dep: "Deployer", inst: "PlannedInstance") -> str | None:
    return disk_change(await current_disk(dep.d, inst.id), inst.group.persistent_disk)


async def recreate_with(dep: "Deployer", m: "Manifest", inst: "PlannedInstance", cids: list[str]) -> None:
    """Recreate the instance's VM with exactly these disks attached (and mounted, in this order)."""
    assert inst.row is not None
    attach = dep.disk_attach
    attach[inst.id] = cids
    try:
        dep.task.info(f"{inst.label}: recreating its VM with disk(s) {', '.join(cids) or 'none'} "
                      f"(Docker attaches volumes only to a new container)")
        if inst.row.get("vm_cid"):
            await dep.delete_vm(inst.row["vm_cid"])
        await dep.d.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL WHERE id=?", (inst.id,))
        await dep.new_vm_for(m, inst, dep.jobs)
    finally:
        attach.pop(inst.id, None)


async def apply_disk_change(dep: "Deployer", m: "Manifest", inst: "PlannedInstance") -> bool:
    """Bring the instance's disk to the group's ``persistent_disk`` (jobs are stopped). True if its VM was
    recreated (the caller must talk to the new agent)."""
    have = await current_disk(dep.d, inst.id)
    want = inst.group.persistent_disk
    change = disk_change(have, want)
    if change is None:
        return False
    assert inst.row is not None
    t = dep.task
    if change == "create":
        cid = await new_disk(dep, inst, want)
        await recreate_with(dep, m, inst, [cid])
        return True
    assert have is not None
    old = str(have["cid"])
    agent = dep.agent(inst.row["agent_id"])
    if change == "orphan":
        try:
            t.info(f"{inst.label}: unmount_disk {old}")
            r = await agent.send_message("unmount_disk", old)
            t.info(f"{inst.label}: {r.get('message') if isinstance(r, dict) else r}")
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        await dep.d.db.execute("UPDATE disks SET orphaned=1, orphaned_at=? WHERE cid=?", (time.time(), old))
        t.info(f"{inst.label}: disk {old} is orphaned (bosh-lab disks --orphaned; bosh-lab delete-disk {old})")
        await recreate_with(dep, m, inst, [])
        return True
    # resize: migrate to a new volume
    new = await new_disk(dep, inst, want, orphaned=True)
    t.info(f"{inst.label}: resizing disk {old} ({have['size']} MB) -> {new} ({want} MB)")
    await recreate_with(dep, m, inst, [old, new])
    agent = dep.agent(inst.row["agent_id"])
    try:
        t.info(f"{inst.label}: migrate_disk {old} {new}")
        await agent.send_message("migrate_disk", old, new)
        r = await agent.send_message("unmount_disk", old)
        t.info(f"{inst.label}: unmount_disk {old}: {r.get('message') if isinstance(r, dict) else r}")
    except (AgentError, RpcTimeout) as e:
        raise TaskFailed(f"{inst.label}: {e} (the old disk {old} keeps the data; {new} is orphaned)") from None
    await dep.d.db.transaction([
        ("UPDATE disks SET orphaned=0, orphaned_at=NULL WHERE cid=?", (new,)),
        ("UPDATE disks SET orphaned=1, orphaned_at=?, instance_id=NULL WHERE cid=?", (time.time(), old)),
    ])
    await recreate_with(dep, m, inst, [new])
    try:
        await delete_volume(dep.d.cpi, old)
    except CPIError as e:
        t.info(f"{inst.label}: could not delete the old disk {old} (kept as orphaned): {e}")
        return True
    await dep.d.db.execute("DELETE FROM disks WHERE cid=?", (old,))
    t.info(f"{inst.label}: deleted the old disk {old}")
    return True


async def orphan_instance_disks(d: "Director", instance_id: str) -> None:
    """An instance a deploy deletes (scale down) leaves its disk orphaned, as in BOSH."""
    await d.db.execute("UPDATE disks SET orphaned=1, orphaned_at=? WHERE instance_id=? AND orphaned=0",
                       (time.time(), instance_id))


async def delete_deployment_disks(d: "Director", deployment: str) -> list[str]:
    """The deployment's attached disks (and unrecorded volumes labelled for it); orphaned disks stay."""
    keep = {r["cid"] for r in await d.db.all("SELECT cid FROM disks WHERE deployment=? AND orphaned=1", (deployment,))}
    gone = []
    for cid in await lab_volumes(d.cpi, deployment):
        if cid in keep:
            continue
        await delete_volume(d.cpi, cid)
        gone.append(cid)
    await d.db.execute("DELETE FROM disks WHERE deployment=? AND orphaned=0", (deployment,))
    return gone


async def list_disks(d: "Director", orphaned: bool | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM disks"
    params: tuple[int, ...] = ()
    if orphaned is not None:
        sql, params = sql + " WHERE orphaned=?", (int(orphaned),)
    rows = await d.db.all(sql + " ORDER BY created_at", params)
    return [{"cid": r["cid"], "deployment": r["deployment"], "instance": r["instance"], "size": r["size"],
             "orphaned": bool(r["orphaned"]), "created_at": r["created_at"], "orphaned_at": r["orphaned_at"]}
            for r in rows]


async def delete_disk(d: "Director", task: Task, cid: str) -> str:
    row = await d.db.one("SELECT * FROM disks WHERE cid=?", (cid,))
    if row is None:
        raise TaskFailed(f"Disk '{cid}' doesn't exist")
    if not row["orphaned"]:
        raise TaskFailed(f"Disk '{cid}' is attached to {row['deployment']}/{row['instance']}: only orphaned disks "
                         f"can be deleted (set persistent_disk: 0, or delete the deployment)")
    async with task.step("Deleting orphaned disks", cid):
        try:
            existed = await delete_volume(d.cpi, cid)
        except CPIError as e:
            raise TaskFailed(str(e)) from None
        await d.db.execute("DELETE FROM disks WHERE cid=?", (cid,))
    return f"disk {cid} deleted" + ("" if existed else " (its volume was already gone)")
