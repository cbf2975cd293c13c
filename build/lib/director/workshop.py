"""Workshop mode: on start, upload the sample release that workshop/ ships and deploy the deck's redis-solo.
Afterwards, deploy again every deployment whose VMs are gone (after `docker compose down` and `up`)."""
from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from boshlab.release import ReleaseError, create_release

from .config import Config
from .operations import Operations
from .tasks import DeploymentLocked

log = logging.getLogger("director.workshop")


async def run_workshop(d: Operations, cfg: Config) -> None:
    root = Path(cfg.workshop_dir)
    out = Path(tempfile.mkstemp(dir=d.upload_dir(), prefix="workshop-", suffix=".tgz")[1])
    log.info("workshop: creating release from %s (package sources from %s)", root / "release", cfg.workshop_blobs)
    try:
        rm = await asyncio.to_thread(create_release, root / "release", out, blob_dirs=[cfg.workshop_blobs])
    except (ReleaseError, OSError) as e:
        log.error("workshop: cannot create the sample release: %s", e)
        return
    log.info("workshop: uploading release %s/%s", rm.name, rm.version)
    task = await d.upload_release_task(out)
    row = await d.tasks.wait(task)
    log.info("workshop: task %d %s: %s", task, row.state, row.result)
    if row.state != "done":
        return
    if await d.store.deployments.get("redis-solo") is not None:
        # Deployed before: keep the user's manifest (redeploy_missing brings back VMs that are gone).
        log.info("workshop: redis-solo is deployed already")
        return
    log.info("workshop: deploying redis-solo")
    await deploy_and_wait(d, "workshop", (root / "manifests" / "redis-solo.yml").read_text(), "redis-solo")


async def deploy_and_wait(d: Operations, who: str, manifest: str, name: str, pinned: dict[str, str] | None = None) -> None:
    """Start a deploy task and log how it ended (a deploy already running for ``name`` is left alone)."""
    try:
        task = await d.deploy_task(manifest, name, pinned=pinned)
    except DeploymentLocked as e:
        log.info("%s: %s", who, e)
        return
    row = await d.tasks.wait(task)
    log.info("%s: task %d %s: %s", who, task, row.state, row.result)


async def redeploy_missing(d: Operations) -> None:
    """`up` after `down`: VMs were deleted; deploy each such deployment again from its stored manifest."""
    for name in await d.deployments_missing_vms():
        row = await d.store.deployments.get(name)
        if row is None:
            continue
        log.info("reconcile: deployment %s has instances without VMs: deploying it again", name)
        await deploy_and_wait(d, "reconcile", row.manifest, name, pinned=row.releases)


async def after_start(d: Operations, cfg: Config) -> None:
    try:
        if cfg.workshop:
            await run_workshop(d, cfg)
        await redeploy_missing(d)
    except Exception:
        log.exception("start-up work failed")
