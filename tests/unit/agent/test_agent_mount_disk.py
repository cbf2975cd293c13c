"""mount_disk: re-reads the registry, binds /var/vcap/store_disks/<cid> at /var/vcap/store (or at the
migration target when a disk is there), records the cid; every error names the cid and changes nothing."""
from pathlib import Path
from typing import Any

import pytest

from agent.disks import PersistentDisks

from .conftest import FakeMounter, FakeRegistry, call, snapshot


def attach(registry: FakeRegistry, services: Any, mounter: FakeMounter, cid: str = 'disk-1',
           shape: str = 'object') -> Path:
    """What the director does: the CPI mounts the volume, the registry names it (the agent's cached
    settings do not know it yet)."""
    vol = mounter.attach(services.paths, cid)
    persistent: dict[str, Any] = registry.settings["disks"]["persistent"]   # the agent takes a bare path too
    persistent[cid] = {"path": str(vol)} if shape == "object" else str(vol)
    return vol


async def test_mount_reads_the_registry_again_and_binds_the_disk_at_store(services: Any, registry: FakeRegistry,
                                                                          mounter: FakeMounter) -> None:
    vol = attach(registry, services, mounter)
    assert "disk-1" not in services.settings.settings["disks"]["persistent"]
    fetches = registry.fetches
    assert await call(services, "mount_disk", ["disk-1"]) == {"value": {}}
    assert registry.fetches == fetches + 1
    assert "disk-1" in services.settings.settings["disks"]["persistent"]
    store = services.paths.store
    assert mounter.mounts == {store: vol}
    (store / "data.txt").write_text("kept on the disk")
    assert (vol / "data.txt").read_text() == "kept on the disk"
    assert services.paths.managed_disk_settings.read_text() == "disk-1"
    assert await call(services, "list_disk") == {"value": ["disk-1"]}


async def test_a_bare_path_as_the_disk_entry_works_too(services: Any, registry: FakeRegistry,
                                                       mounter: FakeMounter) -> None:
    attach(registry, services, mounter, shape="string")
    assert await call(services, "mount_disk", ["disk-1"]) == {"value": {}}
    assert services.paths.store in mounter.mounts


async def test_mounting_a_mounted_disk_is_a_no_op(services: Any, registry: FakeRegistry, mounter: FakeMounter) -> None:
    attach(registry, services, mounter)
    await call(services, "mount_disk", ["disk-1"])
    assert await call(services, "mount_disk", ["disk-1"]) == {"value": {}}
    assert [c for c in mounter.calls if c.startswith("bind")] == [f"bind {services.paths.base}/store_disks/disk-1 "
                                                                  f"{services.paths.store}"]


async def test_a_second_disk_goes_to_the_migration_target(services: Any, registry: FakeRegistry,
                                                          mounter: FakeMounter) -> None:
    old = attach(registry, services, mounter, "old")
    new = attach(registry, services, mounter, "new")
    await call(services, "mount_disk", ["old"])
    assert await call(services, "mount_disk", ["new"]) == {"value": {}}
    assert mounter.mounts == {services.paths.store: old, services.paths.store_migration_target: new}
    assert services.paths.managed_disk_settings.read_text() == "old"   # the disk at /var/vcap/store
    assert sorted((await call(services, "list_disk"))["value"]) == ["new", "old"]
    attach(registry, services, mounter, "third")
    reply = await call(services, "mount_disk", ["third"])
    assert "Cannot mount persistent disk 'third'" in reply["exception"]["message"]
    assert "both have a disk mounted already" in reply["exception"]["message"]


@pytest.mark.parametrize("setup,message", [
    ("unknown", "Persistent disk with volume id 'disk-1' could not be found in the settings"),
    ("no-volume-dir", "does not exist (is the disk attached to this VM?)"),
    ("not-a-mount", "is not a mounted volume (is the disk attached to this VM?)"),
    ("relative-path", "Persistent disk 'disk-1' has no absolute path in the settings"),
    ("bind-fails", "Mounting persistent disk 'disk-1' at"),
])
async def test_errors_name_the_disk_and_change_nothing(services: Any, registry: FakeRegistry, mounter: FakeMounter,
                                                       setup: str,
                                                      message: str) -> None:
    vcap = services.paths
    if setup == "no-volume-dir":
        registry.settings["disks"]["persistent"]["disk-1"] = {"path": str(vcap.base / "store_disks" / "disk-1")}
    elif setup == "not-a-mount":
        (vcap.base / "store_disks" / "disk-1").mkdir(parents=True)
        registry.settings["disks"]["persistent"]["disk-1"] = {"path": str(vcap.base / "store_disks" / "disk-1")}
    elif setup == "relative-path":
        registry.settings["disks"]["persistent"]["disk-1"] = {"path": "store_disks/disk-1"}
    elif setup == "bind-fails":
        attach(registry, services, mounter)
        mounter.fail["bind"] = "mount: permission denied (are you root? cap SYS_ADMIN?)"
    before = snapshot(vcap.base)
    reply = await call(services, "mount_disk", ["disk-1"])
    assert message in reply["exception"]["message"]
    assert reply["exception"]["message"].startswith("Action Failed get_task: Task ")
    assert mounter.mounts == {}
    assert not vcap.managed_disk_settings.exists()
    after = snapshot(vcap.base)
    assert {k: v for k, v in after.items() if k != "bosh/settings.json"} == \
        {k: v for k, v in before.items() if k != "bosh/settings.json"}


async def test_registry_down_uses_the_settings_it_has_and_says_so(services: Any, registry: FakeRegistry,
                                                                  mounter: FakeMounter, agent_log: list[str]) -> None:
    vol = mounter.attach(services.paths, "known")
    services.settings.settings["disks"]["persistent"]["known"] = {"path": str(vol)}
    registry.error = "registry answered 500"
    assert await call(services, "mount_disk", ["known"]) == {"value": {}}
    assert any("re-reading the settings failed" in line for line in agent_log)
    reply = await call(services, "mount_disk", ["other"])
    assert "could not be found in the settings (the settings could not be re-read: " in reply["exception"]["message"]


async def test_empty_cid(services: Any) -> None:
    assert "disk cid must not be empty" in (await call(services, "mount_disk", [" "]))["exception"]["message"]


async def test_boot_remounts_the_recorded_disk(services: Any, registry: FakeRegistry, mounter: FakeMounter) -> None:
    vol = attach(registry, services, mounter)
    await call(services, "mount_disk", ["disk-1"])
    await mounter.unmount(services.paths.store)          # a restarted container loses its bind mounts
    disks = PersistentDisks(services.paths, services.settings, mounter)
    await disks.remount_at_boot()
    assert mounter.mounts == {services.paths.store: vol}
    await disks.remount_at_boot()                          # an agent restart: still mounted, nothing to do
    assert len([c for c in mounter.calls if c.startswith("bind")]) == 2


@pytest.mark.parametrize("case", ["no-record", "not-attached", "not-in-settings"])
async def test_boot_leaves_store_alone_without_an_attached_recorded_disk(services: Any, registry: FakeRegistry,
                                                                         mounter: FakeMounter, case: str) -> None:
    vcap = services.paths
    if case != "no-record":
        vcap.managed_disk_settings.write_text("disk-1")
    if case == "not-attached":
        services.settings.settings["disks"]["persistent"]["disk-1"] = {"path": str(vcap.base / "store_disks/disk-1")}
    await PersistentDisks(vcap, services.settings, mounter).remount_at_boot()
    assert mounter.calls == []
