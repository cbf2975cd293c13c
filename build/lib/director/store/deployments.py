"""Deployments (the stored manifest and the release versions it resolved to) and resurrection settings."""
from __future__ import annotations

import json
import time

from .db import Database
from .rows import DeploymentRow

ALL = "*"   # the resurrection row that holds the global setting


class Deployments:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, name: str) -> DeploymentRow | None:
        r = await self.db.one("SELECT * FROM deployments WHERE name=?", (name,))
        return DeploymentRow.of(r) if r else None

    async def all(self) -> list[DeploymentRow]:
        return [DeploymentRow.of(r) for r in await self.db.all("SELECT * FROM deployments ORDER BY name")]

    async def save(self, name: str, manifest: str, releases: dict[str, str]) -> None:
        await self.db.execute(
            "INSERT INTO deployments (name, manifest, updated_at, releases) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest, updated_at=excluded.updated_at, "
            "releases=excluded.releases", (name, manifest, time.time(), json.dumps(releases)))

    async def delete(self, name: str) -> None:
        """The deployment, its instances and its resurrection setting, all at once."""
        await self.db.transaction([("DELETE FROM instances WHERE deployment=?", (name,)),
                                   ("DELETE FROM deployments WHERE name=?", (name,)),
                                   ("DELETE FROM resurrection WHERE deployment=?", (name,))])


class Resurrection:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def setting(self, deployment: str) -> bool | None:
        """The deployment's own setting, else the global one set through the API, else None."""
        for key in (deployment, ALL):
            r = await self.db.one("SELECT enabled FROM resurrection WHERE deployment=?", (key,))
            if r is not None:
                return bool(r["enabled"])
        return None

    async def set(self, enabled: bool, deployment: str | None) -> None:
        await self.db.execute("INSERT INTO resurrection (deployment, enabled) VALUES (?, ?) ON CONFLICT(deployment) "
                              "DO UPDATE SET enabled=excluded.enabled", (deployment or ALL, int(enabled)))

    async def all(self) -> dict[str, bool]:
        rows = await self.db.all("SELECT deployment, enabled FROM resurrection ORDER BY deployment")
        return {str(r["deployment"]): bool(r["enabled"]) for r in rows}
