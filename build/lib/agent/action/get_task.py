"""``get_task(agent_task_id)`` (sync): the running form, the task's value, or its error (protocol.md §2.3)."""
from __future__ import annotations

from typing import Any

from boshlab.wire import task_running

from ..tasks import DONE, FAILED, TaskNotFound
from .base import Action, ActionError, Arg


class GetTask(Action):
    name = "get_task"
    args = (Arg("agent task id", str),)

    async def run(self, task_id: str) -> Any:
        try:
            task = self.services.tasks.get(task_id)
        except TaskNotFound as e:
            raise ActionError(str(e)) from None
        if task.state == DONE:
            return task.result
        if task.state == FAILED:
            raise ActionError(f"Task {task.id} result: {task.error}")
        return task_running(task.id)
