"""The fake CPI itself: it is the director's CPI port, its VMs boot the real agent, its hooks behave."""
from __future__ import annotations

from pathlib import Path

import pytest

from director.cpi import CPI, DISK_MOUNT_DIR, CPIError
from tests.support.director_harness import free_port, wait_until
from tests.support.fake_cpi import KILLED_EXIT, FakeCPI


async def test_fake_cpi_is_the_cpi_port_and_its_vm_runs_the_agent(tmp_path: Path) -> None:
    cpi = FakeCPI(tmp_path, live_disk_attach=False)
    assert isinstance(cpi, CPI)
    await cpi.setup()
    try:
        disk = await cpi.create_disk(10, {"io.bosh-lab.deployment": "d"})
        assert await cpi.list_disks({"io.bosh-lab.deployment": "d"}) == [disk]
        # nothing listens there: the agent keeps asking the registry, and says so in its log
        ud = {"registry": {"endpoint": f"http://u:p@127.0.0.1:{free_port()}"}, "server": {"name": "vm"}}
        vm = await cpi.create_vm("agent-1", "vm", ud, {"io.bosh-lab.role": "instance"}, None, [disk])  # type: ignore[arg-type]
        user_data = (cpi.vms[vm.cid].root / "bosh" / "user_data.json").read_text()
        assert f'"instance_id": "{vm.cid}"' in user_data
        assert [r.role for r in await cpi.list_vms()] == ["instance"]
        assert cpi.attached(vm.cid) == [disk]
        assert (cpi.vms[vm.cid].host_path(f"{DISK_MOUNT_DIR}/{disk}")).resolve() == cpi.disk_dir(disk).resolve()

        async def complaining() -> str:
            code, out = await cpi.exec(vm.cid, ["tail", "-n", "5", "/var/vcap/bosh/log/current"])
            return out if code == 0 and "Fetching settings from the registry failed" in out else ""
        await wait_until(complaining, timeout=5, what="the agent's log in exec tail")
        with pytest.raises(CPIError):
            await cpi.exec(vm.cid, ["ls", "/"])
        with pytest.raises(CPIError):
            await cpi.attach_disk(vm.cid, disk)

        assert (await cpi.vm_status(vm.cid)).running
        await cpi.kill_vm(vm.cid)
        status = await cpi.vm_status(vm.cid)
        assert status.exists and not status.running and status.exit_code == KILLED_EXIT
        assert "Fetching settings" in status.logs
        await cpi.delete_vm(vm.cid)
        assert not await cpi.has_vm(vm.cid) and not (await cpi.vm_status(vm.cid)).exists
        assert await cpi.delete_disk(disk) and not await cpi.delete_disk(disk)
    finally:
        await cpi.shutdown()


def test_a_cpi_is_one_module_loaded_by_name() -> None:
    """A CPI kept outside the director is one module with create(settings): BOSH_LAB_CPI names it."""
    from director.cpi import CPI, CPIError, CPISettings, load
    from tests.support.fake_cpi import FakeCPI
    cpi = load("tests.support.fake_cpi", CPISettings("unused-image", lab="by-name"))
    assert isinstance(cpi, FakeCPI) and isinstance(cpi, CPI) and cpi.lab == "by-name"
    docker = load("docker", CPISettings("img", lab="l", network="n"))
    assert isinstance(docker, CPI) and not docker.live_disk_attach
    with pytest.raises(CPIError, match="unknown CPI 'swarm'"):
        load("swarm", CPISettings("img"))
