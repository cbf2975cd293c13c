"""Helpers for the fault matrix (test_faults.py): a redis deployment of its own per scenario (the workshop's
redis release, compiled already by workshop mode), a key written before the fault and read after, and the
knobs that inject faults into the lab's real containers."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import yaml

from cli.client import DirectorUnreachable

from .conftest import ROOT, Lab, run
from .deployments_helpers import instances, post_deploy, wait_for

PASSWORD = "r3d!s"
REDIS_CLI = "/var/vcap/packages/redis/bin/redis-cli"
FAST = {"canary_watch_time": "500-10000", "update_watch_time": "500-10000"}
PORTS = (6379, 6380, 6381, 6382)          # the scenarios change redis.port to force an apply


def redis_manifest(name: str, port: int = 6379, disk: int = 100, instances_: int = 1,
                   dummy: dict[str, Any] | None = None, update: dict[str, Any] | None = None) -> str:
    """The workshop's redis-solo under another name; ``dummy``: colocate the dummy release's job (its
    drain script sleeps ``dummy.drain_seconds``) with these properties."""
    doc = yaml.safe_load((ROOT / "workshop" / "manifests" / "redis-solo.yml").read_text())
    doc["name"] = name
    doc["update"] = {**doc["update"], **FAST, **(update or {})}
    g = doc["instance_groups"][0]
    g["persistent_disk"] = disk
    g["instances"] = instances_
    doc["properties"]["redis"]["port"] = port
    if dummy is not None:
        doc["releases"].append({"name": "dummy", "version": "latest"})
        g["jobs"].append({"name": "dummy", "release": "dummy"})
        doc["properties"]["dummy"] = dummy
    return yaml.safe_dump(doc, sort_keys=False)


def deploy_ok(lab: Lab, text: str, query: str = "") -> dict[str, Any]:
    task = lab.wait_task(post_deploy(lab, text, query), timeout=600)
    assert task["state"] == "done", (task, lab.task_output(task["id"], "debug")[-3000:])
    return task


def vm_cid(lab: Lab, deployment: str) -> str:
    cid = instances(lab, deployment)[0]["vm_cid"]
    assert cid, f"{deployment} has no VM"
    return str(cid)


def redis_cli(lab: Lab, cid: str, port: int, *cmd: str) -> str:
    p = run(["docker", "exec", cid, REDIS_CLI, "-p", str(port), "-a", PASSWORD, "--no-auth-warning", *cmd],
            check=False, timeout=20)
    return p.stdout.strip() if p.returncode == 0 else f"<exit {p.returncode}: {p.stderr.strip()}>"


def write_key(lab: Lab, deployment: str, key: str, value: str, port: int = 6379) -> None:
    """SET, then SAVE: the key is on the (persistent) store before the fault."""
    cid = vm_cid(lab, deployment)
    wait_for("redis to answer", lambda: redis_cli(lab, cid, port, "PING") == "PONG", 30)
    assert redis_cli(lab, cid, port, "SET", key, value) == "OK"
    assert redis_cli(lab, cid, port, "SAVE") == "OK"


def read_key(lab: Lab, deployment: str, key: str, ports: Iterable[int] = PORTS, timeout: float = 45) -> str:
    """The key's value from the instance's redis, on whichever port it listens now."""
    def look() -> str | None:
        cid = instances(lab, deployment)[0]["vm_cid"]
        if not cid:
            return None
        for port in ports:
            if redis_cli(lab, cid, port, "PING") == "PONG":
                return redis_cli(lab, cid, port, "GET", key) or "<nil>"
        return None
    return wait_for(f"redis of {deployment} to answer", look, timeout, 1)


def wait_running(lab: Lab, deployment: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(f"{deployment} running", lambda: next(
        (r for r in instances(lab, deployment) if r["vm_cid"] and r["process_state"] == "running"), None), timeout, 1)


def debug_has(lab: Lab, task_id: int, needle: str) -> bool:
    try:
        return needle in lab.task_output(task_id, "debug")
    except (DirectorUnreachable, OSError):
        return False


def sent_method(method: str) -> str:
    """How a SENT line of the debug log shows a request for ``method``."""
    return f'"method": "{method}"'


def wait_sent(lab: Lab, task_id: int, method: str, timeout: float = 120) -> float:
    """Wait (polling fast) until the task sent ``method`` to an agent; the monotonic time it was seen."""
    def seen() -> bool:
        return any(sent_method(method) in line or f'"method":"{method}"' in line
                   for line in lab.task_output(task_id, "debug").splitlines() if "SENT: agent." in line)
    wait_for(f"task {task_id} to send {method}", seen, timeout, 0.1)
    return time.monotonic()


def task_state(lab: Lab, task_id: int) -> str:
    return str(lab.get(f"/tasks/{task_id}")["state"])


def wait_idle(lab: Lab, deployment: str, timeout: float = 300) -> None:
    """No task of the deployment queued or running (e.g. the director's own reconcile deploy after a restart)."""
    def idle() -> bool:
        return not [t for t in lab.get("/tasks?limit=50") if t["deployment"] == deployment
                    and t["state"] in ("queued", "processing", "cancelling")]
    wait_for(f"no task running for {deployment}", idle, timeout, 1)


# --- compose services ------------------------------------------------------------------------------------

def service_cid(lab: Lab, service: str) -> str:
    cid = lab.compose("ps", "-aq", service).stdout.strip()
    assert cid, f"no {service} container"
    return cid


def director_healthy(lab: Lab) -> bool:
    try:
        return lab.request("GET", "/healthz", auth=None)[0] == 200
    except (DirectorUnreachable, OSError):
        return False


def running(cid: str) -> bool:
    p = run(["docker", "inspect", "-f", "{{.State.Running}}", cid], check=False)
    return p.stdout.strip() == "true"


def kill_director(lab: Lab) -> dict[str, Any]:
    """SIGKILL the director's container; wait for Docker's restart policy (``unless-stopped``) to bring it
    back, else ``docker compose start director``; re-read its published port. What happened, as data."""
    cid = service_cid(lab, "director")
    t0 = time.monotonic()
    run(["docker", "kill", "-s", "KILL", cid])
    restarted_by_docker = True
    try:
        wait_for("Docker to restart the director", lambda: running(cid), 15, 0.5)
    except AssertionError:
        restarted_by_docker = False
        lab.compose("start", "director", timeout=120)
    lab.ports["director"] = int(lab.compose("port", "director", "25555").stdout.strip().rsplit(":", 1)[1])
    wait_for("the director's API", lambda: director_healthy(lab), 90, 0.5)
    return {"restarted_by_docker": restarted_by_docker, "director_back_after_s": round(time.monotonic() - t0, 1)}


# --- clean up --------------------------------------------------------------------------------------------

def delete_deployment(lab: Lab, deployment: str) -> None:
    """Delete the deployment (force) and its orphaned disks; never raises (runs in ``finally``)."""
    try:
        if not director_healthy(lab):
            lab.ports["director"] = int(lab.compose("port", "director", "25555").stdout.strip().rsplit(":", 1)[1])
        wait_idle(lab, deployment, 120)
        status, body, _ = lab.request("DELETE", f"/deployments/{deployment}?force=true")
        if status == 202:
            lab.wait_task(json.loads(body)["id"], timeout=180)
        for d in lab.get("/disks?orphaned=true"):
            if d["deployment"] == deployment:
                status, body, _ = lab.request("DELETE", f"/disks/{d['cid']}")
                if status == 202:
                    lab.wait_task(json.loads(body)["id"], timeout=60)
    except Exception as e:  # noqa: BLE001 - cleanup must not hide the test's own failure
        print(f"cleanup of {deployment} failed: {e}")
