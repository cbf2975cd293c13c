"""``info`` (sync) -> ``{"api_version": 1}``."""
from __future__ import annotations

from boshlab.contracts import InfoReply

from .base import Action


class Info(Action):
    name = "info"

    async def run(self) -> InfoReply:
        return {"api_version": 1}
