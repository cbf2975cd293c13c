"""``get_state`` (sync; also the deck's 2013 name ``state``), optional argument ``"full"``: the current apply
spec plus ``agent_id``, ``job_state``, ``processes``, ``vm`` and, when full, ``vitals`` (protocol.md §3)."""
from __future__ import annotations

import asyncio
from typing import cast

from boshlab.contracts import StateReply

from ..jobsupervisor import process_entry
from .base import Action, Arg


class GetState(Action):
    name = "get_state"
    aliases = ("state",)
    args = (Arg("state type", str, required=False, nullable=True),)

    async def run(self, kind: str | None = None) -> StateReply:
        svc = self.services
        settings = svc.settings.settings
        # the saved spec as it is (every key kept), then the agent's own keys
        state = cast(StateReply, dict(svc.specs.load()))
        state["agent_id"] = settings["agent_id"]
        status = await svc.supervisor.status()
        state["job_state"] = svc.supervisor.job_state(status)
        state["processes"] = [process_entry(s) for s in status.group()] if status is not None else []
        state["vm"] = settings.get("vm") or {"name": None}
        if kind == "full":
            state["vitals"] = await asyncio.to_thread(svc.vitals.collect)
        return state
