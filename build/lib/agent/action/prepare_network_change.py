"""``prepare_network_change`` (sync) -> ``"ok"``: drop the cached settings and read them again from the
registry (the 2013 agent then restarted; this one keeps running and answering)."""
from __future__ import annotations

from ..settings import SettingsError
from .base import Action, ActionError


class PrepareNetworkChange(Action):
    name = "prepare_network_change"

    async def run(self) -> str:
        try:
            await self.services.settings.refresh()
        except SettingsError as e:
            raise ActionError(str(e)) from None
        return "ok"
