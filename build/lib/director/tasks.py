"""Director tasks: each long operation is a numbered task with an event log a person can follow
(BOSH's JSON event lines: stage, task, index, total, state, progress), a debug log (every SENT/RECEIVED
message) and a result. Logs are files under ``<data>/tasks/<id>/``, so they survive restarts."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .store import TaskRow, Tasks

log = logging.getLogger("director.task")

FINAL_STATES = ("done", "error", "cancelled")
ACTIVE_STATES = ("queued", "processing", "cancelling")
SHUTDOWN_REASON = "the director stopped while the task was running (restarted?); its deployment can be deployed again"


class TaskFailed(Exception):
    """A task failure with a message meant for the user."""


class DeploymentLocked(Exception):
    """Another task is changing the deployment."""

    def __init__(self, deployment: str, task_id: int, description: str) -> None:
        self.deployment, self.task_id, self.description = deployment, task_id, description
        super().__init__(f"Deployment '{deployment}' is locked by task {task_id} ('{description}'): wait for it to "
                         f"finish, or cancel it with `bosh-lab cancel-task {task_id}`")


class TaskNotRunning(Exception):
    pass


class TooManyTasks(Exception):
    """The director runs as many tasks as it may at once: the request is refused, not queued without end."""


class Task:
    def __init__(self, task_id: int, description: str, directory: Path) -> None:
        self.id = task_id
        self.description = description
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._event = open(self.dir / "event", "a", buffering=1)
        self._debug = open(self.dir / "debug", "a", buffering=1)
        self.cancel_reason: str | None = None     # set when the task is cancelled (by a user, or at shutdown)

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
            error = (self.cancel_reason or "cancelled") if isinstance(e, asyncio.CancelledError) else str(e) or type(e).__name__
            self.event(stage, task, index=index, total=total, state="failed", progress=100, tags=tags,
                       data={"error": error})
            raise
        self.event(stage, task, index=index, total=total, state="finished", progress=100, tags=tags)


TaskBody = Callable[[Task], Awaitable[str]]


class TaskRunner:
    """Runs tasks as asyncio tasks. A task that changes a deployment holds that deployment's lock from the
    moment it is created until it ends. Locks live in memory: a director that restarts has no running tasks
    (``recover`` fails the ones the previous process left), so no lock can outlive its task."""

    def __init__(self, rows: Tasks, data_dir: str, max_running: int = 64) -> None:
        self.rows = rows
        self.max_running = max_running
        self.dir = Path(data_dir) / "tasks"
        self._running: dict[int, asyncio.Task[None]] = {}
        self._tasks: dict[int, Task] = {}
        self.locks: dict[str, tuple[int, str]] = {}     # deployment -> (task id, description)

    async def recover(self) -> list[int]:
        """Tasks that were running when the director process died can never finish: mark them failed."""
        ids = await self.rows.fail_unfinished(SHUTDOWN_REASON)

        def note() -> None:
            for task_id in ids:
                d = self.dir / str(task_id)
                if d.is_dir():
                    with open(d / "debug", "a") as f:
                        f.write(f"director started again: task {task_id} failed: {SHUTDOWN_REASON}\n")
                    (d / "result").write_text(SHUTDOWN_REASON + "\n")
        await asyncio.to_thread(note)
        return ids

    def lock_holder(self, deployment: str) -> tuple[int, str] | None:
        return self.locks.get(deployment)

    async def start(self, description: str, body: TaskBody, deployment: str | None = None, lock: bool = False) -> int:
        """Create and run a task. With ``lock``, the deployment's lock is taken now (DeploymentLocked if held)."""
        if len(self._running) >= self.max_running:
            raise TooManyTasks(f"the director is running {len(self._running)} tasks, its limit "
                               f"(BOSH_LAB_MAX_RUNNING_TASKS={self.max_running}): try again when some have finished")
        if lock:
            assert deployment is not None
            holder = self.locks.get(deployment)
            if holder is not None:
                raise DeploymentLocked(deployment, holder[0], holder[1])
            self.locks[deployment] = (0, description)   # taken before the first await: no two tasks get it
        try:
            task_id = await self.rows.create(description, deployment)
        except BaseException:
            if lock and deployment is not None:
                self.locks.pop(deployment, None)
            raise
        if lock and deployment is not None:
            self.locks[deployment] = (task_id, description)
        task = Task(task_id, description, self.dir / str(task_id))
        self._tasks[task_id] = task
        self._running[task_id] = asyncio.create_task(self._run(task, body, deployment if lock else None),
                                                     name=f"task-{task_id}")
        return task_id

    async def cancel(self, task_id: int) -> str:
        """Cancel a running task (its current step is interrupted; the agent's drain is cancelled too)."""
        t, task = self._running.get(task_id), self._tasks.get(task_id)
        if t is None or task is None:
            row = await self.get(task_id)
            raise TaskNotRunning(f"Task {task_id} is not running" + (f" (state {row.state})" if row else ""))
        if task.cancel_reason is None:
            task.cancel_reason = "cancelled by the user"
            task.info(f"Task {task_id} is being cancelled")
            await self.rows.set_state(task_id, "cancelling")
            t.cancel()
        return "cancelling"

    async def _run(self, task: Task, body: TaskBody, locked: str | None = None) -> None:
        started = time.monotonic()
        state, result = "done", ""
        try:
            result = await body(task)
        except asyncio.CancelledError:
            if task.cancel_reason == SHUTDOWN_REASON:
                state, result = "error", SHUTDOWN_REASON
            else:
                state, result = "cancelled", f"Task {task.id} cancelled"
        except TaskFailed as e:
            state, result = "error", str(e)
        except Exception as e:  # a bug or an unexpected failure: still end the task with its reason
            log.exception("task %d failed", task.id)
            state, result = "error", f"{type(e).__name__}: {e}"
        finally:
            task.info(f"Task {task.id} {state} after {time.monotonic() - started:.1f}s: {result}")
            (task.dir / "result").write_text(result + "\n")
            task.close()
            await self.rows.finish(task.id, state, result)
            self._running.pop(task.id, None)
            self._tasks.pop(task.id, None)
            if locked is not None and self.locks.get(locked, (None,))[0] == task.id:
                del self.locks[locked]

    async def wait(self, task_id: int) -> TaskRow:
        t = self._running.get(task_id)
        if t is not None:
            await asyncio.shield(t)
        row = await self.get(task_id)
        assert row is not None, f"task {task_id} does not exist"
        return row

    async def get(self, task_id: int) -> TaskRow | None:
        return await self.rows.get(task_id)

    async def cancel_all(self) -> None:
        """At shutdown: every running task ends as failed, saying the director stopped."""
        for task_id, t in list(self._running.items()):
            task = self._tasks.get(task_id)
            if task is not None:
                task.cancel_reason = SHUTDOWN_REASON
            t.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def output_path(self, task_id: int, kind: str) -> Path:
        if kind not in ("event", "debug", "result"):
            raise ValueError(f"unknown task output type {kind!r} (event, debug or result)")
        return self.dir / str(task_id) / kind
