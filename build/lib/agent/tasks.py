"""Long-running (async) actions as tasks (protocol.md §2.3): each gets a UUID and is polled with ``get_task``.
Tasks live in memory only (an agent restart forgets them: ``Task with id X could not be found``).

One at a time, FIFO. A second long-running message while one runs (say ``fetch_logs`` during a
``migrate_disk``) is accepted at once with its own ``agent_task_id`` and waits its turn; ``get_task`` answers
the running form for it meanwhile. That is today's agent (one worker reading a queue); the 2013 agent refused
it with "already running long running task". The lab keeps the queue: the director never has to retry, and
disk work (mount, migrate, unmount) can never overlap.

Bounds: at most ``max_queued`` (100) tasks wait behind the running one; one more is refused at once
(``too many tasks queued (100)``, nothing is started). Of the finished tasks the last ``keep`` (1000) are
kept for ``get_task``; older finished ones are forgotten (``Task with id X could not be found``), however
long an older task keeps running.

``cancel_task``: only cancelable actions (``drain``) can be canceled, running or queued; the action's child
processes are stopped (drain: SIGTERM to the script's process group, SIGKILL after 10 s) and the task ends
failed with "task canceled". Any other task: "canceling task X (method) is not supported".
"""
from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .log import log

RUNNING, DONE, FAILED = "running", "done", "failed"


class TaskNotFound(Exception):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task with id {task_id} could not be found")


class CancelNotSupported(Exception):
    pass


class TooManyTasks(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"too many tasks queued ({limit})")


@dataclass
class Task:
    id: str
    method: str
    run: Callable[[], Coroutine[Any, Any, Any]]
    cancelable: bool
    state: str = RUNNING   # queued tasks are "running" too, as far as get_task tells
    result: Any = None
    error: str | None = None
    handle: asyncio.Task[Any] | None = None
    canceled: bool = False


def expected(e: BaseException) -> bool:
    """The agent's and boshlab's own errors carry messages meant for the director; anything else is a bug."""
    return type(e).__module__.split(".")[0] in ("agent", "boshlab")


def describe(e: BaseException) -> str:
    """An exception as an error message: the message of an expected error, else type and message."""
    text = str(e)
    if expected(e) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class TaskManager:
    def __init__(self, keep: int = 1000, max_queued: int = 100) -> None:
        self.keep = keep
        self.max_queued = max_queued
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()   # finished task ids, oldest first
        self._queue: asyncio.Queue[Task] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Tasks accepted and not started yet."""
        return self._queue.qsize()

    def submit(self, method: str, run: Callable[[], Coroutine[Any, Any, Any]], cancelable: bool = False) -> Task:
        """Queue a task; raises TooManyTasks when ``max_queued`` are already waiting."""
        if self._queue.qsize() >= self.max_queued:
            log.warning("Refusing %s: %d tasks are queued already", method, self._queue.qsize())
            raise TooManyTasks(self.max_queued)
        task = Task(str(uuid.uuid4()), method, run, cancelable)
        self.tasks[task.id] = task
        self._queue.put_nowait(task)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return task

    def get(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def cancel(self, task_id: str) -> None:
        task = self.get(task_id)
        if not task.cancelable:
            raise CancelNotSupported(f"canceling task {task_id} ({task.method}) is not supported")
        if task.state != RUNNING:
            return
        task.canceled = True
        if task.handle is not None:
            task.handle.cancel()  # the action stops its child process (drain: TERM, 10 s, KILL)
        log.info("Task %s (%s) canceled", task.id, task.method)

    async def _work(self) -> None:
        while True:
            task = await self._queue.get()
            if task.canceled:
                self._finish(task, error="task canceled")
                continue
            log.info("Task %s (%s) started", task.id, task.method)
            task.handle = asyncio.create_task(task.run())
            await asyncio.wait([task.handle])
            if task.handle.cancelled():
                self._finish(task, error="task canceled")
            elif (exc := task.handle.exception()) is not None:
                if not expected(exc):
                    log.error("Task %s (%s) crashed", task.id, task.method, exc_info=exc)
                self._finish(task, error=describe(exc))
            else:
                self._finish(task, result=task.handle.result())

    def _finish(self, task: Task, result: Any = None, error: str | None = None) -> None:
        task.handle = None
        self._finished[task.id] = None
        while len(self._finished) > self.keep:
            old, _ = self._finished.popitem(last=False)
            self.tasks.pop(old, None)
        if error is None:
            task.state, task.result = DONE, result
            log.info("Task %s (%s) done: %s", task.id, task.method, str(result)[:200])
        else:
            task.state, task.error = FAILED, error
            log.error("Task %s (%s) failed: %s", task.id, task.method, error)
