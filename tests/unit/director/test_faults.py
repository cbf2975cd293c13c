"""The game-day fault verbs (director/faults.py, ``/faults``) on a whole director with the fake CPI, whose VMs run
the real agent: each kind injected and undone over HTTP, what the agent then reports, the refusals (404, 409,
400), the ``fault`` events for the watch timeline, and the faults kept across a director restart."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from boshlab.httpauth import basic_auth
from boshlab.timeline import TimelineEvent
from tests.support.director_harness import Director, dummy_manifest, wait_until
from tests.unit.director.conftest import Directors


def fault_events(d: Director) -> list[TimelineEvent]:
    """The ``fault`` events the director published into its watch timeline."""
    return [e for e in d.lab.watch_hub.history() if e.get("kind") == "fault"]


def faults_seen(d: Director) -> list[tuple[str, str]]:
    return [(e["fault"]["kind"], e["fault"]["action"]) for e in fault_events(d)]


class Api:
    def __init__(self, s: aiohttp.ClientSession, d: Director) -> None:
        self.s, self.d = s, d

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.d.config.api_port}"

    async def call(self, method: str, path: str, status: int, body: Any = None) -> Any:
        async with self.s.request(method, self.base + path, json=body) as r:
            text = await r.text()
            assert r.status == status, f"{method} {path}: {r.status} {text}"
            return await r.json(content_type=None)

    async def inject(self, status: int = 201, **body: Any) -> Any:
        return await self.call("POST", "/faults", status, body)

    async def undo(self, fault_id: str, status: int = 200) -> Any:
        return await self.call("DELETE", f"/faults/{fault_id}", status)


@pytest.fixture
async def api(director: Director) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(headers=basic_auth(director.config.api_user, director.config.api_password)) as s:
        yield Api(s, director)


async def deployed(d: Director, name: str) -> str:
    await d.deploy(dummy_manifest(name, watch="100-1000"))
    row, = await d.instances(name)
    return row.id


async def job_state(d: Director, name: str) -> str | None:
    row, = await d.instances(name)
    assert row.agent_id
    try:
        state = await d.ops.agents(row.agent_id, timeout=3).call("get_state")
    except Exception:   # noqa: BLE001 - no answer is an answer here
        return None
    return str(state.get("job_state"))


async def responsive(d: Director, name: str) -> bool:
    row, = await d.instances(name)
    assert row.agent_id
    return await d.ops.agents(row.agent_id).ping(1.0)


async def test_fail_job_makes_monit_fail_it_and_undo_runs_it_again(api: Api, director: Director) -> None:
    iid = await deployed(director, "fj")
    fault = await api.inject(kind="fail-job", deployment="fj", instance="app/0")
    assert fault["kind"] == "fail-job" and fault["state"] == "active" and fault["instance_id"] == iid
    assert fault["undo"] == f"bosh-lab fault undo {fault['id']}"
    assert "dummy" in fault["message"] and "app/0" in fault["message"]
    assert fault["details"]["program"] == "/var/vcap/jobs/dummy/bin/dummy_ctl"
    assert await wait_until(lambda: job_state(director, "fj"), what="job_state") == "failing"
    insts = await api.call("GET", "/deployments/fj/instances?format=full", 200)
    assert insts[0]["job_state"] == "failing"

    again = await api.inject(409, kind="fail-job", deployment="fj", instance="app/0")
    assert fault["id"] in again["description"] and "already active" in again["description"]

    undone = await api.undo(fault["id"])
    assert undone["state"] == "undone" and "can start again" in undone["undo_message"]
    await wait_until(lambda: _is(job_state(director, "fj"), "running"), what="running again")
    assert await api.call("GET", "/faults", 200) == []
    await api.undo(fault["id"], 409)
    assert faults_seen(director) == [("fail-job", "injected"), ("fail-job", "undone")]
    ev = fault_events(director)[0]
    assert ev["instance"] == "app/0" and ev["deployment"] == "fj" and ev["src"] == "director"
    assert ev["fault"]["id"] == fault["id"] and "app/0" in ev["text"]


async def _is(value: Any, want: str) -> bool:
    return bool(await value == want)


async def test_refusals_name_what_is_wrong(api: Api, director: Director) -> None:
    await deployed(director, "ref")
    e = await api.inject(404, kind="kill-agent", deployment="nope", instance="app/0")
    assert "nope" in e["description"]
    e = await api.inject(404, kind="kill-agent", deployment="ref", instance="app/7")
    assert "app/7" in e["description"]
    e = await api.inject(404, kind="fail-job", deployment="ref", instance="app/0", job="nojob")
    assert "nojob" in e["description"] and "dummy" in e["description"]
    e = await api.inject(400, kind="explode", deployment="ref", instance="app/0")
    assert "explode" in e["description"]
    e = await api.inject(400, kind="slow-drain", deployment="ref", instance="app/0")
    assert "seconds" in e["description"]
    e = await api.inject(400, kind="kill-agent", deployment="ref")
    assert "instance" in e["description"]
    e = await api.inject(409, kind="cut-nats", deployment="ref", instance="app/0")
    assert "BOSH_LAB_NATS_AUTH_DIR" in e["description"], "the unit tests' NATS has no per-agent users"
    e = await api.undo("nosuch", 404)
    assert "nosuch" in e["description"]
    row, = await director.instances("ref")
    assert row.vm_cid
    await director.cpi.kill_vm(row.vm_cid)
    e = await api.inject(409, kind="fail-job", deployment="ref", instance="app/0")
    assert "not running" in e["description"]
    assert faults_seen(director) == []


async def test_slow_drain_makes_the_next_drain_slower_until_undone(api: Api, director: Director) -> None:
    await deployed(director, "sd")
    row, = await director.instances("sd")
    vm = await director.vm_of(row)
    drain = vm.root / "jobs" / "dummy" / "bin" / "drain"
    before = drain.read_text()
    fault = await api.inject(kind="slow-drain", deployment="sd", instance="app/0", seconds=2)
    assert fault["details"]["had_drain"] == {"dummy": True} and "next apply" in fault["message"]
    assert "bosh-lab fault slow-drain" in drain.read_text()
    started = time.monotonic()
    await director.run_task(await director.ops.change_state_task("sd", "app", "0", "restart"))
    assert time.monotonic() - started >= 2
    await api.undo(fault["id"])
    assert drain.read_text() == before and not drain.with_name("drain.fault-orig").exists()
    assert faults_seen(director) == [("slow-drain", "injected"), ("slow-drain", "undone")]


async def test_kill_agent_stops_the_agent_and_undo_starts_it(api: Api, director: Director) -> None:
    await deployed(director, "ka")
    fault = await api.inject(kind="kill-agent", deployment="ka", instance="app/0")
    assert not await responsive(director, "ka")
    row, = await director.instances("ka")
    assert row.vm_cid and (await director.cpi.vm_status(row.vm_cid)).running, "the VM runs on"
    await api.undo(fault["id"])
    await wait_until(lambda: responsive(director, "ka"), timeout=20, what="agent answers again")


async def test_delete_vm_is_found_by_cloud_check_and_undo_recreates_it(api: Api, director: Director) -> None:
    await deployed(director, "dv")
    row, = await director.instances("dv")
    fault = await api.inject(kind="delete-vm", deployment="dv", instance="app/0")
    assert row.vm_cid not in director.cpi.vms
    problems = await api.call("GET", "/deployments/dv/problems", 200)
    assert [p["type"] for p in problems] == ["missing_vm"]
    undone = await api.undo(fault["id"])
    assert "recreates" in undone["undo_message"]
    await director.run_task(int(undone["task"]))
    new, = await director.instances("dv")
    assert new.vm_cid and new.vm_cid != row.vm_cid and new.vm_cid in director.cpi.vms
    assert await api.call("GET", "/deployments/dv/problems", 200) == []


async def test_pause_blobstore_and_undo_all(api: Api, director: Director) -> None:
    await deployed(director, "pb")
    f1 = await api.inject(kind="pause-blobstore")
    assert director.cpi.services["blobstore"] is True and f1["target"] == "blobstore" and f1["deployment"] is None
    await api.inject(409, kind="pause-blobstore")
    f2 = await api.inject(kind="kill-agent", deployment="pb", instance="app/0")
    listed = await api.call("GET", "/faults", 200)
    assert [f["id"] for f in listed] == [f1["id"], f2["id"]]
    done = await api.call("DELETE", "/faults", 200)
    assert sorted(f["id"] for f in done) == sorted([f1["id"], f2["id"]]) and all(f["state"] == "undone" for f in done)
    assert director.cpi.services["blobstore"] is False
    await wait_until(lambda: responsive(director, "pb"), timeout=20, what="agent answers again")
    history = await api.call("GET", "/faults?all=true", 200)
    assert {f["id"] for f in history} == {f1["id"], f2["id"]}


async def test_faults_survive_a_director_restart(directors: Directors) -> None:
    d = await directors.make()
    await deployed(d, "rs")
    f = await d.lab.faults.inject("kill-agent", "rs", "app/0")
    d2 = await directors.restart(d)
    listed = await d2.lab.faults.listing()
    assert [x["id"] for x in listed] == [f["id"]]
    undone = await d2.lab.faults.undo(f["id"])
    assert undone["state"] == "undone"
    await wait_until(lambda: responsive(d2, "rs"), timeout=20, what="agent answers again")


async def test_an_agent_cut_off_nats_stays_cut_off_after_a_restart(directors: Directors) -> None:
    """cut-nats needs per-agent NATS users (not in the unit tests' NATS): its record is what a restarted director
    reads to keep the agent's user suspended through the start-up sync."""
    d = await directors.make()
    await d.lab.store.faults.add("cafe0001", "cut-nats", "x", "i1", "app/i1 (0)", "x/app/i1", {"agent_id": "agent-1"}, "cut")
    d2 = await directors.restart(d)
    assert d2.lab.nats_auth.suspended == {"agent-1"}
    assert [f["kind"] for f in await d2.lab.faults.listing()] == ["cut-nats"]


async def test_the_cli_injects_lists_and_undoes(director: Director, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.errors import EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_USAGE, CLIError
    from cli.main import parser, run

    await deployed(director, "cli")
    base = ["-e", f"http://127.0.0.1:{director.config.api_port}", "--user", director.config.api_user,
            "--password", director.config.api_password]

    async def cli(*argv: str) -> int:
        return await run(parser().parse_args([*base, *argv]))

    assert await cli("fault", "kill-agent", "app/0", "-d", "cli") == 0
    out = capsys.readouterr().out
    fault_id = out.split()[1].rstrip(":")
    assert "kill-agent app/0 (cli)" in out and f"bosh-lab fault undo {fault_id}" in out
    for argv, code in ((("fault", "kill-agent", "app/0", "-d", "cli"), EXIT_CONFLICT),
                       (("fault", "kill-agent", "app/9", "-d", "cli"), EXIT_NOT_FOUND),
                       (("fault", "slow-drain", "app/0", "-d", "cli"), EXIT_USAGE),
                       (("fault", "undo"), EXIT_USAGE)):
        with pytest.raises(CLIError) as e:
            await cli(*argv)
        assert e.value.code == code, (argv, e.value)
    assert await cli("faults") == 0
    assert fault_id in capsys.readouterr().out
    assert await cli("fault", "undo", "--all") == 0
    assert f"Fault {fault_id}: undone kill-agent app/0 (cli)" in capsys.readouterr().out
    assert await cli("--json", "faults") == 0
    assert capsys.readouterr().out.strip() == "[]"
    await wait_until(lambda: responsive(director, "cli"), timeout=20, what="agent answers again")


async def test_delete_vm_undone_after_a_restart_that_forgot_the_vm(directors: Directors) -> None:
    """A restarted director forgets a VM that is gone (reconcile); undo still makes the instance a VM."""
    d = await directors.make()
    await deployed(d, "dvr")
    f = await d.lab.faults.inject("delete-vm", "dvr", "app/0")
    d2 = await directors.restart(d)
    row, = await d2.instances("dvr")
    assert row.vm_cid is None
    undone = await d2.lab.faults.undo(f["id"])
    await d2.run_task(int(undone["task"]))
    row, = await d2.instances("dvr")
    assert row.vm_cid and row.vm_cid in d2.cpi.vms
    await wait_until(lambda: _is(job_state(d2, "dvr"), "running"), timeout=20, what="running")
