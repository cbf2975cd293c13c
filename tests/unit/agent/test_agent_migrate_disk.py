"""migrate_disk: old disk read-only, real tar copy (modes, times, links, empty dirs), new disk at store."""
import os
from pathlib import Path
from typing import Any

import pytest

from agent.disks import DiskError, same_dir

from .conftest import FakeMounter, FakeRegistry, call
from .test_agent_mount_disk import attach


def fill(root: Path) -> None:
    (root / "redis" / "empty").mkdir(parents=True)
    (root / "redis" / "dump.rdb").write_bytes(os.urandom(100_000))
    (root / "redis" / "dump.rdb").chmod(0o600)
    (root / "redis" / "run.sh").write_text("#!/bin/sh\n")
    (root / "redis" / "run.sh").chmod(0o750)
    os.utime(root / "redis" / "run.sh", (1_000_000_000, 1_000_000_000))
    os.symlink("dump.rdb", root / "redis" / "latest")
    (root / ".hidden").write_text("dot files too")


def listing(root: Path) -> dict[str, tuple[int, int, int, int, str | bytes | None]]:
    out: dict[str, tuple[int, int, int, int, str | bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            content = os.readlink(p) if os.path.islink(p) else (open(p, "rb").read() if os.path.isfile(p) else None)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), content)
    return out


async def test_migrate_copies_everything_and_moves_the_new_disk_to_store(services: Any, registry: FakeRegistry,
                                                                         mounter: FakeMounter) -> None:
    vcap = services.paths
    old, new = attach(registry, services, mounter, "old"), attach(registry, services, mounter, "new")
    await call(services, "mount_disk", ["old"])
    fill(vcap.store)
    await call(services, "mount_disk", ["new"])
    expected = listing(old)
    # the director sends both cids; like BOSH's agent the action ignores them
    assert await call(services, "migrate_disk", ["old", "new"]) == {"value": {}}
    assert listing(new) == expected
    assert listing(old) == expected                           # the old disk is left as it was
    assert same_dir(vcap.store, new) and list(mounter.mounts) == [vcap.store]
    assert vcap.managed_disk_settings.read_text() == "new"
    assert await call(services, "list_disk") == {"value": ["new"]}
    ops = [c.split()[0] + " " + c.split()[-1] for c in mounter.calls if not c.startswith("bind " + str(old))]
    assert ops[-4:] == ["remount ro", f"unmount {vcap.store}", f"bind {vcap.store}",
                        f"unmount {vcap.store_migration_target}"]


@pytest.mark.parametrize("mounted,message", [
    ([], "Migrating persistent disk: no disk is mounted at"),
    (["old"], "no new disk is mounted at"),
])
async def test_migrate_needs_both_disks_mounted(services: Any, registry: FakeRegistry, mounter: FakeMounter,
                                                mounted: list[str],
                                               message: str) -> None:
    attach(registry, services, mounter, "old")
    attach(registry, services, mounter, "new")
    for cid in mounted:
        await call(services, "mount_disk", [cid])
    calls = list(mounter.calls)
    reply = await call(services, "migrate_disk")
    assert message in reply["exception"]["message"]
    assert mounter.calls == calls


@pytest.mark.parametrize("failure", ["copy", "unmount"])
async def test_a_failed_migration_leaves_the_old_disk_writable_at_store(services: Any, registry: FakeRegistry,
                                                                        mounter: FakeMounter,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        failure: str) -> None:
    vcap = services.paths
    old = attach(registry, services, mounter, "old")
    attach(registry, services, mounter, "new")
    await call(services, "mount_disk", ["old"])
    await call(services, "mount_disk", ["new"])
    if failure == "copy":
        async def broken(src: Path, dst: Path) -> None:
            raise DiskError("copying failed: tar -x exited with 2 (No space left on device)")
        monkeypatch.setattr("agent.disks.tar_copy", broken)
    else:
        mounter.fail["unmount"] = "umount: /var/vcap/store: target is busy."
    reply = await call(services, "migrate_disk")
    assert reply["exception"]["message"].split(": ", 1)[1].startswith("Task ")
    assert "Migrating persistent disk: " in reply["exception"]["message"]
    assert mounter.mounts[vcap.store] == old and vcap.store not in mounter.readonly
    assert mounter.calls[-1] == f"remount {vcap.store} rw"
    assert vcap.managed_disk_settings.read_text() == "old"
