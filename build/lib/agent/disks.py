"""Persistent disks, the lab's way (the design the director's Docker CPI builds against).

A persistent disk is a Docker volume named by its disk cid. The CPI mounts it into the VM container at
``/var/vcap/store_disks/<cid>`` when it (re)creates the VM (container mounts cannot be added later), with
``cap_add=["SYS_ADMIN"]`` so the agent may bind-mount inside. The director names the disk in the registry
settings::

    "disks": {"persistent": {"<cid>": {"path": "/var/vcap/store_disks/<cid>"}}}

(a bare path string as the value is accepted too, as BOSH's agents accept it). Then, as BOSH's agent does:

* ``mount_disk(cid)`` re-reads the settings from the registry (the disk may have been attached after
  boot), bind-mounts the disk's path at ``/var/vcap/store`` (a real mount point, so the heartbeat reports
  ``vitals.disk.persistent``); if another disk is there already, at ``/var/vcap/store_migration_target``;
* ``migrate_disk`` remounts the old disk read-only, copies everything with ``tar`` (owners, modes, times,
  xattrs), unmounts it and moves the new disk from the migration target to ``/var/vcap/store``;
* ``unmount_disk(cid)`` unmounts it wherever it is mounted;
* ``list_disk`` lists the cids whose path really is what is mounted at ``store`` (or the migration target):
  same device and inode, read from the kernel, not from a file the agent wrote;
* ``/var/vcap/bosh/managed_disk_settings.json`` holds the cid at ``/var/vcap/store`` (the bare cid, as BOSH's
  agent writes it); at boot that disk is mounted again if its path is there (a restarted container keeps its
  volumes but loses the bind mount). Difference from BOSH: BOSH records the last disk mounted, even at the
  migration target; the lab records the disk at ``/var/vcap/store``, which is what a reboot should restore.
"""
from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from . import command
from .command import STDERR_LIMIT
from .log import log
from .paths import Paths
from .settings import SettingsError, SettingsService
from .vitals import mount_points


class DiskError(Exception):
    pass


class Mounter(ABC):
    """The mount(8) seam: the real one runs mount/umount; unit tests use a fake."""

    @abstractmethod
    async def bind(self, source: Path, target: Path) -> None: ...

    @abstractmethod
    async def remount(self, target: Path, readonly: bool) -> None: ...

    @abstractmethod
    async def unmount(self, target: Path) -> None: ...

    @abstractmethod
    def is_mount_point(self, path: Path) -> bool: ...


async def run_command(*argv: str) -> str:
    """Run a command; its stdout, or DiskError naming the command, its exit code and its stderr."""
    return await command.run_command(*argv, error=DiskError)


class LinuxMounter(Mounter):
    """mount(8)/umount(8); needs CAP_SYS_ADMIN in the container (and no AppArmor profile denying mount)."""

    async def bind(self, source: Path, target: Path) -> None:
        await run_command("mount", "--bind", str(source), str(target))

    async def remount(self, target: Path, readonly: bool) -> None:
        await run_command("mount", "-o", f"remount,bind,{'ro' if readonly else 'rw'}", str(target))

    async def unmount(self, target: Path) -> None:
        await run_command("umount", str(target))

    def is_mount_point(self, path: Path) -> bool:
        return str(path) in mount_points()


