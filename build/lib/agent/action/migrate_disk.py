"""``migrate_disk`` (async) -> ``{}``. The director sends the old and the new disk cid; like BOSH's agent this
action ignores them and works on mount points: the old disk at ``/var/vcap/store``, the new one at
``/var/vcap/store_migration_target`` (``mount_disk`` put it there).

1. remount the old disk read-only; 2. ``tar -c | tar -x`` everything (numeric owners, modes, times, links,
xattrs, holes); 3. unmount the old disk; 4. bind the new disk at ``/var/vcap/store`` and unmount it from the
migration target. If the copy fails the old disk is made writable again and stays where it was. The
director stops the jobs first.
"""
from __future__ import annotations

from typing import Any

from ..disks import DiskError
from .base import Action, ActionError


class MigrateDisk(Action):
    name = "migrate_disk"

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self) -> dict[str, Any]:
        try:
            await self.services.disks().migrate()
        except DiskError as e:
            raise ActionError(str(e)) from None
        return {}
