"""The director's HTTP API over a real socket, as the CLI (cli/commands.py) uses it: a whole director in-process
(fake CPI whose VMs run the real agent, real nats-server, real nginx DAV), called with aiohttp and basic auth.
Each test checks the JSON shapes the CLI reads and what the call changed (instances, VMs, disks, blobs)."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from boshlab.httpauth import basic_auth
from tests.support.dav_server import DavServer
from tests.support.director_harness import Director, dummy_manifest, wait_until


@dataclass
class Api:
    s: aiohttp.ClientSession
    base: str
    d: Director

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.s.get(self.base + path) as r:
            assert r.status == status, f"GET {path}: {r.status} {await r.text()}"
            return await r.json()

    async def send(self, method: str, path: str, status: int = 202, **kw: Any) -> Any:
        async with self.s.request(method, self.base + path, **kw) as r:
            assert r.status == status, f"{method} {path}: {r.status} {await r.text()}"
            return await r.json()

    async def task(self, method: str, path: str, **kw: Any) -> tuple[int, str, str]:
        """Start a task over HTTP, wait for it: (id, state, result)."""
        body = await self.send(method, path, **kw)
        assert body["state"] == "processing" and body["location"] == f"/tasks/{body['id']}"
        state, result = await self.d.wait_task(int(body["id"]))
        return int(body["id"]), state, result


@pytest.fixture
async def api(director: Director) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(headers=basic_auth(director.config.api_user, director.config.api_password)) as s:
        yield Api(s, f"http://127.0.0.1:{director.config.api_port}", director)


async def test_deployment_queries_have_the_shapes_the_cli_reads(api: Api, director: Director) -> None:
    _, state, result = await api.task("POST", "/deployments", data=dummy_manifest("shapes", instances=2))
    assert state == "done", result
    deps = await api.get("/deployments")
    dep, = deps
    assert dep["name"] == "shapes" and dep["instances"] == 2 and dep["vms"] == 2
    assert dep["releases"] == [{"name": "dummy", "version": "1"}], "'latest' is shown as the version deployed"
    assert dep["locked_by_task"] is None and dep["resurrection"] is False and isinstance(dep["updated_at"], int)

    one = await api.get("/deployments/shapes")
    assert one["name"] == "shapes" and one["releases"] == {"dummy": "1"} and '"shapes"' in one["manifest"]

    insts = await api.get("/deployments/shapes/instances")
    assert sorted(i["index"] for i in insts) == [0, 1]
    rows = {r.id: r for r in await director.instances("shapes")}
    for i in insts:
        row = rows[i["id"]]
        assert i["instance"] == f"app/{i['id']}" and i["group"] == "app" and i["state"] == "started"
        assert i["vm_cid"] == row.vm_cid and i["agent_id"] == row.agent_id and i["ips"] == ["127.0.0.1"]
        assert i["vm_cid"] in director.cpi.vms and "processes" not in i
        assert row.apply_spec is not None and i["configuration_hash"] == row.apply_spec["configuration_hash"]

    full = await api.get("/deployments/shapes/instances?format=full")
    for i in full:
        assert i["job_state"] == "running"
        assert [p["name"] for p in i["processes"]] == ["dummy"] and i["processes"][0]["state"] == "running"

    vms = await api.get("/deployments/shapes/vms")
    assert sorted(v["vm_cid"] for v in vms) == sorted(i["vm_cid"] for i in insts)
    for v in vms:
        assert v["vm_type"] == "default" and v["active"] is True and v["ips"] == ["127.0.0.1"]
        assert {"instance", "group", "index", "id", "process_state", "vm_name", "agent_id", "vm_created_at",
                "vitals"} <= set(v)

    rels = await api.get("/releases")
    assert rels == [{"name": "dummy", "release_versions": [
        {"version": "1", "uploaded_at": rels[0]["release_versions"][0]["uploaded_at"], "currently_deployed": True,
         "deployments": ["shapes"]}]}]

    info = await api.get("/info")
    assert info["name"] == "test-director" and info["user"] == director.config.api_user
    assert info["lab"] == "fake-lab" and info["nats"]["connected"] is True
    assert info["features"] == {"workshop": False} and "password" not in json.dumps(info)
    assert info["health"]["agent_timeout"] == director.config.agent_timeout

    for path in ("/deployments/nope", "/deployments/nope/instances", "/deployments/nope/vms",
                 "/deployments/nope/problems", "/tasks/999999", "/tasks/999999/output"):
        err = await api.get(path, status=404)
        assert err["code"] == 404 and ("nope" in err["description"] or "999999" in err["description"])
    err = await api.send("DELETE", "/releases/nope", status=404)
    assert err["description"] == "Release 'nope' doesn't exist"
    err = await api.send("DELETE", "/deployments/nope", status=404)
    assert err["description"] == "Deployment 'nope' doesn't exist"


async def test_tasks_their_output_and_cancelling_a_finished_one(api: Api, director: Director) -> None:
    task_id, state, _ = await api.task("POST", "/deployments", data=dummy_manifest("tasked"))
    assert state == "done"
    t = await api.get(f"/tasks/{task_id}")
    assert t["id"] == task_id and t["state"] == "done" and t["deployment"] == "tasked"
    assert t["description"] == "create deployment" and t["ended_at"] >= t["started_at"] == t["timestamp"]
    listed = await api.get("/tasks?limit=50")
    assert [x["id"] for x in listed][0] == task_id, "newest first"
    assert {x["description"] for x in listed} >= {"create release", "create deployment"}
    assert [x["id"] for x in await api.get("/tasks?limit=1")] == [task_id]
    assert all(x["state"] == "done" for x in await api.get("/tasks?state=done,error"))
    assert await api.get("/tasks?state=processing") == []

    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=event") as r:
        assert r.status == 200 and r.headers["X-Task-State"] == "done"
        events = (await r.read()).decode()
        assert int(r.headers["X-Next-Offset"]) == len(events.encode())
    parsed = [json.loads(line) for line in events.splitlines()]
    assert any(e.get("stage") == "Updating instance" for e in parsed), {e.get("stage") for e in parsed}
    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=event&offset=10") as r:
        assert (await r.read()).decode() == events[10:] and r.headers["X-Next-Offset"] == str(len(events.encode()))
    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=event&offset={len(events) + 100}") as r:
        assert await r.read() == b""
    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=debug") as r:
        debug = await r.text()
    assert "SENT: agent." in debug, "the debug log has every message sent"
    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=result") as r:
        assert (await r.text()).strip() == t["result"]
    async with api.s.get(f"{api.base}/tasks/{task_id}/output?type=secrets") as r:
        assert r.status == 400 and "unknown task output type" in (await r.json())["description"]

    err = await api.send("DELETE", f"/tasks/{task_id}", status=409)
    assert err["description"] == f"Task {task_id} is not running (state done)"
    err = await api.send("DELETE", f"/task/{task_id}", status=409)   # BOSH's route
    assert "is not running" in err["description"]
    assert (await api.send("DELETE", "/tasks/424242", status=404))["description"] == "Task 424242 doesn't exist"


async def test_stop_start_and_recreate_by_index(api: Api, director: Director) -> None:
    assert (await api.task("POST", "/deployments", data=dummy_manifest("states", instances=2)))[1] == "done"
    _, state, result = await api.task("PUT", "/deployments/states/jobs/app?state=stopped")
    assert state == "done" and result == "stop 2 instance(s) of states", result
    insts = await api.get("/deployments/states/instances?format=full")
    assert [i["state"] for i in insts] == ["stopped", "stopped"]
    assert all(i["job_state"] != "running" for i in insts)
    _, state, _ = await api.task("PUT", "/deployments/states/jobs/app?state=started")
    assert state == "done"
    assert [i["state"] for i in await api.get("/deployments/states/instances")] == ["started", "started"]

    before = {i["index"]: i["vm_cid"] for i in await api.get("/deployments/states/instances")}
    _, state, result = await api.task("PUT", "/deployments/states/jobs/app/1?state=recreate")
    assert state == "done" and result == "recreate 1 instance(s) of states"
    after = {i["index"]: i["vm_cid"] for i in await api.get("/deployments/states/instances")}
    assert after[0] == before[0], "index 0 untouched"
    assert after[1] != before[1] and before[1] not in director.cpi.vms and after[1] in director.cpi.vms

    err = await api.send("PUT", "/deployments/states/jobs/app?state=dance", status=400)
    assert "state must be" in err["description"]
    err = await api.send("PUT", "/deployments/states/jobs/web?state=stopped", status=404)
    assert "no instance group 'web'" in err["description"]
    err = await api.send("PUT", "/deployments/states/jobs/app/7?state=stopped", status=404)
    assert "no instance 'app/7'" in err["description"]


async def test_resurrection_settings_and_cloud_check_of_a_vanished_vm(api: Api, director: Director) -> None:
    assert (await api.task("POST", "/deployments", data=dummy_manifest("cc")))[1] == "done"
    assert await api.get("/resurrection") == {"default": False, "agent_timeout": director.config.agent_timeout,
                                              "settings": {}}
    put = await api.send("PUT", "/resurrection", status=200, json={"enabled": False, "deployment": "cc"})
    assert put == {"deployment": "cc", "enabled": False}
    assert (await api.get("/resurrection"))["settings"] == {"cc": False}
    put = await api.send("PUT", "/resurrection", status=200, json={"resurrection_paused": True})
    assert put == {"deployment": "*", "enabled": False}
    assert (await api.send("PUT", "/resurrection", status=404, json={"enabled": True, "deployment": "nope"}))["code"] == 404
    assert (await api.send("PUT", "/resurrection", status=400, json={"enabled": "yes"}))["code"] == 400
    assert (await api.get("/deployments"))[0]["resurrection"] is False

    assert await api.get("/deployments/cc/problems") == []
    inst, = await api.get("/deployments/cc/instances")
    await director.cpi.delete_vm(inst["vm_cid"])        # the VM vanishes behind the director's back
    problem, = await api.get("/deployments/cc/problems")
    assert problem["id"] == inst["id"] and problem["type"] == "missing_vm" and problem["vm_cid"] == inst["vm_cid"]
    assert [r["name"] for r in problem["resolutions"]] == ["ignore", "recreate_vm", "delete_vm_reference"]
    assert all(r["plan"] for r in problem["resolutions"])

    err = await api.send("PUT", "/deployments/cc/problems", status=400, json={"resolutions": ["recreate_vm"]})
    assert "resolutions" in err["description"]
    _, state, result = await api.task("PUT", "/deployments/cc/problems",
                                      json={"resolutions": {problem["id"]: "recreate_vm"}})
    assert state == "done", result
    fixed, = await api.get("/deployments/cc/instances")
    assert fixed["vm_cid"] not in (None, inst["vm_cid"]) and fixed["vm_cid"] in director.cpi.vms
    assert await api.get("/deployments/cc/problems") == []


async def test_disks_attached_and_orphaned(api: Api, director: Director) -> None:
    assert (await api.task("POST", "/deployments", data=dummy_manifest("disky", persistent_disk=64)))[1] == "done"
    disk, = await api.get("/disks")
    inst, = await api.get("/deployments/disky/instances")
    assert disk["deployment"] == "disky" and disk["instance"] == inst["instance"] and disk["size"] == 64
    assert disk["orphaned"] is False and disk["orphaned_at"] is None and disk["cid"] in director.cpi.disks
    assert await api.get("/disks?orphaned=true") == []
    err = await api.send("DELETE", f"/disks/{disk['cid']}", status=409)
    assert err["description"] == f"Disk '{disk['cid']}' is attached: only orphaned disks can be deleted"
    assert (await api.send("DELETE", "/disks/no-such-disk", status=404))["description"] == "Disk 'no-such-disk' doesn't exist"

    assert (await api.task("POST", "/deployments", data=dummy_manifest("disky", persistent_disk=0)))[1] == "done"
    orphan, = await api.get("/disks?orphaned=true")
    assert orphan["cid"] == disk["cid"] and orphan["orphaned"] is True and orphan["orphaned_at"]
    assert await api.get("/disks?orphaned=false") == []
    _, state, result = await api.task("DELETE", f"/disks/{disk['cid']}")
    assert state == "done", result
    assert await api.get("/disks") == [] and disk["cid"] not in director.cpi.disks


async def test_logs_bundle_agent_messages_and_ssh(api: Api, director: Director) -> None:
    assert (await api.task("POST", "/deployments", data=dummy_manifest("logs")))[1] == "done"
    inst, = await api.get("/deployments/logs/instances")
    vm = director.cpi.vms[inst["vm_cid"]]
    job_log = vm.root / "sys" / "log" / "dummy" / "dummy.stdout.log"
    job_log.parent.mkdir(parents=True, exist_ok=True)
    job_log.write_text("a line the job wrote\n")

    _, state, result = await api.task("POST", "/deployments/logs/instances/app/0/logs?type=job")
    assert state == "done", result
    bundle = json.loads(result)
    assert set(bundle) == {"blobstore_id", "sha1"}
    async with api.s.get(f"{api.base}/resources/{bundle['blobstore_id']}") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
        data = await r.read()
    assert hashlib.sha1(data).hexdigest() == bundle["sha1"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("dummy.stdout.log"))
        f = tar.extractfile(member)
        assert f is not None and f.read() == b"a line the job wrote\n"
    err = await api.send("POST", "/deployments/logs/instances/app/0/logs?type=core", status=400)
    assert "type must be one of job, agent, system" in err["description"]
    assert (await api.get("/resources/no-such-blob", status=404))["description"] == "Resource 'no-such-blob' doesn't exist"

    ping = await api.send("POST", f"/deployments/logs/instances/app/{inst['id']}/agent_message", status=200,
                          json={"method": "ping", "arguments": []})
    assert ping == {"value": "pong"}
    unknown = await api.send("POST", "/deployments/logs/instances/app/0/agent_message", status=200,
                             json={"method": "levitate", "arguments": []})
    assert set(unknown) == {"exception"} and "levitate" in unknown["exception"]["message"]
    err = await api.send("POST", "/deployments/logs/instances/app/0/agent_message", status=400,
                         json={"method": "ping", "arguments": "not a list"})
    assert "body must be" in err["description"]

    for bad in ({"command": "rm -rf"}, ["setup"]):
        err = await api.send("POST", "/deployments/logs/instances/app/0/ssh", status=400, json=bad)
        assert err["code"] == 400 and '"command": "setup"' in err["description"]
    async with api.s.post(f"{api.base}/deployments/logs/instances/app/0/ssh", data=b"{not json") as r:
        assert r.status == 400
    err = await api.send("POST", "/deployments/logs/instances/app/9/ssh", status=404, json={"command": "setup"})
    assert "no instance 'app/9'" in err["description"]


async def test_following_logs_names_why_it_cannot(api: Api, director: Director) -> None:
    """``logs --follow`` runs bash in the VM, which the fake CPI refuses (only tail): a clean 502 naming the
    instance and the CPI's reason, before any output; a VM that vanished is a 409 pointing at cloud-check."""
    assert (await api.task("POST", "/deployments", data=dummy_manifest("follow")))[1] == "done"
    inst, = await api.get("/deployments/follow/instances")
    async with api.s.get(f"{api.base}/deployments/follow/instances/app/0/logs/follow") as r:
        assert r.status == 502
        err = await r.json()
    assert err["description"].startswith(f"app/{inst['id']} (0): ") and "the fake CPI runs only tail" in err["description"]
    await director.cpi.delete_vm(inst["vm_cid"])
    async with api.s.get(f"{api.base}/deployments/follow/instances/app/0/logs/follow") as r:
        assert r.status == 409
        err = await r.json()
    assert "is gone (bosh-lab cloud-check -d follow)" in err["description"]


