"""``info`` (sync) -> ``{"api_version": 1}``."""
from __future__ import annotations

from typing import Any

from .base import Action


class Info(Action):
    name = "info"

    async def run(self) -> dict[str, Any]:
        return {"api_version": 1}
