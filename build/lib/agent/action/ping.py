"""``ping`` (sync) -> ``"pong"``: the director's first message to a new VM (deck slide 17)."""
from __future__ import annotations

from .base import Action


class Ping(Action):
    name = "ping"

    async def run(self) -> str:
        return "pong"
