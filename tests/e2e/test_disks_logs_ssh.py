"""Issue 3, director side: persistent disks (create, recreate, resize by migration, orphan), fetch_logs, ssh,
dynamic drain (``drain status`` rounds), cancel during drain, and bad disk/logs/ssh messages through NATS.

Deployments of their own: ``redis-disk`` (the workshop's redis release, already compiled by workshop mode,
with ``persistent_disk: 100``) and ``drainy`` (the light dummy release renamed, with a dynamic drain script)."""
from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from .conftest import ROOT, Lab, run
from .deployments_helpers import FAST_UPDATE, cli, instances, post_deploy, sent, wait_for

PASSWORD = "r3d!s"


def redis_manifest(disk: int) -> str:
    doc = yaml.safe_load((ROOT / "workshop" / "manifests" / "redis-solo.yml").read_text())
    doc["name"] = "redis-disk"
    doc["update"] = {**doc["update"], "canary_watch_time": "500-30000", "update_watch_time": "500-30000"}
    doc["instance_groups"][0]["persistent_disk"] = disk
    return yaml.safe_dump(doc, sort_keys=False)


def redis_cli(lab: Lab, *cmd: str) -> str:
    cid = instances(lab, "redis-disk")[0]["vm_cid"]
    return lab.vm_exec(cid, "/var/vcap/packages/redis/bin/redis-cli", "-a", PASSWORD, "--no-auth-warning", *cmd).strip()


def wait_redis(lab: Lab) -> None:
    wait_for("redis to answer", lambda: redis_cli_ok(lab), 30, 0.5)


def redis_cli_ok(lab: Lab) -> bool:
    try:
        return redis_cli(lab, "PING") == "PONG"
    except AssertionError:
        return False


def disks(lab: Lab, orphaned: bool = False) -> list[dict[str, Any]]:
    return lab.get("/disks" + ("?orphaned=true" if orphaned else ""))  # type: ignore[no-any-return]


def volumes(lab: Lab) -> set[str]:
    return set(run(["docker", "volume", "ls", "-q", "--filter", f"label=io.bosh-lab.lab={lab.project}"]).stdout.split())


@pytest.fixture(scope="module")
def redis_disk(lab: Lab) -> Iterator[str]:
    t = lab.deploy(redis_manifest(100))
    assert t["state"] == "done", t
    yield "redis-disk"
    lab.request("DELETE", "/deployments/redis-disk?force=true")
    wait_for("redis-disk deleted", lambda: "redis-disk" not in [d["name"] for d in lab.get("/deployments")], 120, 1)
    for d in disks(lab, orphaned=True):
        if d["deployment"] == "redis-disk":
            status, body, _ = lab.request("DELETE", f"/disks/{d['cid']}")
            assert status == 202, body
            lab.wait_task(json.loads(body)["id"])
    assert not [v for v in volumes(lab) if "-disk-" in v], "disks left behind"


def test_disk_is_created_attached_mounted_and_checked(lab: Lab, redis_disk: str) -> None:
    inst = instances(lab, redis_disk)[0]
    [disk] = [d for d in disks(lab) if d["deployment"] == redis_disk]
    assert disk["size"] == 100 and not disk["orphaned"] and disk["cid"] in volumes(lab)
    mount = lab.vm_exec(inst["vm_cid"], "findmnt", "-n", "-o", "SOURCE", "/var/vcap/store")
    assert disk["cid"] in mount, mount
    deploy = next(t for t in lab.get("/tasks?limit=50") if t["deployment"] == redis_disk and t["description"] == "create deployment")
    methods = [(m, a) for _, m, a in sent(lab, deploy["id"]) if m not in ("get_task", "ping", "get_state")]
    names = [m for m, _ in methods]
    assert names.index("mount_disk") < names.index("list_disk") < names.index("apply"), names
    assert ("mount_disk", [disk["cid"]]) in methods


