"""``mount_disk(disk_cid)`` (async) -> ``{}``.

Re-reads the settings from the registry first (the director attaches the disk, then sends mount_disk), finds
``disks.persistent[<cid>].path`` (``/var/vcap/store_disks/<cid>``, a Docker volume the CPI mounted into the
VM) and bind-mounts it at ``/var/vcap/store``; when another disk is mounted there already, at
``/var/vcap/store_migration_target`` (for ``migrate_disk``), as BOSH's agent does. Mounting a disk that is
mounted already is a no-op. Errors name the cid. See agent/disks.py.
"""
from __future__ import annotations

from typing import Any

from ..disks import DiskError
from .base import Action, ActionError, Arg


def check_cid(cid: str) -> str:
    if not cid.strip():
        raise ActionError("disk cid must not be empty")
    return cid


class MountDisk(Action):
    name = "mount_disk"
    args = (Arg("disk cid", str),)

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, cid: str) -> dict[str, Any]:
        check_cid(cid)
        try:
            await self.services.disks().mount(cid)
        except DiskError as e:
            raise ActionError(str(e)) from None
        return {}
