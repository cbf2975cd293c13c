"""``start`` (sync) -> ``"started"``: monit starts every vcap service; the stopped marker goes away."""
from __future__ import annotations

from ..jobsupervisor import JobSupervisorError
from .base import Action, ActionError


class Start(Action):
    name = "start"

    async def run(self) -> str:
        try:
            await self.services.supervisor.start()
        except JobSupervisorError as e:
            raise ActionError(f"Starting jobs: {e}") from None
        return "started"