def test_logs_tarball_has_redis_log(lab: Lab, redis_disk: str, tmp_path: Path) -> None:
    p = cli(lab, "logs", "-d", redis_disk, "redis/0", "--dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip())
    assert p.stdout.strip().count("\n") == 0 and path.is_file() and path.parent == tmp_path, p.stdout
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert any(n.lstrip("./").startswith("redis/") and n.endswith(".log") for n in names), names
    p = cli(lab, "logs", "-d", redis_disk, "redis/0", "--agent", "--dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    with tarfile.open(p.stdout.strip()) as tar:
        assert any(n.lstrip("./") == "current" for n in tar.getnames())


def test_ssh_runs_a_command_and_cleans_up(lab: Lab, redis_disk: str) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (tests/run installs openssh-client)")
    p = cli(lab, "ssh", "-d", redis_disk, "redis/0", "-c", "cat /var/vcap/jobs/redis/config/redis.conf")
    assert p.returncode == 0, p.stderr
    assert "port 6379" in p.stdout, p.stdout
    cid = instances(lab, redis_disk)[0]["vm_cid"]
    assert lab.vm_exec(cid, "ls", "/var/vcap/bosh_ssh").strip() == "", "ssh cleanup removed the user"
    log = lab.agent_log(cid)
    assert "ssh setup: user bosh_" in log and "ssh cleanup: deleted user bosh_" in log


async def test_bad_disk_logs_ssh_messages_get_exceptions(lab: Lab, redis_disk: str) -> None:
    agent_id = instances(lab, redis_disk)[0]["agent_id"]
    nc = await nats.connect(lab.nats_url())
    try:
        async def ask(method: str, *args: Any) -> Any:
            inbox = f"director.lab-test.{uuid.uuid4()}"   # agents may only reply under director.>
            sub = await nc.subscribe(inbox)
            req = {"protocol": 3, "method": method, "arguments": list(args), "reply_to": inbox}
            await nc.publish(f"agent.{agent_id}", json.dumps(req).encode())
            reply = json.loads((await sub.next_msg(timeout=10)).data)
            await sub.unsubscribe()
            task = (reply.get("value") or {}).get("agent_task_id") if isinstance(reply.get("value"), dict) else None
            while task and reply.get("value", {}).get("state") == "running":
                await asyncio.sleep(0.1)
                reply = await ask("get_task", task)
            return reply

        def error(reply: Any) -> str:
            assert "exception" in reply, reply
            return str(reply["exception"]["message"])
        assert "expected 1, got 0" in error(await ask("mount_disk"))
        assert "string" in error(await ask("mount_disk", 42)).lower()
        assert "no-such-disk" in error(await ask("unmount_disk", "no-such-disk"))
        assert "bogus" in error(await ask("fetch_logs", "bogus", None))
        assert ".." in error(await ask("fetch_logs", "job", ["../../etc/*"]))
        assert "no user" in error(await ask("ssh", "setup", {}))
        assert "public_key" in error(await ask("ssh", "setup", {"user": "bosh_x", "public_key": "nope"}))
        assert "Unknown command" in error(await ask("ssh", "explode", {}))
        assert (await ask("ping")) == {"value": "pong"}
    finally:
        await nc.close()


def test_data_survives_recreate_resize_and_disk_is_orphaned(lab: Lab, redis_disk: str) -> None:
    assert redis_cli(lab, "SET", "before-recreate", "1") == "OK" and redis_cli(lab, "SAVE") == "OK"
    [old] = [d["cid"] for d in disks(lab) if d["deployment"] == redis_disk]
    old_vm = instances(lab, redis_disk)[0]["vm_cid"]
    p = cli(lab, "recreate", "-d", redis_disk, "redis/0")
    assert p.returncode == 0, p.stderr
    assert instances(lab, redis_disk)[0]["vm_cid"] != old_vm
    wait_redis(lab)
    assert redis_cli(lab, "GET", "before-recreate") == "1"

    assert redis_cli(lab, "SET", "before-resize", "2") == "OK" and redis_cli(lab, "SAVE") == "OK"
    task_id = post_deploy(lab, redis_manifest(200))
    t = lab.wait_task(task_id)
    assert t["state"] == "done", t
    [new] = [d for d in disks(lab) if d["deployment"] == redis_disk]
    assert new["size"] == 200 and new["cid"] != old
    assert old not in volumes(lab), "the old disk is deleted after the migration"
    msgs = [(m, a) for _, m, a in sent(lab, task_id) if m not in ("get_task", "ping", "get_state")]
    assert msgs[0] == ("drain", ["shutdown"]), msgs   # the disk changes: shutdown (§4.3)
    seq = [m for m in msgs if m[0] in ("mount_disk", "migrate_disk", "unmount_disk")]
    assert seq == [("mount_disk", [old]), ("mount_disk", [new["cid"]]), ("migrate_disk", [old, new["cid"]]),
                   ("unmount_disk", [old]), ("mount_disk", [new["cid"]])], seq
    wait_redis(lab)
    assert redis_cli(lab, "GET", "before-recreate") == "1" and redis_cli(lab, "GET", "before-resize") == "2"

    t = lab.deploy(redis_manifest(0))
    assert t["state"] == "done", t
    orphans = [d for d in disks(lab, orphaned=True) if d["deployment"] == redis_disk]
    assert [d["cid"] for d in orphans] == [new["cid"]] and new["cid"] in volumes(lab)
    cid = instances(lab, redis_disk)[0]["vm_cid"]
    assert run(["docker", "exec", cid, "findmnt", "/var/vcap/store"], check=False).returncode != 0
    p = cli(lab, "disks", "--orphaned", "--json")
    assert [d["cid"] for d in json.loads(p.stdout) if d["deployment"] == redis_disk] == [new["cid"]]
    p = cli(lab, "delete-disk", new["cid"])
    assert p.returncode == 0, p.stderr
    assert new["cid"] not in volumes(lab) and not [d for d in disks(lab) if d["deployment"] == redis_disk]


# --- drain: dynamic rounds, cancel ------------------------------------------------------------------------

DYNAMIC_DRAIN = """#!/bin/bash
# -1, then -1 on the first status check, then 0: the director must ask `drain status` twice.
<% if p('dummy.drain_seconds').to_i > 0 -%>
sleep <%= p('dummy.drain_seconds').to_i %>
<% end -%>
f=/tmp/drainy-count
if [ "$1" = job_check_status ]; then
  n=$(( $(cat $f 2>/dev/null || echo 0) + 1 )); echo $n > $f
  if [ $n -lt 2 ]; then echo -1; else echo 0; fi
else
  echo 0 > $f; echo -1
fi
"""


@pytest.fixture(scope="module")
def drainy_release(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> str:
    from boshlab.release import create_release
    src = tmp_path_factory.mktemp("drainy") / "drainy"
    shutil.copytree(ROOT / "tests" / "assets" / "releases" / "dummy", src)
    (src / "config" / "final.yml").write_text("name: drainy\n")
    (src / "jobs" / "dummy" / "templates" / "bin" / "drain.erb").write_text(DYNAMIC_DRAIN)
    out = src.parent / "drainy.tgz"
    create_release(src, out)
    status, body, _ = lab.request("POST", "/releases", out.read_bytes(), content_type="application/x-compressed")
    assert status == 202, body
    assert lab.wait_task(json.loads(body)["id"])["state"] == "done"
    return "drainy"


def drainy_manifest(message: str, drain_seconds: int = 0) -> str:
    return yaml.safe_dump({
        "name": "drainy", "releases": [{"name": "drainy", "version": "latest"}], "update": FAST_UPDATE,
        "networks": [{"name": "default", "type": "dynamic"}], "compilation": {"workers": 1},
        "instance_groups": [{"name": "app", "instances": 1, "jobs": [{"name": "dummy", "release": "drainy"}],
                             "networks": [{"name": "default"}]}],
        "properties": {"dummy": {"message": message, "drain_seconds": drain_seconds}}}, sort_keys=False)


def test_dynamic_drain_polls_status_then_cancel_stops_a_drain(lab: Lab, drainy_release: str, tmp_path: Path) -> None:
    assert lab.deploy(drainy_manifest("v1"))["state"] == "done"
    # v1's script answers -1, -1, 0: two `drain status` rounds.
    task_id = post_deploy(lab, drainy_manifest("v2", drain_seconds=3600))
    assert lab.wait_task(task_id)["state"] == "done"
    drains = [a[0] for _, m, a in sent(lab, task_id) if m == "drain"]
    assert drains == ["update", "status", "status"], drains
    cid = instances(lab, "drainy")[0]["vm_cid"]
    assert lab.agent_log(cid).count('{"method"=>"drain", "arguments"=>["status"]') == 2   # the deck's log form

    # v2's script sleeps an hour: cancel the task during the drain.
    task_id = post_deploy(lab, drainy_manifest("v3"))
    wait_for("the drain", lambda: any(m == "drain" for _, m, _ in sent(lab, task_id)), 60, 0.2)
    time.sleep(1)
    p = cli(lab, "cancel-task", str(task_id))
    assert p.returncode == 0, p.stderr
    assert lab.wait_task(task_id, 60)["state"] == "cancelled"
    assert any(m == "cancel_task" for _, m, _ in sent(lab, task_id))
    wait_for("cancel_task in the agent log", lambda: "cancel_task" in lab.agent_log(cid), 20)
    p = cli(lab, "agent-message", "-d", "drainy", "app/0", "ping")
    assert p.returncode == 0 and json.loads(p.stdout) == {"value": "pong"}, (p.stdout, p.stderr)

    manifest = tmp_path / "drainy.yml"
    manifest.write_text(drainy_manifest("v4"))
    p = cli(lab, "deploy", "--skip-drain", str(manifest))
    assert p.returncode == 0, p.stderr
    p = cli(lab, "delete-deployment", "-d", "drainy", "--force")
    assert p.returncode == 0, p.stderr
