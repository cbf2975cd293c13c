"""``unmount_disk(disk_cid)`` (async) -> ``{"message": "Unmounted partition of <cid>"}``, or
``{"message": "Partition of <cid> is not mounted"}`` when it was not (BOSH's agent's two answers).

The disk is looked up in the current settings (no registry read, as in BOSH) and unmounted from wherever it
is mounted (``/var/vcap/store`` or the migration target). A cid the settings do not know is an error.
"""
from __future__ import annotations

from ..disks import DiskError
from .base import Action, ActionError, Arg
from .mount_disk import check_cid


class UnmountDisk(Action):
    name = "unmount_disk"
    args = (Arg("disk cid", str),)

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, cid: str) -> dict[str, str]:
        check_cid(cid)
        try:
            unmounted = await self.services.disks().unmount(cid)
        except DiskError as e:
            raise ActionError(str(e)) from None
        return {"message": f"Unmounted partition of {cid}" if unmounted else f"Partition of {cid} is not mounted"}