async def test_delete_deployment_then_its_release(api: Api, director: Director, dav_server: DavServer) -> None:
    assert (await api.task("POST", "/deployments", data=dummy_manifest("doomed", instances=2)))[1] == "done"
    store = director.lab.store
    blobs = [p.blobstore_id for p in await store.releases.packages_of("dummy", "1")]
    blobs += [j.blobstore_id for j in await store.releases.jobs_of("dummy", "1")]
    compiled = await store.compiled.blobs_of_fingerprint((await store.releases.packages_of("dummy", "1"))[0].fingerprint)
    assert compiled, "the deploy compiled dummy-pkg"
    blobs += compiled

    def stored(blob: str) -> bool:
        return (dav_server.store / hashlib.sha1(blob.encode()).hexdigest()[:2] / blob).is_file()
    assert blobs and all(stored(b) for b in blobs)

    _, state, result = await api.task("DELETE", "/releases/dummy")
    assert state == "error" and "in use by deployment(s) doomed" in result
    assert (await api.get("/releases"))[0]["name"] == "dummy" and all(stored(b) for b in blobs)

    vm_cids = [i["vm_cid"] for i in await api.get("/deployments/doomed/instances")]
    _, state, result = await api.task("DELETE", "/deployments/doomed")
    assert state == "done" and result == "/deployments/doomed deleted"
    assert await api.get("/deployments") == []
    await api.get("/deployments/doomed/instances", status=404)
    assert await director.instances("doomed") == []
    assert not any(c in director.cpi.vms for c in vm_cids)
    assert [v for v in await director.cpi.list_vms() if v.metadata.get("io.bosh-lab.deployment") == "doomed"] == []

    _, state, result = await api.task("DELETE", "/releases/dummy")
    assert state == "done" and result == "Deleted release 'dummy' (1 version(s))"
    assert await api.get("/releases") == []
    await wait_until(lambda: not any(stored(b) for b in blobs), timeout=5, what="the release's blobs are deleted")
