"""Faults injected for game days (``bosh-lab fault``): kept here so that ``GET /faults`` and undo survive a
director restart."""
from __future__ import annotations

import json
import time
from typing import Any

from .db import Database
from .rows import FaultRow


class FaultRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, fault_id: str, kind: str, deployment: str | None, instance_id: str | None,
                  instance: str | None, target: str, details: dict[str, Any], message: str) -> None:
        await self.db.execute(
            "INSERT INTO faults (id, kind, deployment, instance_id, instance, target, state, details, message, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
            (fault_id, kind, deployment, instance_id, instance, target, json.dumps(details), message, time.time()))

    async def get(self, fault_id: str) -> FaultRow | None:
        r = await self.db.one("SELECT * FROM faults WHERE id=?", (fault_id,))
        return FaultRow.of(r) if r else None

    async def active(self) -> list[FaultRow]:
        return [FaultRow.of(r) for r in await self.db.all(
            "SELECT * FROM faults WHERE state='active' ORDER BY created_at")]

    async def recent(self, limit: int = 50) -> list[FaultRow]:
        return [FaultRow.of(r) for r in await self.db.all(
            "SELECT * FROM faults ORDER BY created_at DESC LIMIT ?", (limit,))]

    async def undone(self, fault_id: str, message: str) -> None:
        await self.db.execute("UPDATE faults SET state='undone', undone_at=?, undo_message=? WHERE id=?",
                              (time.time(), message, fault_id))
