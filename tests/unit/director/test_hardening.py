"""Issue 8 on the director, in-process (fake CPI, real nats-server and nginx): bad requests get 4xx with a
named reason, every input has a limit, agent calls have deadlines, a NATS outage does not trigger
resurrection, the director serves its API without NATS, a VM-less instance is retried, and a release in use
by a running deploy cannot be deleted."""
from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from boshlab.httpauth import basic_auth
from director.health import NO_VM
from director.manifest import ManifestError, parse_manifest
from director.operations import Conflict
from director.tasks import Task, TooManyTasks
from tests.support.director_harness import Director, dummy_manifest, wait_until, write_release
from tests.unit.director.conftest import Directors


@pytest.fixture
async def api(director: Director) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession(headers=basic_auth(director.config.api_user, director.config.api_password)) as s:
        yield s, f"http://127.0.0.1:{director.config.api_port}"


async def test_bad_requests_get_4xx_not_500(api: tuple[aiohttp.ClientSession, str], director: Director) -> None:
    s, base = api
    task = await director.deploy(dummy_manifest("fourxx"))
    async with s.get(f"{base}/tasks/{task}/output?offset=-5") as r:
        assert r.status == 400 and "offset" in await r.text()
    async with s.put(f"{base}/resurrection", json={"enabled": True, "deployment": ""}) as r:
        assert r.status == 400 and "deployment" in await r.text()
    async with s.get(f"{base}/resurrection") as r:
        assert (await r.json())["settings"] == {}, "the global default did not change"
    bad = dummy_manifest("listnet").replace('"networks": [\n    {\n     "name": "default"\n    }\n   ]',
                                            '"networks": [{"name": ["default"]}]')
    assert '"name": ["default"]' in bad
    async with s.post(f"{base}/deployments", data=bad) as r:
        task_id = (await r.json())["id"]
    state, result = await director.wait_task(task_id)
    assert state == "error" and "network name" in result
    header = "Basic " + base64.b64encode("ädmin:ädmin".encode()).decode()
    for url in (f"{base}/deployments", f"http://127.0.0.1:{director.config.registry_port}/instances/x/settings"):
        async with aiohttp.ClientSession() as anon, anon.get(url, headers={"Authorization": header + "é"}) as r:
            assert r.status in (401, 404), r.status


async def test_a_yaml_alias_bomb_and_a_huge_network_are_refused_by_name() -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    t0 = time.monotonic()
    with pytest.raises(ManifestError, match="expands to more than"):
        parse_manifest("name: x\n" + bomb)
    assert time.monotonic() - t0 < 2
    with pytest.raises(ManifestError, match="too large"):
        parse_manifest("name: x\nreleases: [{name: r}]\nnetworks: [{name: n, type: manual, subnets: "
                       "[{range: 0.0.0.0/1}]}]\ninstance_groups: [{name: g, jobs: [{name: j}]}]\n")


async def test_release_upload_limit_and_no_leftovers(directors: Directors) -> None:
    d = await directors.make(upload=False, max_release_bytes=1000)
    tmp = Path(d.config.data_dir) / "tmp"
    async with aiohttp.ClientSession(headers=basic_auth(d.config.api_user, d.config.api_password)) as s:
        async with s.post(f"http://127.0.0.1:{d.config.api_port}/releases", data=b"x" * 5000) as r:
            assert r.status == 413 and "BOSH_LAB_MAX_RELEASE_BYTES" in await r.text()

        async def chunks() -> AsyncIterator[bytes]:   # no Content-Length: the limit is counted while streaming
            for _ in range(10):
                yield b"y" * 500
        async with s.post(f"http://127.0.0.1:{d.config.api_port}/releases", data=chunks()) as r:
            assert r.status == 413
    assert not list(tmp.glob("upload-*")), "a refused upload leaves no file"


