"""``stop`` (async) -> ``"stopped"``: monit stops every vcap service, the stopped marker is written, and the
action waits until no vcap service is monitored or has an action pending (protocol.md §6.5)."""
from __future__ import annotations

from ..jobsupervisor import JobSupervisorError
from .base import Action, ActionError


class Stop(Action):
    name = "stop"

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self) -> str:
        try:
            await self.services.supervisor.stop_and_wait()
        except JobSupervisorError as e:
            raise ActionError(f"Stopping jobs: {e}") from None
        return "stopped"
