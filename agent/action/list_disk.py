"""``list_disk`` (async with protocol >= 3): the persistent disk cids really mounted at /var/vcap/store.

The cid of the managed disk comes from ``/var/vcap/bosh/managed_disk_settings.json`` (written by
``mount_disk``; a JSON string, a list of cids, or an object keyed by cid) or, failing that, from the
settings' ``disks.persistent``; it is listed only while /var/vcap/store is a mount point. Nothing mounted:
an honest ``[]``.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ..vitals import mount_points
from .base import Action


def managed_disk_cids(path: Path) -> list[str]:
    try:
        text = path.read_text().strip()
    except OSError:
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return [text] if text else []
    if isinstance(doc, str):
        return [doc] if doc else []
    if isinstance(doc, list):
        return [str(c) for c in doc if c]
    if isinstance(doc, dict):
        return [str(c) for c in doc]
    return []


class ListDisk(Action):
    name = "list_disk"

    def is_async(self, protocol: int) -> bool:
        return protocol >= 3

    async def run(self) -> list[str]:
        paths = self.services.paths
        if str(paths.store) not in await asyncio.to_thread(mount_points):
            return []
        cids = managed_disk_cids(paths.managed_disk_settings)
        if not cids:
            cids = list(self.services.settings.settings.get("disks", {}).get("persistent", {}) or {})
        return cids