async def test_a_drain_that_hangs_ends_at_the_deadline_and_the_agent_lives_on(directors: Directors, tmp_path: Path
                                                                             ) -> None:
    d = await directors.make(agent_drain_deadline=2.0)
    drain = "#!/bin/sh\n# v=<%= p('v') %>\nsleep 3600\necho 0\n"
    src = write_release(tmp_path, "hangs", {"hangs": {"templates": {"bin/drain": drain}, "properties": {"v": "1"}}})
    await d.upload_release(src)
    await d.deploy(dummy_manifest("hang", release="hangs", jobs=["hangs"]))
    t0 = time.monotonic()
    task = await d.ops.deploy_task(dummy_manifest("hang", release="hangs", jobs=["hangs"], properties={"v": "2"}))
    state, result = await d.wait_task(task, 30)
    assert state == "error" and "did not finish within 2 seconds (BOSH_LAB_AGENT_DRAIN_DEADLINE)" in result, result
    assert time.monotonic() - t0 < 20
    assert any('"cancel_task"' in line for line in await d.sent(task)), "the agent's drain is cancelled"
    row = (await d.instances("hang"))[0]
    assert row.agent_id and await d.ops.agents(row.agent_id).ping(5)


async def test_the_director_serves_its_api_while_nats_is_down(directors: Directors) -> None:
    d = await directors.make(upload=False, nats_url="nats://nats:nats@127.0.0.1:9")   # nothing listens there
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.config.api_port}/info") as r:
        info = await r.json()
    assert info["nats"]["connected"] is False and "127.0.0.1:9" in info["nats"]["url"]
    assert await d.ops.releases() == []


async def test_no_resurrection_while_nats_is_not_steady_then_a_vm_less_instance_is_retried(directors: Directors
                                                                                          ) -> None:
    d = await directors.make()
    await d.deploy(dummy_manifest("steady"))
    await d.ops.set_resurrection(True, "steady")
    row = (await d.instances("steady"))[0]
    health = d.lab.health
    steady = [False]
    health.nats_steady = lambda: steady[0]
    assert row.vm_cid is not None
    await d.cpi.kill_vm(row.vm_cid)
    await asyncio.sleep(d.config.agent_timeout + 2 * d.config.health_interval)
    assert health.held_back > 0
    assert not any(t.description == "scan and fix" for t in await d.lab.store.tasks.recent(20)), \
        "no resurrection while the director cannot hear the agents"
    # The VM is gone for good and the instance has none: once NATS is steady, the instance is retried.
    await d.ops.store.instances.vm_gone(row.id)
    await d.cpi.delete_vm(row.vm_cid)
    assert health.state_of((await d.instances("steady"))[0]) == NO_VM
    steady[0] = True

    async def has_vm() -> bool:
        r = (await d.instances("steady"))[0]
        return bool(r.vm_cid) and health.state_of(r) == "running"
    await wait_until(has_vm, 30, what="a VM made for the instance that had none")


async def test_delete_release_is_refused_while_a_deploy_uses_it(directors: Directors, tmp_path: Path) -> None:
    d = await directors.make()
    drain = "#!/bin/sh\n# v=<%= p('v') %>\nsleep 5\necho 0\n"
    src = write_release(tmp_path, "slow", {"slow": {"templates": {"bin/drain": drain}, "properties": {"v": "1"}}})
    await d.upload_release(src)
    await d.deploy(dummy_manifest("inuse", release="slow", jobs=["slow"]))
    task = await d.ops.deploy_task(dummy_manifest("inuse", release="slow", jobs=["slow"], properties={"v": "2"}))
    await asyncio.sleep(0.5)   # the deploy is draining (5 s)
    with pytest.raises(Conflict, match=f"in use by running task.*{task}"):
        await d.ops.delete_release_task("slow", None, False)
    await d.run_task(task, 30)
    state, result = await d.wait_task(await d.ops.delete_release_task("slow", None, False))
    assert state == "error" and "in use by deployment" in result, "still refused: the deployment uses it"


async def test_too_many_tasks_are_refused_not_queued(directors: Directors) -> None:
    d = await directors.make(upload=False, max_running_tasks=1)

    async def slow(task: Task) -> str:
        await asyncio.sleep(2)
        return "ok"
    first = await d.ops.tasks.start("slow", slow)
    with pytest.raises(TooManyTasks, match="BOSH_LAB_MAX_RUNNING_TASKS=1"):
        await d.ops.tasks.start("another", slow)
    assert await d.run_task(first) == "ok"
