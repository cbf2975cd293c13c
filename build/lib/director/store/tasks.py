"""Tasks: what ran, its state and its result (the event/debug logs are files beside the database)."""
from __future__ import annotations

import time

from .db import Database
from .rows import TaskRow

UNFINISHED = ("queued", "processing", "cancelling")


class Tasks:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, description: str, deployment: str | None) -> int:
        return await self.db.execute(
            "INSERT INTO tasks (state, description, deployment, started_at) VALUES ('processing', ?, ?, ?)",
            (description, deployment, time.time()))

    async def get(self, task_id: int) -> TaskRow | None:
        r = await self.db.one("SELECT * FROM tasks WHERE id=?", (task_id,))
        return TaskRow.of(r) if r else None

    async def recent(self, limit: int, states: list[str] | None = None) -> list[TaskRow]:
        sql, params = "SELECT * FROM tasks", []
        if states:
            sql += " WHERE state IN (" + ",".join("?" for _ in states) + ")"
            params = list(states)
        rows = await self.db.all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [TaskRow.of(r) for r in rows]

    async def set_state(self, task_id: int, state: str) -> None:
        await self.db.execute("UPDATE tasks SET state=? WHERE id=?", (state, task_id))

    async def finish(self, task_id: int, state: str, result: str) -> None:
        await self.db.execute("UPDATE tasks SET state=?, result=?, ended_at=? WHERE id=?",
                              (state, result, time.time(), task_id))

    async def fail_unfinished(self, reason: str) -> list[int]:
        """Tasks a previous director process left running can never finish: mark them failed."""
        marks = ",".join("?" for _ in UNFINISHED)
        rows = await self.db.all(f"SELECT id FROM tasks WHERE state IN ({marks})", UNFINISHED)
        await self.db.execute(f"UPDATE tasks SET state='error', ended_at=?, result=? WHERE state IN ({marks})",
                              (time.time(), reason, *UNFINISHED))
        return [int(r["id"]) for r in rows]
