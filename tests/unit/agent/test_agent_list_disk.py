"""list_disk: only disks really mounted (device+inode of the mount point), sync with protocol < 3."""
from typing import Any

from .conftest import FakeMounter, FakeRegistry, call
from .test_agent_mount_disk import attach


async def test_nothing_mounted(services: Any) -> None:
    assert await call(services, "list_disk") == {"value": []}
    assert await call(services, "list_disk", protocol=2) == {"value": []}


async def test_settings_and_record_alone_do_not_make_a_disk_mounted(services: Any, registry: FakeRegistry,
                                                                    mounter: FakeMounter) -> None:
    vol = attach(registry, services, mounter)
    services.settings.settings["disks"]["persistent"]["disk-1"] = {"path": str(vol)}
    services.paths.managed_disk_settings.write_text("disk-1")
    assert await call(services, "list_disk") == {"value": []}


async def test_mounted_disk_is_listed_sync_and_async(services: Any, registry: FakeRegistry,
                                                     mounter: FakeMounter) -> None:
    attach(registry, services, mounter)
    attach(registry, services, mounter, "other")          # attached, never mounted
    await call(services, "mount_disk", ["disk-1"])
    assert await call(services, "list_disk") == {"value": ["disk-1"]}
    assert await call(services, "list_disk", protocol=2) == {"value": ["disk-1"]}
