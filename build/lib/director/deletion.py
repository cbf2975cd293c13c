"""Deleting what the director made: a deployment (its instances through the one delete routine, then its
disks, stray VMs and networks) and a release (its jobs, packages and compiled packages, and their blobs)."""
from __future__ import annotations

import asyncio
from typing import Protocol

from .cpi import CPI, LABEL_DEPLOYMENT
from .disks import delete_deployment_disks
from .instance_updater import delete_instance
from .nats_rpc import Agents
from .releases import version_key
from .store import CompiledPackages, Deployments, Disks, InstanceRow, Instances, Releases
from .tasks import Task, TaskFailed
from .vms import VMs

DELETE_IN_PARALLEL = 10


class BlobDeleter(Protocol):
    async def delete(self, blob_id: str) -> None: ...


async def delete_deployment(name: str, force: bool, *, cpi: CPI, agents: Agents, vms: VMs, instances: Instances,
                            disks: Disks, deployments: Deployments, task: Task) -> str:
    if await deployments.get(name) is None:
        raise TaskFailed(f"Deployment '{name}' doesn't exist")
    rows = await instances.of_deployment(name)
    sem = asyncio.Semaphore(DELETE_IN_PARALLEL)

    async def one(n: int, r: InstanceRow) -> None:
        async with sem:
            async with task.step("Deleting instances", r.label, n, len(rows)):
                await delete_instance(r, force, cpi=cpi, agents=agents, vms=vms, instances=instances, task=task)
    results = await asyncio.gather(*(one(n, r) for n, r in enumerate(rows, 1)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    async with task.step("Removing deployment artifacts", "Detaching disks and networks"):
        # VMs a crashed task left behind, then the deployment's disks (its orphaned disks stay).
        for v in await cpi.list_vms():
            if v.metadata.get(LABEL_DEPLOYMENT) == name:
                await vms.delete(v.cid)
        gone = await delete_deployment_disks(cpi, disks, name)
        if gone:
            task.info(f"deleted disks {', '.join(gone)}")
        nets = await cpi.remove_unused_networks()
        if nets:
            task.info(f"deleted networks {', '.join(nets)}")
    async with task.step("Deleting properties", "Destroying deployment"):
        await deployments.delete(name)
    return f"/deployments/{name} deleted"


async def delete_release(name: str, version: str | None, force: bool, *, releases: Releases,
                         compiled: CompiledPackages, deployments: Deployments, blobs: BlobDeleter, task: Task) -> str:
    versions = sorted(await releases.versions(name), key=version_key)
    if not versions:
        raise TaskFailed(f"Release '{name}' doesn't exist")
    if version is not None:
        if version not in versions:
            raise TaskFailed(f"Release '{name}' has no version '{version}' (has: {', '.join(versions)})")
        versions = [version]
    users = [d.name for d in await deployments.all() if d.releases.get(name) in versions]
    if users:
        raise TaskFailed(f"Release '{name}' is in use by deployment(s) {', '.join(users)}: delete them "
                         f"(bosh-lab delete-deployment) or deploy another release version first")
    for n, v in enumerate(versions, 1):
        async with task.step("Deleting releases", f"{name}/{v}", n, len(versions)):
            pkgs = await releases.packages_of(name, v)
            jobs = await releases.jobs_of(name, v)
            await releases.delete_version(name, v)
            gone: list[str] = []
            for p in pkgs:
                if not await releases.blob_in_use("release_packages", p.blobstore_id):
                    gone.append(p.blobstore_id)
            for j in jobs:
                if not await releases.blob_in_use("release_jobs", j.blobstore_id):
                    gone.append(j.blobstore_id)
            for p in pkgs:   # compiled packages nobody can use any more
                if not await releases.fingerprint_in_use(p.fingerprint):
                    gone += await compiled.blobs_of_fingerprint(p.fingerprint)
                    await compiled.delete_fingerprint(p.fingerprint)
            for blob in gone:
                try:
                    await blobs.delete(blob)
                except Exception as e:  # noqa: BLE001 - a blob that cannot be deleted is logged, not fatal with --force
                    if not force:
                        raise TaskFailed(f"deleting blob {blob}: {e} (use --force to go on)") from None
                    task.info(f"ignoring: deleting blob {blob}: {e}")
            task.info(f"release {name}/{v}: deleted {len(pkgs)} package(s), {len(jobs)} job(s), {len(gone)} blob(s)")
    return f"Deleted release '{name}'" + (f" version '{version}'" if version else f" ({len(versions)} version(s))")
