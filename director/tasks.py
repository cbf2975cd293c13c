"""Director tasks: each long operation is a numbered task with an event log a person can follow
(BOSH's JSON event lines: stage, task, index, total, state, progress), a debug log (every SENT/RECEIVED
message) and a result. Logs are files under ``<data>/tasks/<id>/``, so they survive restarts."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from .db import Database

log = logging.getLogger("director.task")

FINAL_STATES = ("done", "error", "cancelled")


class TaskFailed(Exception):
    """A task failure with a message meant for the user."""


class Task:
    def __init__(self, task_id: int, description: str, directory: Path) -> None:
        self.id = task_id
        self.description = description
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._event = open(self.dir / "event", "a", buffering=1)
        self._debug = open(self.dir / "debug", "a", buffering=1)

    def close(self) -> None:
        self._event.close()
        self._debug.close()

    def debug(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1000000:06d}"
        self._debug.write(f"D, [{stamp} #{self.id}] [task:{self.id}] DEBUG -- DirectorJobRunner: {line}\n")

    def info(self, line: str) -> None:
        self.debug(line)
        log.info("task %d: %s", self.id, line)

    def event(self, stage: str, task: str, *, index: int = 1, total: int = 1, state: str = "started",
              progress: int = 0, tags: list[str] | None = None, data: dict[str, Any] | None = None) -> None:
        ev: dict[str, Any] = {"time": int(time.time()), "stage": stage, "tags": tags or [], "total": total,
                              "task": task, "index": index, "state": state, "progress": progress}
        if data:
            ev["data"] = data
        self._event.write(json.dumps(ev) + "\n")
        line = f"Task {self.id} | {stage}: {task}" + ("" if state == "started" else f" {state}")
        if data and "error" in data:
            line += f": {data['error']}"
        log.info("%s", line)
        self.debug(f"{stage}: {task} ({state})")

    @asynccontextmanager
    async def step(self, stage: str, task: str, index: int = 1, total: int = 1,
                   tags: list[str] | None = None) -> AsyncIterator[None]:
        """An event-log step: started, then finished or failed (with the error)."""
        self.event(stage, task, index=index, total=total, state="started", progress=0, tags=tags)
        try:
            yield
        except BaseException as e:
            self.event(stage, task, index=index, total=total, state="failed", progress=100, tags=tags,
                       data={"error": str(e) or type(e).__name__})
            raise
        self.event(stage, task, index=index, total=total, state="finished", progress=100, tags=tags)


TaskBody = Callable[[Task], Awaitable[str]]


class TaskRunner:
    def __init__(self, db: Database, data_dir: str) -> None:
        self.db = db
        self.dir = Path(data_dir) / "tasks"
        self._running: dict[int, asyncio.Task[None]] = {}

    async def recover(self) -> None:
        """Tasks that were running when the director stopped can never finish: mark them failed."""
        await self.db.execute(
            "UPDATE tasks SET state='error', ended_at=?, result=? WHERE state IN ('queued', 'processing')",
            (time.time(), "director restarted while the task was running; deploy again"))

    async def start(self, description: str, body: TaskBody, deployment: str | None = None) -> int:
        task_id = await self.db.execute(
            "INSERT INTO tasks (state, description, deployment, started_at) VALUES ('processing', ?, ?, ?)",
            (description, deployment, time.time()))
        task = Task(task_id, description, self.dir / str(task_id))
        self._running[task_id] = asyncio.create_task(self._run(task, body), name=f"task-{task_id}")
        return task_id

    async def _run(self, task: Task, body: TaskBody) -> None:
        started = time.monotonic()
        state, result = "done", ""
        try:
            result = await body(task)
        except asyncio.CancelledError:
            state, result = "cancelled", "task cancelled"
        except TaskFailed as e:
            state, result = "error", str(e)
        except Exception as e:  # a bug or an unexpected failure: still end the task with its reason
            log.exception("task %d failed", task.id)
            state, result = "error", f"{type(e).__name__}: {e}"
        finally:
            task.info(f"Task {task.id} {state} after {time.monotonic() - started:.1f}s: {result}")
            (task.dir / "result").write_text(result + "\n")
            task.close()
            await self.db.execute("UPDATE tasks SET state=?, result=?, ended_at=? WHERE id=?",
                                  (state, result, time.time(), task.id))
            self._running.pop(task.id, None)

    async def wait(self, task_id: int) -> dict[str, Any]:
        t = self._running.get(task_id)
        if t is not None:
            await asyncio.shield(t)
        return await self.get(task_id) or {}

    async def get(self, task_id: int) -> dict[str, Any] | None:
        return await self.db.one("SELECT * FROM tasks WHERE id=?", (task_id,))

    async def cancel_all(self) -> None:
        for t in list(self._running.values()):
            t.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def output_path(self, task_id: int, kind: str) -> Path:
        if kind not in ("event", "debug", "result"):
            raise ValueError(f"unknown task output type {kind!r} (event, debug or result)")
        return self.dir / str(task_id) / kind
