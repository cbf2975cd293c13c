"""The game-day fault verbs (``bosh-lab fault``, ``/faults``; docs/faults.md "Fault verbs") on the session's lab,
on a dummy-release deployment of their own: each verb's effect as the director and the lab see it, and each
undone. Short values throughout (the lab's agent timeout is 6 s, heartbeats every 2 s)."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from .conftest import Lab
from .deployments_helpers import group, instances, manifest, wait_for
from .fault_helpers import deploy_ok

DEP = "fault-verbs"
INST = "app/0"


@pytest.fixture(scope="module")
def dep(lab: Lab, dummy_release: str) -> Iterator[str]:
    deploy_ok(lab, manifest(DEP, [group("app")]))
    try:
        yield DEP
    finally:
        lab.request("DELETE", "/faults")      # never leave the blobstore paused or an agent stopped
        status, body, _ = lab.request("DELETE", f"/deployments/{DEP}?force=true")
        if status == 202:
            lab.wait_task(json.loads(body)["id"], timeout=300)


def inject(lab: Lab, kind: str, **body: Any) -> dict[str, Any]:
    if kind != "pause-blobstore":
        body = {"deployment": DEP, "instance": INST, **body}
    status, raw, _ = lab.request("POST", "/faults", json.dumps({"kind": kind, **body}).encode())
    assert status == 201, (status, raw)
    fault: dict[str, Any] = json.loads(raw)
    assert fault["state"] == "active" and fault["kind"] == kind
    return fault


def undo(lab: Lab, fault: dict[str, Any]) -> dict[str, Any]:
    status, raw, _ = lab.request("DELETE", f"/faults/{fault['id']}")
    assert status == 200, (status, raw)
    out: dict[str, Any] = json.loads(raw)
    assert out["state"] == "undone"
    return out


def job_state(lab: Lab) -> str | None:
    rows = instances(lab, DEP, full=True)
    return rows[0].get("job_state") if rows else None


def problems(lab: Lab) -> list[str]:
    return [p["type"] for p in lab.get(f"/deployments/{DEP}/problems")]


def fault_events(lab: Lab, fault_id: str) -> list[str] | None:
    """The actions of the ``fault`` events of this fault in the watch timeline (None: no ``GET /watch``)."""
    status, raw, _ = lab.request("GET", "/watch?follow=0&history=2000")
    if status == 404:
        return None
    assert status == 200, (status, raw[:300])
    out = []
    for line in raw.decode().splitlines():
        if line.strip():
            ev = json.loads(line)
            if ev.get("kind") == "fault" and (ev.get("fault") or {}).get("id") == fault_id:
                out.append(ev["fault"]["action"])
    return out


def test_fail_job_shows_failing_and_undo_runs_it_again(lab: Lab, dep: str) -> None:
    fault = inject(lab, "fail-job")
    assert "dummy" in fault["message"]
    wait_for("job_state failing", lambda: job_state(lab) == "failing", 40, 1)
    status, raw, _ = lab.request("POST", "/faults", json.dumps({"kind": "fail-job", "deployment": DEP,
                                                                "instance": INST}).encode())
    assert status == 409, raw
    undo(lab, fault)
    wait_for("job_state running", lambda: job_state(lab) == "running", 40, 1)
    assert fault_events(lab, fault["id"]) in (None, ["injected", "undone"])


def test_kill_agent_makes_it_unresponsive_until_undone(lab: Lab, dep: str) -> None:
    fault = inject(lab, "kill-agent")
    cid = instances(lab, DEP)[0]["vm_cid"]
    wait_for("unresponsive_agent", lambda: problems(lab) == ["unresponsive_agent"], 30, 1)
    assert lab.vm_exec(cid, "sv", "status", "/etc/service/agent", check=False).startswith("down")
    undo(lab, fault)
    wait_for("agent answers", lambda: problems(lab) == [], 60, 1)


def test_cut_nats_makes_the_agent_unreachable_until_undone(lab: Lab, dep: str) -> None:
    fault = inject(lab, "cut-nats")
    wait_for("unresponsive_agent", lambda: problems(lab) == ["unresponsive_agent"], 30, 1)
    undo(lab, fault)
    wait_for("agent reachable again", lambda: problems(lab) == [], 60, 1)
    wait_for("job_state running", lambda: job_state(lab) == "running", 30, 1)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d+)\s")


def _at(line: str) -> float:
    m = _STAMP.match(line)
    assert m, line
    return datetime.strptime(m.group(1)[:26], "%Y-%m-%d_%H:%M:%S.%f").timestamp()


def test_slow_drain_slows_the_next_drain(lab: Lab, dep: str) -> None:
    seconds = 3
    fault = inject(lab, "slow-drain", seconds=seconds)
    assert "next apply" in fault["message"]
    cid = instances(lab, DEP)[0]["vm_cid"]
    deploy_ok(lab, manifest(DEP, [group("app", message="slower")]))
    log = lab.agent_log(cid).splitlines()
    ran = [line for line in log if "Running drain script" in line]
    returned = [line for line in log if "Drain script" in line and "returned" in line]
    assert ran and returned, "\n".join(log[-40:])
    took = _at(returned[-1]) - _at(ran[-1])
    assert took >= seconds, f"the drain took {took:.1f} s"
    undo(lab, fault)    # the apply replaced /var/vcap/jobs already: nothing left to put back, still fine


def blobstore_answers(lab: Lab, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{lab.ports['blobstore']}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, TimeoutError, OSError):
        return False


def test_pause_blobstore_hangs_requests_until_undone(lab: Lab, dep: str) -> None:
    assert blobstore_answers(lab, 5)
    fault = inject(lab, "pause-blobstore")
    try:
        t0 = time.monotonic()
        assert not blobstore_answers(lab, 2)
        assert time.monotonic() - t0 >= 1.9, "the request failed at once instead of hanging"
    finally:
        undo(lab, fault)
    wait_for("blobstore answers", lambda: blobstore_answers(lab, 2), 20, 0.5)


def test_delete_vm_is_missing_vm_until_undo_recreates_it(lab: Lab, dep: str) -> None:
    old = instances(lab, DEP)[0]["vm_cid"]
    fault = inject(lab, "delete-vm")
    assert problems(lab) == ["missing_vm"]
    out = undo(lab, fault)
    task = lab.wait_task(int(out["task"]), timeout=300)
    assert task["state"] == "done", task
    row = instances(lab, DEP)[0]
    assert row["vm_cid"] and row["vm_cid"] != old
    wait_for("running", lambda: job_state(lab) == "running", 60, 1)
    assert problems(lab) == []
    assert lab.get("/faults") == []
