"""Persistent disks: the size asked for, the instance holding it, or orphaned."""
from __future__ import annotations

import time

from .db import Database
from .rows import DiskRow


class Disks:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, cid: str) -> DiskRow | None:
        r = await self.db.one("SELECT * FROM disks WHERE cid=?", (cid,))
        return DiskRow.of(r) if r else None

    async def current(self, instance_id: str) -> DiskRow | None:
        """The instance's attached disk (the newest if several)."""
        r = await self.db.one("SELECT * FROM disks WHERE instance_id=? AND orphaned=0 ORDER BY created_at DESC",
                              (instance_id,))
        return DiskRow.of(r) if r else None

    async def list(self, orphaned: bool | None = None, deployment: str | None = None) -> list[DiskRow]:
        clauses: list[str] = []
        params: list[object] = []
        if orphaned is not None:
            clauses.append("orphaned=?")
            params.append(int(orphaned))
        if deployment is not None:
            clauses.append("deployment=?")
            params.append(deployment)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self.db.all(f"SELECT * FROM disks{where} ORDER BY created_at", tuple(params))
        return [DiskRow.of(r) for r in rows]

    async def add(self, cid: str, deployment: str, instance_id: str, instance: str, size: int, orphaned: bool) -> None:
        now = time.time()
        await self.db.execute("INSERT INTO disks (cid, deployment, instance_id, instance, size, orphaned, created_at, "
                              "orphaned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (cid, deployment, instance_id, instance, size, int(orphaned), now,
                               now if orphaned else None))

    async def orphan(self, cid: str) -> None:
        await self.db.execute("UPDATE disks SET orphaned=1, orphaned_at=? WHERE cid=?", (time.time(), cid))

    async def orphan_of_instance(self, instance_id: str) -> None:
        await self.db.execute("UPDATE disks SET orphaned=1, orphaned_at=? WHERE instance_id=? AND orphaned=0",
                              (time.time(), instance_id))

    async def migrated(self, old: str, new: str) -> None:
        """After migrate_disk: the new disk is the instance's, the old one is orphaned, at once."""
        await self.db.transaction([
            ("UPDATE disks SET orphaned=0, orphaned_at=NULL WHERE cid=?", (new,)),
            ("UPDATE disks SET orphaned=1, orphaned_at=?, instance_id=NULL WHERE cid=?", (time.time(), old))])

    async def delete(self, cid: str) -> None:
        await self.db.execute("DELETE FROM disks WHERE cid=?", (cid,))

    async def delete_attached(self, deployment: str) -> None:
        await self.db.execute("DELETE FROM disks WHERE deployment=? AND orphaned=0", (deployment,))
