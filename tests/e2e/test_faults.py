"""Issue 8, the fault matrix, end to end on real containers. Each scenario has a redis deployment of its own
(the workshop's redis release, compiled already by workshop mode): a key is written (SET + SAVE) before the
fault and read after it; every scenario ends in a named error or a recovery, with nothing lost, and the
instance running again. docs/faults.md has the table of scenarios and outcomes."""
from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from .conftest import ROOT, Lab, run
from .deployments_helpers import cli, instances, post_deploy, wait_for
from .fault_helpers import (
    debug_has,
    delete_deployment,
    deploy_ok,
    kill_director,
    read_key,
    redis_manifest,
    service_cid,
    vm_cid,
    wait_idle,
    wait_running,
    wait_sent,
    write_key,
)

pytestmark = pytest.mark.e2e


def record(scenario: str, outcome: str, seconds: float, **extra: Any) -> None:
    """What each scenario ended in, printed and kept in .pytest_cache/faults.jsonl (for docs/faults.md)."""
    row = {"scenario": scenario, "outcome": outcome, "seconds": round(seconds, 1), **extra}
    print(json.dumps(row))
    out = ROOT / ".pytest_cache" / "faults.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


@pytest.fixture
def deployment(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """A deployment name of the test's own, deleted (with its orphaned disks) at the end."""
    name = "fault-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]
    yield name
    delete_deployment(lab, name)


def test_nats_restarted_mid_deploy(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379))
    write_key(lab, deployment, "fault", "nats", 6379)
    task_id = post_deploy(lab, redis_manifest(deployment, 6380))
    wait_sent(lab, task_id, "drain")
    lab.compose("restart", "nats", timeout=120)
    lab.ports["nats"] = int(lab.compose("port", "nats", "4222").stdout.strip().rsplit(":", 1)[1])
    task = lab.wait_task(task_id, 600)
    if task["state"] == "done":
        outcome = "recovery: the deploy finished (director and agent reconnected)"
    else:
        assert task["state"] == "error" and "NATS" in task["result"], task
        outcome = f"error: {task['result']}"
    # Director and agent both reconnected: a message goes there and back again.
    wait_for("the agent to answer through NATS", lambda: agent_answers(lab, deployment), 60, 1)
    deploy_ok(lab, redis_manifest(deployment, 6380))
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6380,)) == "nats"
    record("nats restarted mid-deploy", outcome, time.monotonic() - t0, task=task_id)


def test_blobstore_paused_during_apply(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379))
    write_key(lab, deployment, "fault", "blobstore", 6379)
    cid = vm_cid(lab, deployment)
    blobstore = service_cid(lab, "blobstore")
    paused_s = 6.0
    # A new redis.port: new rendered templates, so apply downloads the job blob again. The blobstore is
    # paused once the jobs are stopped, so the apply that follows meets it paused.
    task_id = post_deploy(lab, redis_manifest(deployment, 6380))
    try:
        wait_sent(lab, task_id, "stop")
        run(["docker", "pause", blobstore])
        wait_sent(lab, task_id, "apply", 60)
        time.sleep(paused_s)
        assert lab.get(f"/tasks/{task_id}")["state"] == "processing", "apply waits while the blobstore is paused"
    finally:
        run(["docker", "unpause", blobstore], check=False)
    task = lab.wait_task(task_id, 600)
    log = lab.agent_log(cid)
    if task["state"] == "done":
        outcome = f"recovery: apply waited for the paused blobstore ({paused_s:g}s) and completed"
        assert "Downloading job 'redis'" in log or "Downloading job" in log, log[-2000:]
    else:
        assert task["state"] == "error" and any(w in task["result"] for w in ("blob", "deadline", "within")), task
        outcome = f"error: {task['result']}"
        deploy_ok(lab, redis_manifest(deployment, 6380))
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6380,)) == "blobstore"
    record("blobstore paused during apply", outcome, time.monotonic() - t0, task=task_id)


def test_director_sigkilled_mid_task(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379))
    write_key(lab, deployment, "fault", "director", 6379)
    before = vm_cid(lab, deployment)
    task_id = post_deploy(lab, redis_manifest(deployment, 6380, update={"canary_watch_time": "4000-10000"}))
    wait_sent(lab, task_id, "start")
    how = kill_director(lab)
    task = lab.get(f"/tasks/{task_id}")
    assert task["state"] == "error" and "director stopped while the task was running" in task["result"], task
    assert vm_cid(lab, deployment) == before, "the VM outlives its director"
    assert read_key(lab, deployment, "fault") == "director"
    wait_idle(lab, deployment)
    deploy_ok(lab, redis_manifest(deployment, 6380))
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6380,)) == "director"
    record("director SIGKILLed mid-task", f"error: {task['result']}", time.monotonic() - t0, task=task_id, **how)