def same_dir(a: Path, b: Path) -> bool:
    """Whether two paths are the same directory (device and inode): a bind mount's target and its source."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def disk_path(cid: str, value: Any) -> Path:
    """The path of one ``disks.persistent`` entry: ``{"path": "/abs"}`` or ``"/abs"``."""
    raw = value.get("path") if isinstance(value, dict) else value
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise DiskError(f"Persistent disk '{cid}' has no absolute path in the settings: {value!r}")
    return Path(raw)


async def tar_copy(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into ``dst`` keeping owners (numeric), modes, times, links, xattrs and
    holes: ``tar -c | tar -x``, as BOSH's agent migrates a disk."""
    read_fd, write_fd = os.pipe()
    try:
        reader = await asyncio.create_subprocess_exec(
            "tar", "-C", str(src), "--xattrs", "--xattrs-include=*", "--sparse", "--numeric-owner", "-cf", "-", ".",
            stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=asyncio.subprocess.PIPE)
        os.close(write_fd)
        write_fd = -1
        writer = await asyncio.create_subprocess_exec(
            "tar", "-C", str(dst), "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-",
            stdin=read_fd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        os.close(read_fd)
        read_fd = -1
    except OSError as e:
        raise DiskError(f"tar: {e.strerror or e}") from None
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    (_, rerr), (_, werr) = await asyncio.gather(reader.communicate(), writer.communicate())
    if reader.returncode != 0 or writer.returncode != 0:
        raise DiskError(f"copying {src} to {dst} failed: tar -c exited with {reader.returncode} "
                        f"({rerr.decode(errors='replace').strip()[-STDERR_LIMIT:]}), tar -x exited with "
                        f"{writer.returncode} ({werr.decode(errors='replace').strip()[-STDERR_LIMIT:]})")


class PersistentDisks:
    def __init__(self, paths: Paths, settings: SettingsService, mounter: Mounter) -> None:
        self.paths = paths
        self.settings = settings
        self.mounter = mounter

    # --- settings and state -----------------------------------------------------------------------

    def configured(self) -> dict[str, Any]:
        """``disks.persistent`` of the current settings (cid -> entry)."""
        disks = self.settings.settings.get("disks")
        persistent = disks.get("persistent") if isinstance(disks, dict) else None
        return dict(persistent) if isinstance(persistent, dict) else {}

    def lookup(self, cid: str, refresh_error: str = "") -> Path:
        disks = self.configured()
        if cid not in disks:
            hint = f" (the settings could not be re-read: {refresh_error})" if refresh_error else ""
            raise DiskError(f"Persistent disk with volume id '{cid}' could not be found in the settings{hint}")
        return disk_path(cid, disks[cid])

    def where_mounted(self, path: Path) -> Path | None:
        """``store`` or ``store_migration_target`` if that is a mount point of ``path``'s directory."""
        for point in (self.paths.store, self.paths.store_migration_target):
            if self.mounter.is_mount_point(point) and same_dir(point, path):
                return point
        return None

    def mounted(self) -> list[tuple[str, Path]]:
        """(cid, mount point) of every configured disk really mounted at store or the migration target."""
        out = []
        for cid, value in self.configured().items():
            try:
                path = disk_path(cid, value)
            except DiskError:
                continue
            point = self.where_mounted(path)
            if point is not None:
                out.append((cid, point))
        return out

    def recorded(self) -> str | None:
        try:
            text = self.paths.managed_disk_settings.read_text().strip()
        except OSError:
            return None
        return text or None

    def sync_record(self) -> None:
        """managed_disk_settings.json = the cid mounted at /var/vcap/store (removed when there is none)."""
        at_store = [cid for cid, point in self.mounted() if point == self.paths.store]
        if at_store:
            tmp = self.paths.managed_disk_settings.with_name(".managed_disk_settings.json.tmp")
            tmp.write_text(at_store[0])
            os.replace(tmp, self.paths.managed_disk_settings)
        else:
            self.paths.managed_disk_settings.unlink(missing_ok=True)

    # --- the actions' work ------------------------------------------------------------------------

    async def mount(self, cid: str) -> Path:
        """Re-read the settings, then mount the disk at store (or the migration target). Returns where."""
        refresh_error = ""
        try:
            await self.settings.reload()
        except SettingsError as e:
            refresh_error = str(e)
            log.warning("mount_disk %s: re-reading the settings failed, using the current ones: %s", cid, e)
        path = self.lookup(cid, refresh_error)
        if not path.is_dir():
            raise DiskError(f"Persistent disk '{cid}': {path} does not exist (is the disk attached to this VM?)")
        if not self.mounter.is_mount_point(path):
            raise DiskError(f"Persistent disk '{cid}': {path} is not a mounted volume (is the disk attached to "
                            f"this VM?)")
        already = self.where_mounted(path)
        if already is not None:
            log.info("Persistent disk %s is already mounted at %s", cid, already)
            self.sync_record()
            return already
        target = self.paths.store
        if self.mounter.is_mount_point(target):
            target = self.paths.store_migration_target
            if self.mounter.is_mount_point(target):
                raise DiskError(f"Cannot mount persistent disk '{cid}': {self.paths.store} and {target} both "
                                f"have a disk mounted already")
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            await self.mounter.bind(path, target)
        except DiskError as e:
            raise DiskError(f"Mounting persistent disk '{cid}' at {target}: {e}") from None
        self.sync_record()
        log.info("Mounted persistent disk %s (%s) at %s", cid, path, target)
        return target

    async def unmount(self, cid: str) -> bool:
        """Unmount the disk wherever it is mounted; False if it was not mounted."""
        path = self.lookup(cid)
        point = self.where_mounted(path)
        if point is None:
            log.info("Persistent disk %s is not mounted", cid)
            return False
        try:
            await self.mounter.unmount(point)
        except DiskError as e:
            raise DiskError(f"Unmounting persistent disk '{cid}' from {point}: {e}") from None
        self.sync_record()
        log.info("Unmounted persistent disk %s from %s", cid, point)
        return True

    async def migrate(self) -> None:
        """Old disk (at store) -> new disk (at the migration target), then the new disk at store."""
        store, target = self.paths.store, self.paths.store_migration_target
        if not self.mounter.is_mount_point(store):
            raise DiskError(f"Migrating persistent disk: no disk is mounted at {store}")
        if not self.mounter.is_mount_point(target):
            raise DiskError(f"Migrating persistent disk: no new disk is mounted at {target} "
                            f"(mount_disk the new disk first)")
        log.info("Migrating persistent disk: %s -> %s", store, target)
        try:
            await self.mounter.remount(store, readonly=True)
        except DiskError as e:
            raise DiskError(f"Remounting {store} read-only: {e}") from None
        try:
            await tar_copy(store, target)
            await self.mounter.unmount(store)
        except DiskError as e:
            await self._restore_rw(store)
            raise DiskError(f"Migrating persistent disk: {e}") from None
        try:
            await self.mounter.bind(target, store)
            await self.mounter.unmount(target)
        except DiskError as e:
            raise DiskError(f"Moving the new disk from {target} to {store}: {e}") from None
        finally:
            self.sync_record()
        log.info("Migrated persistent disk: the new disk is at %s", store)

    async def _restore_rw(self, store: Path) -> None:
        if self.mounter.is_mount_point(store):
            try:
                await self.mounter.remount(store, readonly=False)
            except DiskError as e:
                log.error("Could not remount %s read-write after a failed migration: %s", store, e)

    async def remount_at_boot(self) -> None:
        """Mount the recorded disk at store again if its path is there. Never fails the boot."""
        cid = self.recorded()
        if cid is None:
            return
        try:
            path = self.lookup(cid)
        except DiskError as e:
            log.warning("Not remounting persistent disk %s: %s", cid, e)
            return
        if self.where_mounted(path) is not None:
            log.info("Persistent disk %s is still mounted", cid)
            return
        if not path.is_dir() or not self.mounter.is_mount_point(path):
            log.warning("Not remounting persistent disk %s: %s is not attached to this VM", cid, path)
            return
        if self.mounter.is_mount_point(self.paths.store):
            log.warning("Not remounting persistent disk %s: something else is mounted at %s", cid, self.paths.store)
            return
        try:
            await self.mounter.bind(path, self.paths.store)
        except DiskError as e:
            log.error("Remounting persistent disk %s failed: %s", cid, e)
            return
        log.info("Remounted persistent disk %s (%s) at %s", cid, path, self.paths.store)
