"""Persistent disks 0 -> 10 -> 20 -> 0 MB against a whole director whose VMs run the real agent (fake CPI):
data written to /var/vcap/store survives the resize (migrate_disk), the disk is orphaned at 0. Once with a CPI
that attaches disks only to new VMs (Docker's way: the VM is recreated) and once with live attach."""
from __future__ import annotations

import pytest

from tests.support.director_harness import Director, dummy_manifest
from tests.unit.director.conftest import Directors


async def disk_of(d: Director) -> tuple[str, str | None]:
    """(VM cid, the instance's attached disk cid or None)."""
    [row] = await d.instances("dep")
    assert row.vm_cid is not None
    current = await d.lab.store.disks.current(row.id)
    return row.vm_cid, current.cid if current is not None else None


@pytest.mark.parametrize("live", [False, True], ids=["recreate", "live-attach"])
async def test_disk_attach_resize_orphan(directors: Directors, live: bool) -> None:
    d = await directors.make(live_disk_attach=live)
    cpi = d.cpi
    await d.deploy(dummy_manifest(persistent_disk=0))
    vm0, disk0 = await disk_of(d)
    assert disk0 is None

    await d.deploy(dummy_manifest(persistent_disk=10))
    vm1, disk1 = await disk_of(d)
    assert disk1 is not None and cpi.disk_sizes[disk1] == 10
    assert (vm1 == vm0) is live, "live attach keeps the VM; otherwise the VM is recreated with the disk"
    assert any(c.startswith(f"attach_disk {vm0} {disk1}") for c in cpi.calls) is live
    store = cpi.vms[vm1].paths.store
    assert store.resolve() == cpi.disk_dir(disk1).resolve(), "the disk is mounted at /var/vcap/store"
    (store / "data").mkdir()
    (store / "data" / "kept.txt").write_text("survives the resize\n")

    await d.deploy(dummy_manifest(persistent_disk=20))
    vm2, disk2 = await disk_of(d)
    assert disk2 is not None and disk2 != disk1 and cpi.disk_sizes[disk2] == 20
    assert (vm2 == vm1) is live
    assert not await cpi.has_disk(disk1), "the old disk is deleted after the migration"
    store = cpi.vms[vm2].paths.store
    assert store.resolve() == cpi.disk_dir(disk2).resolve()
    assert (store / "data" / "kept.txt").read_text() == "survives the resize\n"
    assert (cpi.disk_dir(disk2) / "data" / "kept.txt").is_file()
    assert cpi.attached(vm2) == [disk2]

    await d.deploy(dummy_manifest(persistent_disk=0))
    vm3, disk3 = await disk_of(d)
    assert disk3 is None and (vm3 == vm2) is live
    orphaned = await d.ops.disks(orphaned=True)
    assert [(o["cid"], o["size"], o["orphaned"]) for o in orphaned] == [(disk2, 20, True)], orphaned
    assert await cpi.has_disk(disk2) and (cpi.disk_dir(disk2) / "data" / "kept.txt").is_file()
    assert cpi.attached(vm3) == []
    assert not (cpi.vms[vm3].paths.store / "data").exists(), "nothing is mounted at /var/vcap/store any more"
