"""The registry: the settings each VM's agent reads at boot, keyed by the VM's cid (its instance id in
the 2013 registry's words), with the credentials that VM alone may read them with."""
from __future__ import annotations

import json

from boshlab.contracts import Settings

from .db import Database


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, vm_cid: str, settings: Settings, user: str | None = None, password: str | None = None) -> None:
        """Store the VM's settings; ``user``/``password`` (set when the VM is made) are kept on updates."""
        await self.db.execute("INSERT INTO registry (instance_id, settings, user, password) VALUES (?, ?, ?, ?) "
                              "ON CONFLICT(instance_id) DO UPDATE SET settings=excluded.settings, "
                              "user=COALESCE(excluded.user, user), password=COALESCE(excluded.password, password)",
                              (vm_cid, json.dumps(settings), user, password))

    async def credentials(self, vm_cid: str) -> tuple[str, str] | None:
        r = await self.db.one("SELECT user, password FROM registry WHERE instance_id=?", (vm_cid,))
        if r is None or not r["user"] or not r["password"]:
            return None
        return str(r["user"]), str(r["password"])

    async def all(self) -> dict[str, Settings]:
        rows = await self.db.all("SELECT instance_id, settings FROM registry")
        return {str(r["instance_id"]): json.loads(r["settings"]) for r in rows}

    async def get_raw(self, vm_cid: str) -> str | None:
        """The settings as stored (JSON text): what the registry serves."""
        r = await self.db.one("SELECT settings FROM registry WHERE instance_id=?", (vm_cid,))
        return str(r["settings"]) if r else None

    async def get(self, vm_cid: str) -> Settings | None:
        raw = await self.get_raw(vm_cid)
        if raw is None:
            return None
        value: Settings = json.loads(raw)
        return value

    async def delete(self, vm_cid: str) -> None:
        await self.db.execute("DELETE FROM registry WHERE instance_id=?", (vm_cid,))
