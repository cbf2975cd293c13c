"""Uploading releases: check the tarball, put its jobs and packages into the blobstore, record them."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from boshlab.dav import DavClient
from boshlab.release import LoadedRelease, ReleaseError, read_release

from .store import ReleaseJobRow, ReleasePackageRow, Releases
from .tasks import Task, TaskFailed


def version_key(v: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(v).replace("-", ".").split("."))


async def upload_release(releases: Releases, dav: DavClient, task: Task, tarball: Path, workdir: Path) -> str:
    tmp = Path(tempfile.mkdtemp(dir=workdir, prefix="release-"))
    try:
        async with task.step("Extracting release", "Extracting release"):
            try:
                rel: LoadedRelease = await asyncio.to_thread(read_release, tarball, tmp)
            except (ReleaseError, ValueError) as e:
                raise TaskFailed(f"Release is invalid: {e}") from None
        m = rel.manifest
        manifest_text = await asyncio.to_thread((rel.root / "release.MF").read_text)
        existing = await releases.get(m.name, m.version)
        if existing is not None:
            if existing.manifest == manifest_text:
                return f"release {m.name}/{m.version} is already uploaded"
            raise TaskFailed(f"release {m.name}/{m.version} is already uploaded with different content; "
                             f"create it with a new version")
        total = len(m.packages) + len(m.jobs)
        i = 0
        packages: list[ReleasePackageRow] = []
        jobs: list[ReleaseJobRow] = []
        for p in m.packages:
            i += 1
            async with task.step("Uploading packages", f"{p.name}/{p.version}", i, total):
                blob = await _blob_for(releases, dav, "release_packages", p.fingerprint, p.sha1, rel.package_path(p.name))
            packages.append(ReleasePackageRow(m.name, m.version, p.name, p.version, p.fingerprint, p.sha1, blob,
                                              list(p.dependencies)))
        for j in m.jobs:
            i += 1
            job = rel.jobs[j.name]
            async with task.step("Uploading jobs", f"{j.name}/{j.version}", i, total):
                blob = await _blob_for(releases, dav, "release_jobs", j.fingerprint, j.sha1, rel.job_path(j.name))
            jobs.append(ReleaseJobRow(m.name, m.version, j.name, j.version, j.fingerprint, j.sha1, blob,
                                      dict(vars(job.spec)), job.monit, dict(job.templates)))
        await releases.add(m.name, m.version, manifest_text, packages, jobs)
        return f"Created release '{m.name}/{m.version}'"
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _blob_for(releases: Releases, dav: DavClient, table: str, fingerprint: str, sha1: str, path: Path) -> str:
    """Reuse the blob of an identical job/package uploaded before, if the blobstore still holds it unchanged;
    else upload this one."""
    blob = await releases.blob_of_identical(table, fingerprint, sha1)
    if blob is not None and await dav.sha1_of(blob) == sha1.split(":", 1)[-1]:
        return blob
    blob_id, _ = await dav.put_file(path)
    return blob_id


async def resolve_version(releases: Releases, name: str, version: str) -> str:
    versions = await releases.versions(name)
    if not versions:
        raise TaskFailed(f"Release '{name}' doesn't exist: upload it first (bosh-lab upload-release)")
    if version == "latest":
        return max(versions, key=version_key)
    if version not in versions:
        raise TaskFailed(f"Release '{name}' has no version '{version}' (has: {', '.join(sorted(versions, key=version_key))})")
    return version
