"""Issue 4 end to end, the destructive part: each test has a deployment of its own (dummy release), so a
restarted director, a killed VM or a cancelled task cannot disturb another test."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cli.client import DirectorUnreachable

from .conftest import Lab, run
from .deployments_helpers import (
    by_name,
    cli,
    events,
    group,
    instances,
    manifest,
    methods_by_agent,
    post_deploy,
    sent,
    task_done_id,
    wait_for,
)

pytestmark = pytest.mark.e2e


def deploy_ok(lab: Lab, text: str) -> dict[str, Any]:
    task = lab.wait_task(post_deploy(lab, text))
    assert task["state"] == "done", task
    return task


def output_has(lab: Lab, task_id: int, kind: str, needle: str) -> bool:
    return needle in lab.task_output(task_id, kind)


def director_healthy(lab: Lab) -> bool:
    try:
        return lab.request("GET", "/healthz", auth=None)[0] == 200
    except (DirectorUnreachable, OSError):
        return False


def test_restarting_the_director_mid_deploy_fails_the_task_and_keeps_the_state(lab: Lab, dummy_release: str) -> None:
    redis_before = lab.instance()
    slow = {"canary_watch_time": "4000-10000", "update_watch_time": "4000-10000"}
    deploy_ok(lab, manifest("restart-me", [group("app", 2, "v1")], slow))
    task_id = post_deploy(lab, manifest("restart-me", [group("app", 2, "v2")], slow))
    wait_for("the canary update", lambda: output_has(lab, task_id, "debug", ": start"), 60, 0.2)
    t0 = time.monotonic()
    lab.compose("restart", "director", timeout=120)
    # A published port Docker picked ("127.0.0.1:") may change when the container restarts.
    lab.ports["director"] = int(lab.compose("port", "director", "25555").stdout.strip().rsplit(":", 1)[1])
    wait_for("the director", lambda: director_healthy(lab), 60)
    restart_s = time.monotonic() - t0
    task = lab.get(f"/tasks/{task_id}")
    assert task["state"] == "error" and "director stopped while the task was running" in task["result"], task
    # State intact: releases, deployments, instances (same VMs, still running), tasks.
    assert {"dummy", "redis"} <= {r["name"] for r in lab.get("/releases")}
    assert {"restart-me", "redis-solo"} <= {d["name"] for d in lab.get("/deployments")}
    redis_after = lab.instance()
    assert redis_after["vm_cid"] == redis_before["vm_cid"], "VMs live on across a director restart"
    wait_for("redis running", lambda: lab.instance()["process_state"] == "running", 20)
    assert len(instances(lab, "restart-me")) == 2
    # The deployment is not locked any more and deploys again; compiled packages are reused.
    task = deploy_ok(lab, manifest("restart-me", [group("app", 2, "v2")], {"canary_watch_time": "500-10000"}))
    assert not [e for e in events(lab, task["id"]) if e["stage"] == "Compiling packages"]
    assert all(r["process_state"] == "running" for r in instances(lab, "restart-me"))
    print(f"director restart took {restart_s:.1f}s")


def test_cancel_task_cancels_the_agents_drain_and_a_second_deploy_is_refused(lab: Lab, dummy_release: str) -> None:
    deploy_ok(lab, manifest("cancel-me", [group("app", 1, "v1")], properties={"dummy": {"drain_seconds": 120}}))
    v2 = manifest("cancel-me", [group("app", 1, "v2")], properties={"dummy": {"drain_seconds": 0}})
    task_id = post_deploy(lab, v2)
    wait_for("the drain", lambda: any(m == "drain" for _, m, _ in sent(lab, task_id)), 60, 0.2)
    time.sleep(1)
    # One deploy per deployment at a time: the second is refused, naming the task that holds the lock.
    status, body, _ = lab.request("POST", "/deployments", v2.encode(), content_type="text/yaml")
    assert status == 409 and f"locked by task {task_id}" in json.loads(body)["description"], body
    (ROOT_TMP := lab_tmp(lab)).write_text(v2)
    p = cli(lab, "deploy", str(ROOT_TMP))
    assert p.returncode == 5 and f"locked by task {task_id}" in p.stderr, p.stderr
    t0 = time.monotonic()
    p = cli(lab, "cancel-task", str(task_id))
    assert p.returncode == 0, p.stderr
    task = lab.wait_task(task_id, timeout=30)
    took = time.monotonic() - t0
    assert task["state"] == "cancelled" and took < 15, (task, took)
    assert any(m == "cancel_task" for _, m, _ in sent(lab, task_id)), "the agent's drain was cancelled too"
    cid = instances(lab, "cancel-me")[0]["vm_cid"]
    wait_for("the agent to cancel its drain", lambda: "Drain canceled" in lab.agent_log(cid), 20)
    assert cli(lab, "task", str(task_id)).returncode == 7
    # The lock went with the task: the deployment deploys again (the old drain script would sleep: skip it).
    p = cli(lab, "deploy", "--skip-drain", str(ROOT_TMP))
    assert p.returncode == 0, p.stderr
    assert "Task" in p.stderr and "Duration" in p.stderr and "Updating instance app: app/" in p.stderr


def lab_tmp(lab: Lab) -> Path:
    from .conftest import ROOT
    d = ROOT / ".pytest_cache" / "manifests"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{lab.project}-cancel-me.yml"


def test_a_killed_vm_shows_unresponsive_and_cloud_check_brings_it_back(lab: Lab, dummy_release: str) -> None:
    deploy_ok(lab, manifest("kill-me", [group("app", 2)]))
    before = by_name(instances(lab, "kill-me"))
    run(["docker", "kill", before["app/0"]["vm_cid"]])
    t0 = time.monotonic()
    wait_for("app/0 unresponsive", lambda: by_name(instances(lab, "kill-me"))["app/0"]["process_state"] == "unresponsive agent", 30)
    took = time.monotonic() - t0
    assert 3 < took < 15, f"unresponsive after {took:.1f}s: the threshold is 6 s"
    assert by_name(instances(lab, "kill-me"))["app/1"]["process_state"] == "running"
    p = cli(lab, "cck", "--report", "-d", "kill-me", "--json")
    assert p.returncode == 6, p.stderr
    problems = json.loads(p.stdout)
    assert [(x["type"], x["id"]) for x in problems] == [("unresponsive_agent", before["app/0"]["id"])]
    assert "exited with code 137" in problems[0]["description"]
    assert {"recreate_vm", "delete_vm_reference", "reboot_vm"} <= {r["name"] for r in problems[0]["resolutions"]}
    p = cli(lab, "cck", "--auto", "-d", "kill-me")
    assert p.returncode == 0, p.stderr
    after = by_name(instances(lab, "kill-me"))
    assert after["app/0"]["id"] == before["app/0"]["id"] and after["app/0"]["vm_cid"] != before["app/0"]["vm_cid"]
    assert after["app/1"]["vm_cid"] == before["app/1"]["vm_cid"]
    assert all(r["process_state"] == "running" for r in after.values()), after
    # A VM whose container vanished: missing_vm; resolved through the API.
    run(["docker", "rm", "-f", after["app/1"]["vm_cid"]])
    problems = lab.get("/deployments/kill-me/problems")
    assert [(x["type"], x["id"]) for x in problems] == [("missing_vm", after["app/1"]["id"])]
    status, body, _ = lab.request("PUT", "/deployments/kill-me/problems",
                                  json.dumps({"resolutions": {problems[0]["id"]: "recreate_vm"}}).encode())
    assert status == 202, body
    assert lab.wait_task(json.loads(body)["id"])["state"] == "done"
    final = by_name(instances(lab, "kill-me"))
    assert final["app/1"]["vm_cid"] not in (None, after["app/1"]["vm_cid"]) and final["app/1"]["process_state"] == "running"
    assert cli(lab, "cck", "--report", "-d", "kill-me").returncode == 0
    assert not run(["docker", "ps", "-aq", "--filter", f"id={before['app/0']['vm_cid']}"]).stdout.strip()


def test_resurrection_recreates_a_vanished_vm(lab: Lab, dummy_release: str) -> None:
    deploy_ok(lab, manifest("resurrect-me", [group("app", 1)]))
    before = instances(lab, "resurrect-me")[0]
    assert cli(lab, "update-resurrection", "on", "-d", "resurrect-me").returncode == 0
    try:
        run(["docker", "rm", "-f", before["vm_cid"]])
        t0 = time.monotonic()
        row = wait_for("a new VM, running", lambda: next(
            (r for r in instances(lab, "resurrect-me") if r["vm_cid"] not in (None, before["vm_cid"])
             and r["process_state"] == "running"), None), 90)
        took = time.monotonic() - t0
    finally:
        cli(lab, "update-resurrection", "off", "-d", "resurrect-me")
    assert row["id"] == before["id"]
    fix = [t for t in lab.get("/tasks?limit=20") if t["description"] == "scan and fix" and t["deployment"] == "resurrect-me"]
    assert fix and fix[0]["state"] == "done", fix
    print(f"resurrected after {took:.1f}s")


def test_recreate_one_instance_then_delete_the_deployment(lab: Lab, dummy_release: str) -> None:
    deploy_ok(lab, manifest("recreate-me", [group("app", 2)]))
    before = by_name(instances(lab, "recreate-me"))
    p = cli(lab, "recreate", "-d", "recreate-me", f"app/{before['app/1']['id'][:8]}")
    assert p.returncode == 0, p.stderr
    task_id = task_done_id(p.stderr)
    after = by_name(instances(lab, "recreate-me"))
    assert after["app/0"]["vm_cid"] == before["app/0"]["vm_cid"]
    assert after["app/1"]["vm_cid"] != before["app/1"]["vm_cid"] and after["app/1"]["id"] == before["app/1"]["id"]
    old_agent, new_agent = before["app/1"]["agent_id"], after["app/1"]["agent_id"]
    assert methods_by_agent(lab, task_id)[old_agent] == ["drain", "stop"]
    assert methods_by_agent(lab, task_id)[new_agent] == ["apply", "start"]   # recreate: a new VM gets apply, start
    # A persistent disk of the deployment (a labelled Docker volume) goes with it.
    vol = f"{lab.project}-recreate-me-disk-test"
    run(["docker", "volume", "create", "--label", f"io.bosh-lab.lab={lab.project}",
         "--label", "io.bosh-lab.deployment=recreate-me", vol])
    p = cli(lab, "delete-deployment", "-d", "recreate-me")
    assert p.returncode == 0, p.stderr
    assert cli(lab, "instances", "-d", "recreate-me").returncode == 4
    assert not run(["docker", "ps", "-aq", "--filter", "label=io.bosh-lab.deployment=recreate-me"]).stdout.strip()
    assert run(["docker", "volume", "inspect", vol], check=False).returncode != 0, "its disk is gone"
    assert "recreate-me" not in {d["name"] for d in lab.get("/deployments")}
