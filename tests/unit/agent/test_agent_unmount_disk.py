"""unmount_disk: BOSH's two answers, unknown disks are errors, a busy disk stays mounted."""
from typing import Any

from .conftest import FakeMounter, FakeRegistry, call
from .test_agent_mount_disk import attach


async def test_unmount_a_mounted_disk(services: Any, registry: FakeRegistry, mounter: FakeMounter) -> None:
    vol = attach(registry, services, mounter)
    await call(services, "mount_disk", ["disk-1"])
    (services.paths.store / "f").write_text("x")
    assert await call(services, "unmount_disk", ["disk-1"]) == {"value": {"message": "Unmounted partition of disk-1"}}
    assert mounter.mounts == {}
    assert not (services.paths.store / "f").exists() and (vol / "f").read_text() == "x"
    assert not services.paths.managed_disk_settings.exists()
    assert await call(services, "list_disk") == {"value": []}
    assert await call(services, "unmount_disk", ["disk-1"]) == {"value": {"message": "Partition of disk-1 is not mounted"}}


async def test_unmount_the_disk_at_the_migration_target_keeps_the_old_one(services: Any, registry: FakeRegistry,
                                                                          mounter: FakeMounter) -> None:
    old = attach(registry, services, mounter, "old")
    attach(registry, services, mounter, "new")
    await call(services, "mount_disk", ["old"])
    await call(services, "mount_disk", ["new"])
    assert await call(services, "unmount_disk", ["new"]) == {"value": {"message": "Unmounted partition of new"}}
    assert mounter.mounts == {services.paths.store: old}
    assert services.paths.managed_disk_settings.read_text() == "old"


async def test_unknown_disk_is_an_error(services: Any) -> None:
    reply = await call(services, "unmount_disk", ["nope"])
    assert "Persistent disk with volume id 'nope' could not be found in the settings" in reply["exception"]["message"]


async def test_a_busy_disk_stays_mounted(services: Any, registry: FakeRegistry, mounter: FakeMounter) -> None:
    attach(registry, services, mounter)
    await call(services, "mount_disk", ["disk-1"])
    mounter.fail["unmount"] = "umount: /var/vcap/store: target is busy."
    reply = await call(services, "unmount_disk", ["disk-1"])
    assert "Unmounting persistent disk 'disk-1' from" in reply["exception"]["message"]
    assert "target is busy" in reply["exception"]["message"]
    assert services.paths.store in mounter.mounts
    assert services.paths.managed_disk_settings.read_text() == "disk-1"
