"""HTTP basic auth as a plain header (works the same on every aiohttp version)."""
from __future__ import annotations

import base64


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
