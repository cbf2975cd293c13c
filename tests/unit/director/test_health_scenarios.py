"""cloud-check and the resurrector against a whole director whose VMs run the real agent (fake CPI)."""
from __future__ import annotations

from tests.support.director_harness import Director, dummy_manifest, wait_until


async def test_cloud_check_recreates_a_killed_vm(director: Director) -> None:
    await director.deploy(dummy_manifest(instances=1))
    [row] = await director.instances("dep")
    assert row.vm_cid is not None
    await director.cpi.kill_vm(row.vm_cid)
    status = await director.cpi.vm_status(row.vm_cid)
    assert status.exists and not status.running

    problems = await director.ops.problems("dep")
    assert [(p["id"], p["type"], p["vm_cid"]) for p in problems] == [(row.id, "unresponsive_agent", row.vm_cid)]
    assert "recreate_vm" in [r["name"] for r in problems[0]["resolutions"]]

    await director.run_task(await director.ops.resolve_task("dep", {row.id: "recreate_vm"}))
    [new] = await director.instances("dep")
    assert new.id == row.id and new.vm_cid not in (None, row.vm_cid) and new.agent_id != row.agent_id
    assert row.vm_cid not in director.cpi.vms and director.cpi.vms[new.vm_cid].running
    assert new.agent_id is not None and await director.ops.agents(new.agent_id).ping(2.0)
    assert await director.ops.problems("dep") == []


async def test_resurrection_recreates_a_killed_vm(director: Director) -> None:
    await director.deploy(dummy_manifest(instances=1))
    await director.ops.set_resurrection(True, "dep")
    [row] = await director.instances("dep")
    assert row.vm_cid is not None
    await director.cpi.kill_vm(row.vm_cid)

    async def recreated() -> bool:
        [now] = await director.instances("dep")
        return now.vm_cid not in (None, row.vm_cid) and now.vm_cid in director.cpi.vms \
            and director.cpi.vms[now.vm_cid].running and now.state == "started" and not now.dirty
    # agent_timeout 3 s (3 heartbeats of 1 s), then the scan-and-fix task recreates it
    await wait_until(recreated, timeout=15, what="the killed VM recreated by the resurrector")
    tasks = await director.ops.recent_tasks(10, None)
    fix = [t for t in tasks if t["description"] == "scan and fix"]
    assert fix, tasks
    await director.run_task(fix[0]["id"])
    [now] = await director.instances("dep")
    assert now.agent_id is not None and await director.ops.agents(now.agent_id).ping(2.0)
    assert await director.ops.problems("dep") == []