def test_agent_killed_during_apply(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379))
    write_key(lab, deployment, "fault", "agent", 6379)
    cid = vm_cid(lab, deployment)
    task_id = post_deploy(lab, redis_manifest(deployment, 6380))
    wait_sent(lab, task_id, "apply")
    # runit's `sv kill` sends the agent SIGKILL; runsv starts it again a second later.
    run(["docker", "exec", cid, "sv", "kill", "/etc/service/agent"])
    task = lab.wait_task(task_id, 600)
    if task["state"] == "done":
        outcome = "recovery: the deploy finished once runit restarted the agent"
    else:
        # The restarted agent does not know the task the director polls: named by the agent's answer.
        assert task["state"] == "error" and "get_task" in task["result"] and "could not be found" in task["result"], task
        outcome = f"error: {task['result']}"
    wait_for("the agent to answer", lambda: agent_answers(lab, deployment), 60, 1)
    deploy_ok(lab, redis_manifest(deployment, 6380))
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6380,)) == "agent"
    record("agent killed during apply", outcome, time.monotonic() - t0, task=task_id)


def agent_answers(lab: Lab, deployment: str) -> bool:
    """ping through the director and NATS to the instance's agent, and back."""
    p = cli(lab, "agent-message", "-d", deployment, "redis/0", "ping", timeout=60)
    return p.returncode == 0 and json.loads(p.stdout) == {"value": "pong"}


def process_state(lab: Lab, deployment: str) -> str:
    time.sleep(3)      # a heartbeat or two (2 s apart) after the fault
    return str(instances(lab, deployment)[0]["process_state"])


DRAIN_OK = {"message": "v2", "drain_seconds": 0}     # the next drain (delete) does not hang


def hanging_drain(message: str) -> dict[str, Any]:
    return {"message": message, "drain_seconds": 3600}


def test_hanging_drain_is_cancelled(lab: Lab, deployment: str, dummy_release: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379, dummy=hanging_drain("v1")))
    write_key(lab, deployment, "fault", "drain-cancel", 6379)
    task_id = post_deploy(lab, redis_manifest(deployment, 6379, dummy=hanging_drain("v2")))
    wait_sent(lab, task_id, "drain")
    time.sleep(1)
    status, body, _ = lab.request("DELETE", f"/tasks/{task_id}")
    assert status in (200, 202), body
    task = lab.wait_task(task_id, 60)
    assert task["state"] == "cancelled", task
    assert debug_has(lab, task_id, '"method": "cancel_task"'), "the agent's drain is cancelled too"
    assert agent_answers(lab, deployment)
    # Cancelled before stop: redis still runs and has the key (its services are left unmonitored by drain).
    assert read_key(lab, deployment, "fault", (6379,)) == "drain-cancel"
    after_cancel = process_state(lab, deployment)
    deploy_ok(lab, redis_manifest(deployment, 6379, dummy=DRAIN_OK), "?skip_drain=true")
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6379,)) == "drain-cancel"
    record("hanging drain, cancelled", f"cancelled: {task['result']}", time.monotonic() - t0, task=task_id,
           process_state_after=after_cancel)


def test_hanging_drain_hits_the_deadline(lab: Lab, deployment: str, dummy_release: str) -> None:
    assert lab.env.get("BOSH_LAB_AGENT_DRAIN_DEADLINE") == "30", "tests/e2e/conftest.py starts the director with it"
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379, dummy=hanging_drain("v1")))
    write_key(lab, deployment, "fault", "drain-deadline", 6379)
    task_id = post_deploy(lab, redis_manifest(deployment, 6379, dummy=hanging_drain("v2")))
    wait_sent(lab, task_id, "drain")
    t_drain = time.monotonic()
    task = lab.wait_task(task_id, 120)
    took = time.monotonic() - t_drain
    assert task["state"] == "error", task
    assert "did not finish within 30 seconds (BOSH_LAB_AGENT_DRAIN_DEADLINE)" in task["result"], task
    assert 25 < took < 60, took
    assert debug_has(lab, task_id, '"method": "cancel_task"'), "the agent's drain is cancelled at the deadline"
    assert not debug_has(lab, task_id, '"method": "stop"'), "nothing was stopped"
    assert read_key(lab, deployment, "fault", (6379,)) == "drain-deadline"
    after_deadline = process_state(lab, deployment)
    deploy_ok(lab, redis_manifest(deployment, 6379, dummy=DRAIN_OK), "?skip_drain=true")
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6379,)) == "drain-deadline"
    record("hanging drain, deadline", f"error: {task['result']}", time.monotonic() - t0, task=task_id,
           drain_seconds=round(took, 1), process_state_after=after_deadline)


