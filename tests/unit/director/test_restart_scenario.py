"""The director stops while a deploy runs; a new director on the same data dir and CPI (VMs kept) says why the
task failed and deploys again."""
from __future__ import annotations

import time

from director.tasks import SHUTDOWN_REASON
from tests.support.director_harness import dummy_manifest, wait_until
from tests.unit.director.conftest import Directors

DRAIN = 60          # seconds the running job's drain script takes


async def test_director_restarted_mid_task(directors: Directors) -> None:
    d = await directors.make()
    # The running job drains for 60 s (drain runs the CURRENT job's script): the next deploy is surely
    # draining when the director stops, and its drain cannot end by itself while the test runs.
    await d.deploy(dummy_manifest(instances=1, properties={"dummy": {"drain_seconds": DRAIN}}))
    [row] = await d.instances("dep")
    assert row.vm_cid is not None
    slow = dummy_manifest(instances=1, properties={"dummy": {"drain_seconds": DRAIN, "message": "slow"}})
    task = await d.ops.deploy_task(slow)

    async def draining() -> bool:
        return ": drain update" in await d.output(task)
    await wait_until(draining, timeout=10, what="the deploy draining")
    drain_seen = time.monotonic()
    assert (await d.ops.task(task)).state == "processing"

    d2 = await directors.restart(d)
    assert d2.cpi is d.cpi and d2.lab is not d.lab
    failed = await d2.ops.task(task)
    assert failed.state == "error" and failed.result == SHUTDOWN_REASON, failed
    [kept] = await d2.instances("dep")
    assert kept.vm_cid == row.vm_cid and d2.cpi.vms[row.vm_cid].running, "the VM outlived the director"

    # The agent runs one long task at a time: had its drain not been cancelled, this deploy's stop would wait
    # behind it (--skip-drain: the running job's own drain is not what is looked at here).
    again = await d2.ops.deploy_task(dummy_manifest(instances=1, properties={"dummy": {"message": "after restart"}}),
                                     skip_drain=True)
    await d2.run_task(again)
    assert '"cancel_task"' in await d2.output(task), "the stopping director cancelled the agent's drain"
    # not a speed limit: an uncancelled drain would have held this deploy's stop until it ended
    assert time.monotonic() < drain_seen + DRAIN - 1, "the agent's drain of the stopped task was cancelled"
    [after] = await d2.instances("dep")
    assert after.vm_cid is not None
    vm = d2.cpi.vms[after.vm_cid]
    assert "message=after restart" in (vm.paths.job_link("dummy") / "config" / "dummy.conf").read_text()
    assert (await d2.ops.task(again)).state == "done"
