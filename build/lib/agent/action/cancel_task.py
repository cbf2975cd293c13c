"""``cancel_task(agent_task_id)`` (sync) -> ``"canceled"``; only ``drain`` can be canceled."""
from __future__ import annotations

from ..tasks import CancelNotSupported, TaskNotFound
from .base import Action, ActionError, Arg


class CancelTask(Action):
    name = "cancel_task"
    args = (Arg("agent task id", str),)

    async def run(self, task_id: str) -> str:
        try:
            self.services.tasks.cancel(task_id)
        except (TaskNotFound, CancelNotSupported) as e:
            raise ActionError(str(e)) from None
        return "canceled"