def test_vm_container_deleted_behind_the_directors_back(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379, disk=100))
    write_key(lab, deployment, "fault", "vm-deleted", 6379)
    before = instances(lab, deployment)[0]
    run(["docker", "rm", "-f", before["vm_cid"]])
    problems = wait_for("missing_vm", lambda: lab.get(f"/deployments/{deployment}/problems"), 30, 1)
    assert [(x["type"], x["id"]) for x in problems] == [("missing_vm", before["id"])], problems
    status, body, _ = lab.request("PUT", f"/deployments/{deployment}/problems",
                                  json.dumps({"resolutions": {problems[0]["id"]: "recreate_vm"}}).encode())
    assert status == 202, body
    task = lab.wait_task(json.loads(body)["id"], 300)
    assert task["state"] == "done", task
    after = wait_running(lab, deployment)
    assert after["id"] == before["id"] and after["vm_cid"] != before["vm_cid"]
    assert read_key(lab, deployment, "fault", (6379,)) == "vm-deleted", "the persistent disk kept the key"
    assert lab.get(f"/deployments/{deployment}/problems") == []
    record("VM container deleted", f"missing_vm ({problems[0]['description']}); recreate_vm: recovery",
           time.monotonic() - t0, task=task["id"])


def lab_subnet(lab: Lab) -> ipaddress.IPv4Network:
    """The lab's own Docker network (where NATS and the director are): a range a manual network must not use."""
    info = json.loads(run(["docker", "network", "inspect", f"{lab.project}_default"]).stdout)[0]
    return ipaddress.ip_network(info["IPAM"]["Config"][0]["Subnet"])  # type: ignore[return-value]


def test_docker_refuses_to_create_a_vm(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379))
    write_key(lab, deployment, "fault", "refused", 6379)
    before = vm_cid(lab, deployment)
    image = f"{lab.env.get('BOSH_LAB_IMAGE_PREFIX', 'bosh-lab')}/stemcell:latest"
    image_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", image]).stdout.strip()
    # 1. An unknown image: the stemcell's tag is gone (its VMs keep running on the untagged image).
    run(["docker", "image", "rm", "-f", image])
    try:
        task = lab.wait_task(post_deploy(lab, redis_manifest(deployment, 6379, instances_=2)), 120)
    finally:
        run(["docker", "tag", image_id, image])
    assert task["state"] == "error" and "does not exist" in task["result"] and image in task["result"], task
    unknown_image = task["result"]
    assert vm_cid(lab, deployment) == before and wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6379,)) == "refused"
    # 2. A manual network whose range overlaps a Docker network (the lab's own): refused, named.
    subnet = next(lab_subnet(lab).subnets(new_prefix=24))
    doc = yaml.safe_load(redis_manifest(deployment, 6379, instances_=2))
    doc["networks"] = [{"name": "default", "type": "manual",
                        "subnets": [{"range": str(subnet), "gateway": str(subnet.network_address + 1)}]}]
    task = lab.wait_task(post_deploy(lab, yaml.safe_dump(doc, sort_keys=False)), 120)
    assert task["state"] == "error" and "overlaps Docker network" in task["result"], task
    assert not debug_has(lab, task["id"], '"method": "drain"'), "refused before any instance was touched"
    assert vm_cid(lab, deployment) == before and wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6379,)) == "refused"
    # The fault undone: the same scale-out works.
    deploy_ok(lab, redis_manifest(deployment, 6379, instances_=2))
    assert len([r for r in instances(lab, deployment) if r["process_state"] == "running"]) == 2
    assert read_key(lab, deployment, "fault", (6379,)) == "refused"
    record("Docker refuses to create a VM", f"error: {unknown_image} | error: {task['result']}",
           time.monotonic() - t0)


def test_disk_migration_interrupted(lab: Lab, deployment: str) -> None:
    t0 = time.monotonic()
    deploy_ok(lab, redis_manifest(deployment, 6379, disk=100))
    write_key(lab, deployment, "fault", "migrate", 6379)
    [old] = [d["cid"] for d in lab.get("/disks") if d["deployment"] == deployment]
    task_id = post_deploy(lab, redis_manifest(deployment, 6379, disk=200))
    wait_sent(lab, task_id, "migrate_disk")
    how = kill_director(lab)
    task = lab.get(f"/tasks/{task_id}")
    assert task["state"] == "error" and "director stopped while the task was running" in task["result"], task
    wait_idle(lab, deployment)     # after a restart the director deploys again deployments whose VMs are gone
    deploy_ok(lab, redis_manifest(deployment, 6379, disk=200))
    wait_running(lab, deployment)
    assert read_key(lab, deployment, "fault", (6379,)) == "migrate"
    current = [d for d in lab.get("/disks") if d["deployment"] == deployment and not d["orphaned"]]
    assert [d["size"] for d in current] == [200] and current[0]["cid"] != old, current
    record("persistent-disk migration interrupted", f"error: {task['result']}; redeploy: recovery",
           time.monotonic() - t0, task=task_id, **how)
