"""Uploading releases: check the tarball, put its jobs and packages into the blobstore, record them."""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from boshlab.dav import DavClient
from boshlab.release import LoadedRelease, ReleaseError, read_release

from .db import Database
from .tasks import Task, TaskFailed


def version_key(v: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(v).replace("-", ".").split("."))


async def upload_release(db: Database, dav: DavClient, task: Task, tarball: Path, workdir: Path) -> str:
    tmp = Path(tempfile.mkdtemp(dir=workdir, prefix="release-"))
    try:
        async with task.step("Extracting release", "Extracting release"):
            try:
                rel: LoadedRelease = await asyncio.to_thread(read_release, tarball, tmp)
            except (ReleaseError, ValueError) as e:
                raise TaskFailed(f"Release is invalid: {e}") from None
        m = rel.manifest
        existing = await db.one("SELECT manifest FROM releases WHERE name=? AND version=?", (m.name, m.version))
        if existing is not None:
            if existing["manifest"] == (rel.root / "release.MF").read_text():
                return f"release {m.name}/{m.version} is already uploaded"
            raise TaskFailed(f"release {m.name}/{m.version} is already uploaded with different content; "
                             f"create it with a new version")
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT INTO releases (name, version, manifest, created_at) VALUES (?, ?, ?, ?)",
             (m.name, m.version, (rel.root / "release.MF").read_text(), time.time()))]
        total = len(m.packages) + len(m.jobs)
        i = 0
        for p in m.packages:
            i += 1
            async with task.step("Uploading packages", f"{p.name}/{p.version}", i, total):
                blob = await _blob_for(db, dav, "release_packages", p.fingerprint, p.sha1, rel.package_path(p.name))
            statements.append(("INSERT INTO release_packages (release, release_version, name, version, fingerprint, "
                               "sha1, blobstore_id, dependencies) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (m.name, m.version, p.name, p.version, p.fingerprint, p.sha1, blob, json.dumps(p.dependencies))))
        for j in m.jobs:
            i += 1
            job = rel.jobs[j.name]
            async with task.step("Uploading jobs", f"{j.name}/{j.version}", i, total):
                blob = await _blob_for(db, dav, "release_jobs", j.fingerprint, j.sha1, rel.job_path(j.name))
            statements.append(("INSERT INTO release_jobs (release, release_version, name, version, fingerprint, sha1, "
                               "blobstore_id, spec, monit, templates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (m.name, m.version, j.name, j.version, j.fingerprint, j.sha1, blob,
                                json.dumps(vars(job.spec)), job.monit, json.dumps(job.templates))))
        await db.transaction(statements)
        return f"Created release '{m.name}/{m.version}'"
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _blob_for(db: Database, dav: DavClient, table: str, fingerprint: str, sha1: str, path: Path) -> str:
    """Reuse the blob of an identical job/package uploaded before; else upload this one."""
    row = await db.one(f"SELECT blobstore_id FROM {table} WHERE fingerprint=? AND sha1=? LIMIT 1", (fingerprint, sha1))
    if row and await dav.exists(row["blobstore_id"]):
        return str(row["blobstore_id"])
    blob_id, _ = await dav.put_file(path)
    return blob_id


async def resolve_version(db: Database, name: str, version: str) -> str:
    rows = await db.all("SELECT version FROM releases WHERE name=?", (name,))
    if not rows:
        raise TaskFailed(f"Release '{name}' doesn't exist: upload it first (bosh-lab upload-release)")
    versions = [str(r["version"]) for r in rows]
    if version == "latest":
        return max(versions, key=version_key)
    if version not in versions:
        raise TaskFailed(f"Release '{name}' has no version '{version}' (has: {', '.join(sorted(versions, key=version_key))})")
    return version
