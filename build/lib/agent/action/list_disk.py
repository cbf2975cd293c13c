"""``list_disk`` (async with protocol >= 3, else sync) -> the cids of the persistent disks really mounted.

A disk of the settings' ``disks.persistent`` is listed when its path is the directory mounted at
``/var/vcap/store`` (or at ``/var/vcap/store_migration_target`` during a migration): same device and inode,
asked of the kernel, not of a file the agent wrote. Nothing mounted: an honest ``[]``.
"""
from __future__ import annotations

import asyncio

from .base import Action


class ListDisk(Action):
    name = "list_disk"

    def is_async(self, protocol: int) -> bool:
        return protocol >= 3

    async def run(self) -> list[str]:
        disks = self.services.disks()
        return [cid for cid, _ in await asyncio.to_thread(disks.mounted)]
