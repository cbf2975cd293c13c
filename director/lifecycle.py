"""Deployment lifecycle beyond deploy: cloud-check (scan for problems, apply resolutions), delete-deployment,
delete-release. Each change runs as a task; the scan itself is read-only and quick (Docker + ping)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .deployer import Deployer
from .disks import delete_deployment_disks
from .nats_rpc import AgentClient
from .releases import version_key
from .tasks import Task, TaskFailed

if TYPE_CHECKING:
    from .app import Director

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


def instance_label(r: dict[str, Any]) -> str:
    return f"{r['group_name']}/{r['id']} ({r['idx']})"


async def scan(d: "Director", deployment: str, only: set[str] | None = None) -> list[Problem]:
    """VMs whose container vanished (missing_vm), exited, or whose agent does not answer ping
    (unresponsive_agent)."""
    rows = await d.db.all("SELECT * FROM instances WHERE deployment=? AND vm_cid IS NOT NULL ORDER BY group_name, idx",
                          (deployment,))
    if only is not None:
        rows = [r for r in rows if r["id"] in only]

    async def check(r: dict[str, Any]) -> Problem | None:
        label, cid = instance_label(r), r["vm_cid"]
        status = await d.cpi.vm_status(cid)
        if not status.exists:
            return Problem(r["id"], "missing_vm", label, f"VM for '{label}' with cloud ID '{cid[:12]}' missing: its "
                           f"container is gone", cid, PROBLEM_RESOLUTIONS["missing_vm"])
        if not status.running:
            return Problem(r["id"], "unresponsive_agent", label, f"VM for '{label}' with cloud ID '{cid[:12]}' is not "
                           f"responding: its container exited with code {status.exit_code}", cid,
                           PROBLEM_RESOLUTIONS["unresponsive_agent"])
        client = AgentClient(d.rpc, r["agent_id"] or "")
        for _ in range(2):
            if r["agent_id"] and await client.ping(1.5):
                return None
        return Problem(r["id"], "unresponsive_agent", label, f"VM for '{label}' with cloud ID '{cid[:12]}' is not "
                       f"responding: its agent does not answer ping", cid, PROBLEM_RESOLUTIONS["unresponsive_agent"])
    found = await asyncio.gather(*(check(r) for r in rows))
    return [p for p in found if p is not None]


async def forget_vm(d: "Director", task: Task, row: dict[str, Any]) -> None:
    """Delete the VM if it is still there and drop the instance's reference to it (the instance stays: the
    next deploy, cloud-check or resurrection makes a new VM)."""
    if row["vm_cid"]:
        await d.cpi.delete_vm(row["vm_cid"])
        await d.db.delete_settings(row["vm_cid"])
    await d.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, vm_name=NULL, dirty=1 WHERE id=?", (row["id"],))
    task.info(f"{instance_label(row)}: VM {str(row['vm_cid'] or '-')[:12]} deleted, reference removed")


async def apply_resolutions(d: "Director", task: Task, deployment: str, wanted: dict[str, str]) -> str:
    """Scan again (a problem may have gone away meanwhile), then apply each chosen resolution."""
    for pid, res in wanted.items():
        if res not in RESOLUTIONS:
            raise TaskFailed(f"unknown resolution '{res}' for problem {pid} (one of {', '.join(RESOLUTIONS)})")
    async with task.step("Scanning VMs", "Checking VM states"):
        problems = {p.id: p for p in await scan(d, deployment, set(wanted))}
    recreate: list[str] = []
    done: list[str] = []
    steps = [(pid, res) for pid, res in wanted.items()]
    for n, (pid, res) in enumerate(steps, 1):
        p = problems.get(pid)
        row = await d.db.one("SELECT * FROM instances WHERE id=? AND deployment=?", (pid, deployment))
        if p is None or row is None:
            task.info(f"problem {pid} is gone: nothing to do")
            continue
        if p.resolutions and res not in p.resolutions:
            raise TaskFailed(f"'{res}' does not resolve {p.type} (one of {', '.join(p.resolutions)})")
        async with task.step("Applying problem resolutions", f"{p.type} {p.instance}: {RESOLUTIONS[res]}", n, len(steps)):
            if res == "ignore":
                continue
            if res in ("delete_vm", "delete_vm_reference"):
                await forget_vm(d, task, row)
            elif res == "reboot_vm":
                await d.cpi.reboot_vm(row["vm_cid"])
                deployer = Deployer(d, task)
                await deployer.wait_until_ready(row["agent_id"], row["vm_cid"], row["vm_name"] or row["vm_cid"])
            elif res == "recreate_vm":
                await forget_vm(d, task, row)
                recreate.append(pid)
            done.append(f"{p.instance}: {res}")
    if recreate:
        dep = await d.db.one("SELECT manifest, releases FROM deployments WHERE name=?", (deployment,))
        if dep is None:
            raise TaskFailed(f"Deployment '{deployment}' doesn't exist")
        await Deployer(d, task).deploy(dep["manifest"], only=set(recreate), pinned=json.loads(dep["releases"] or "{}"),
                                       store=False)
    return f"{len(done)} resolved" + (f": {'; '.join(done)}" if done else "")


async def delete_deployment(d: "Director", task: Task, name: str, force: bool) -> str:
    dep = await d.db.one("SELECT name FROM deployments WHERE name=?", (name,))
    if dep is None:
        raise TaskFailed(f"Deployment '{name}' doesn't exist")
    rows = await d.db.all("SELECT * FROM instances WHERE deployment=? ORDER BY group_name, idx", (name,))
    deployer = Deployer(d, task)
    sem = asyncio.Semaphore(10)

    async def one(n: int, r: dict[str, Any]) -> None:
        async with sem:
            async with task.step("Deleting instances", instance_label(r), n, len(rows)):
                await deployer.delete_instance(r, force)
    results = await asyncio.gather(*(one(n, r) for n, r in enumerate(rows, 1)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    async with task.step("Removing deployment artifacts", "Detaching disks and networks"):
        # Persistent disks (Docker volumes labelled for the deployment) and VMs a crashed task left behind.
        for v in await d.cpi.list_vms():
            if v.get("io.bosh-lab.deployment") == name:
                await d.cpi.delete_vm(v["cid"])
                await d.db.delete_settings(v["cid"])
        volumes = await delete_deployment_disks(d, name)   # its orphaned disks stay (bosh-lab disks --orphaned)
        if volumes:
            task.info(f"deleted disks {', '.join(volumes)}")
        nets = await d.cpi.remove_unused_networks()
        if nets:
            task.info(f"deleted networks {', '.join(nets)}")
    async with task.step("Deleting properties", "Destroying deployment"):
        await d.db.transaction([("DELETE FROM instances WHERE deployment=?", (name,)),
                                ("DELETE FROM deployments WHERE name=?", (name,)),
                                ("DELETE FROM resurrection WHERE deployment=?", (name,))])
    return f"/deployments/{name} deleted"


async def delete_release(d: "Director", task: Task, name: str, version: str | None, force: bool) -> str:
    rows = await d.db.all("SELECT version FROM releases WHERE name=?", (name,))
    versions = sorted((str(r["version"]) for r in rows), key=version_key)
    if not versions:
        raise TaskFailed(f"Release '{name}' doesn't exist")
    if version is not None:
        if version not in versions:
            raise TaskFailed(f"Release '{name}' has no version '{version}' (has: {', '.join(versions)})")
        versions = [version]
    users = []
    for dep in await d.db.all("SELECT name, releases FROM deployments ORDER BY name"):
        if json.loads(dep["releases"] or "{}").get(name) in versions:
            users.append(dep["name"])
    if users:
        raise TaskFailed(f"Release '{name}' is in use by deployment(s) {', '.join(users)}: delete them "
                         f"(bosh-lab delete-deployment) or deploy another release version first")
    for n, v in enumerate(versions, 1):
        async with task.step("Deleting releases", f"{name}/{v}", n, len(versions)):
            pkgs = await d.db.all("SELECT * FROM release_packages WHERE release=? AND release_version=?", (name, v))
            jobs = await d.db.all("SELECT * FROM release_jobs WHERE release=? AND release_version=?", (name, v))
            await d.db.transaction([("DELETE FROM release_packages WHERE release=? AND release_version=?", (name, v)),
                                    ("DELETE FROM release_jobs WHERE release=? AND release_version=?", (name, v)),
                                    ("DELETE FROM releases WHERE name=? AND version=?", (name, v))])
            blobs = []
            for table, items in (("release_packages", pkgs), ("release_jobs", jobs)):
                for item in items:
                    still = await d.db.one(f"SELECT 1 FROM {table} WHERE blobstore_id=? LIMIT 1", (item["blobstore_id"],))
                    if still is None:
                        blobs.append(item["blobstore_id"])
            for p in pkgs:   # compiled packages nobody can use any more
                if await d.db.one("SELECT 1 FROM release_packages WHERE fingerprint=? LIMIT 1", (p["fingerprint"],)) is None:
                    for c in await d.db.all("SELECT blobstore_id FROM compiled_packages WHERE fingerprint=?", (p["fingerprint"],)):
                        blobs.append(c["blobstore_id"])
                    await d.db.execute("DELETE FROM compiled_packages WHERE fingerprint=?", (p["fingerprint"],))
            for blob in blobs:
                try:
                    await d.dav.delete(blob)
                except Exception as e:  # noqa: BLE001 - a blob that cannot be deleted is logged, not fatal with --force
                    if not force:
                        raise TaskFailed(f"deleting blob {blob}: {e} (use --force to go on)") from None
                    task.info(f"ignoring: deleting blob {blob}: {e}")
            task.info(f"release {name}/{v}: deleted {len(pkgs)} package(s), {len(jobs)} job(s), {len(blobs)} blob(s)")
    return f"Deleted release '{name}'" + (f" version '{version}'" if version else f" ({len(versions)} version(s))")
