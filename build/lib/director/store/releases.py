"""Releases, their jobs and packages, and compiled packages."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from .db import Database, Statement
from .rows import CompiledPackageRow, ReleaseJobRow, ReleasePackageRow, ReleaseRow

BLOB_TABLES = ("release_packages", "release_jobs")


class Releases:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def exists(self, name: str) -> bool:
        return await self.db.one("SELECT 1 FROM releases WHERE name=?", (name,)) is not None

    async def versions(self, name: str) -> list[str]:
        return [str(r["version"]) for r in await self.db.all("SELECT version FROM releases WHERE name=?", (name,))]

    async def get(self, name: str, version: str) -> ReleaseRow | None:
        r = await self.db.one("SELECT * FROM releases WHERE name=? AND version=?", (name, version))
        return ReleaseRow(r["name"], r["version"], r["manifest"], float(r["created_at"])) if r else None

    async def all(self) -> list[ReleaseRow]:
        rows = await self.db.all("SELECT * FROM releases ORDER BY name, created_at")
        return [ReleaseRow(r["name"], r["version"], r["manifest"], float(r["created_at"])) for r in rows]

    async def job(self, release: str, version: str, name: str) -> ReleaseJobRow | None:
        r = await self.db.one("SELECT * FROM release_jobs WHERE release=? AND release_version=? AND name=?",
                              (release, version, name))
        return ReleaseJobRow.of(r) if r else None

    async def jobs_of(self, release: str, version: str) -> list[ReleaseJobRow]:
        rows = await self.db.all("SELECT * FROM release_jobs WHERE release=? AND release_version=?", (release, version))
        return [ReleaseJobRow.of(r) for r in rows]

    async def package(self, release: str, version: str, name: str) -> ReleasePackageRow | None:
        r = await self.db.one("SELECT * FROM release_packages WHERE release=? AND release_version=? AND name=?",
                              (release, version, name))
        return ReleasePackageRow.of(r) if r else None

    async def packages_of(self, release: str, version: str) -> list[ReleasePackageRow]:
        rows = await self.db.all("SELECT * FROM release_packages WHERE release=? AND release_version=?",
                                 (release, version))
        return [ReleasePackageRow.of(r) for r in rows]

    async def blob_of_identical(self, table: str, fingerprint: str, sha1: str) -> str | None:
        """The blob of a job or package uploaded before with the same fingerprint and sha1."""
        assert table in BLOB_TABLES
        r = await self.db.one(f"SELECT blobstore_id FROM {table} WHERE fingerprint=? AND sha1=? LIMIT 1",
                              (fingerprint, sha1))
        return str(r["blobstore_id"]) if r else None

    async def blob_in_use(self, table: str, blobstore_id: str) -> bool:
        assert table in BLOB_TABLES
        return await self.db.one(f"SELECT 1 FROM {table} WHERE blobstore_id=? LIMIT 1", (blobstore_id,)) is not None

    async def fingerprint_in_use(self, fingerprint: str) -> bool:
        return await self.db.one("SELECT 1 FROM release_packages WHERE fingerprint=? LIMIT 1",
                                 (fingerprint,)) is not None

    async def add(self, name: str, version: str, manifest: str, packages: list[ReleasePackageRow],
                  jobs: list[ReleaseJobRow]) -> None:
        """A release with its packages and jobs, all or nothing."""
        statements: list[Statement] = [
            ("INSERT INTO releases (name, version, manifest, created_at) VALUES (?, ?, ?, ?)",
             (name, version, manifest, time.time()))]
        for p in packages:
            statements.append(("INSERT INTO release_packages (release, release_version, name, version, fingerprint, "
                               "sha1, blobstore_id, dependencies) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (p.release, p.release_version, p.name, p.version, p.fingerprint, p.sha1,
                                p.blobstore_id, json.dumps(p.dependencies))))
        for j in jobs:
            statements.append(("INSERT INTO release_jobs (release, release_version, name, version, fingerprint, sha1, "
                               "blobstore_id, spec, monit, templates) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (j.release, j.release_version, j.name, j.version, j.fingerprint, j.sha1,
                                j.blobstore_id, json.dumps(j.spec), j.monit, json.dumps(j.templates))))
        await self.db.transaction(statements)

    async def delete_version(self, name: str, version: str) -> None:
        await self.db.transaction([
            ("DELETE FROM release_packages WHERE release=? AND release_version=?", (name, version)),
            ("DELETE FROM release_jobs WHERE release=? AND release_version=?", (name, version)),
            ("DELETE FROM releases WHERE name=? AND version=?", (name, version))])


class CompiledPackages:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, fingerprint: str, stemcell: str, dependency_key: str) -> CompiledPackageRow | None:
        r = await self.db.one("SELECT * FROM compiled_packages WHERE fingerprint=? AND stemcell=? AND dependency_key=?",
                              (fingerprint, stemcell, dependency_key))
        return CompiledPackageRow(**r) if r else None

    async def next_build(self, name: str, stemcell: str) -> int:
        r = await self.db.one("SELECT MAX(build) AS b FROM compiled_packages WHERE name=? AND stemcell=?",
                              (name, stemcell))
        return int((r or {}).get("b") or 0) + 1

    async def put(self, row: CompiledPackageRow) -> None:
        values: dict[str, Any] = asdict(row)
        await self.db.execute(
            "INSERT OR REPLACE INTO compiled_packages (name, fingerprint, stemcell, dependency_key, build, version, "
            "sha1, blobstore_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(values[k] for k in ("name", "fingerprint", "stemcell", "dependency_key", "build", "version", "sha1",
                                      "blobstore_id", "created_at")))

    async def blobs_of_fingerprint(self, fingerprint: str) -> list[str]:
        rows = await self.db.all("SELECT blobstore_id FROM compiled_packages WHERE fingerprint=?", (fingerprint,))
        return [str(r["blobstore_id"]) for r in rows]

    async def delete_fingerprint(self, fingerprint: str) -> None:
        await self.db.execute("DELETE FROM compiled_packages WHERE fingerprint=?", (fingerprint,))
