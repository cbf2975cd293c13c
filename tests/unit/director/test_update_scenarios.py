"""Deploy scenarios against a whole director whose VMs run the real agent (fake CPI): canaries and
max_in_flight, a failing canary, an unchanged instance, drain with several jobs, dynamic drain on scale-down."""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.director_harness import Director, dummy_manifest, write_release
from tests.support.fakes import FAIL_MARKER

STAMP = re.compile(r"^D, \[(\S+) #\d+\]")


def updating(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(state, instance) of the event log's "Updating instance" events, in the order they were written."""
    return [(e["state"], e["task"]) for e in events if e["stage"] == "Updating instance"]


def debug_time(debug: str, needle: str) -> datetime:
    for line in debug.splitlines():
        if needle in line and (m := STAMP.match(line)):
            return datetime.fromisoformat(m.group(1))
    raise AssertionError(f"no debug line with {needle!r}")


def sent_methods(sent: list[str]) -> list[tuple[str, str, list[Any]]]:
    """(subject, method, arguments) of each SENT line."""
    out = []
    for line in sent:
        subject, payload = line.split(" ", 1)
        msg = json.loads(payload)
        out.append((subject, msg["method"], msg["arguments"]))
    return out


async def test_canary_first_then_at_most_max_in_flight(director: Director) -> None:
    task = await director.deploy(dummy_manifest(instances=5, canaries=1, max_in_flight=2))
    ev = updating(await director.events(task))
    started = [t for s, t in ev if s == "started"]
    assert len(started) == 5 and len({t for s, t in ev if s == "finished"}) == 5, ev
    canary = started[0]
    assert canary.endswith("(canary)") and sum(t.endswith("(canary)") for t in started) == 1
    # the canary finishes before any other instance starts
    assert ev[0] == ("started", canary) and ev[1] == ("finished", canary), ev
    in_flight, most = 0, 0
    for state, _ in ev:
        in_flight += 1 if state == "started" else -1
        most = max(most, in_flight)
    assert most == 2, f"max_in_flight 2: at most (and here exactly) 2 at once, saw {most}: {ev}"
    rows = await director.instances("dep")
    assert len(rows) == 5 and all(r.apply_spec and r.apply_spec.get("configuration_hash") for r in rows)


async def test_failed_canary_leaves_the_others_on_the_old_configuration(director: Director) -> None:
    await director.deploy(dummy_manifest(instances=3, max_in_flight=2))
    before = {r.id: (r.apply_spec or {}).get("configuration_hash") for r in await director.instances("dep")}
    assert all(before.values())
    bad = dummy_manifest(instances=3, max_in_flight=2, watch="100-1100",
                         properties={"dummy": {"message": FAIL_MARKER}})
    task = await director.ops.deploy_task(bad)
    state, result = await director.wait_task(task)
    assert state == "error" and "is not running after update" in result, result
    ev = updating(await director.events(task))
    assert [s for s, _ in ev] == ["started", "failed"] and ev[0][1].endswith("(canary)"), ev
    rows = await director.instances("dep")
    canary_id = ev[0][1].split(" ")[0].split("/")[1]
    others = [r for r in rows if r.id != canary_id]
    assert len(others) == 2
    for r in others:
        assert (r.apply_spec or {}).get("configuration_hash") == before[r.id], f"{r.label} was changed"
        vm = await director.vm_of(r)
        conf = (vm.paths.job_link("dummy") / "config" / "dummy.conf").read_text()
        assert "message=hello" in conf and FAIL_MARKER not in conf
    canary = next(r for r in rows if r.id == canary_id)
    canary_vm = await director.vm_of(canary)
    assert FAIL_MARKER in (canary_vm.paths.job_link("dummy") / "config" / "dummy.conf").read_text()


async def test_unchanged_instance_is_not_touched(director: Director) -> None:
    manifest = dummy_manifest(instances=2, max_in_flight=2)
    await director.deploy(manifest)
    vms_before = set(director.cpi.vms)
    specs_before = {r.id: r.apply_spec for r in await director.instances("dep")}
    task = await director.deploy(manifest)
    methods = [m for _, m, _ in sent_methods(await director.sent(task))]
    assert not {"drain", "stop", "apply", "start"} & set(methods), methods
    assert updating(await director.events(task)) == []
    assert set(director.cpi.vms) == vms_before
    assert {r.id: r.apply_spec for r in await director.instances("dep")} == specs_before
    assert "is up to date" in await director.output(task)


DYNAMIC_DRAIN = """#!/bin/bash
# -N on update/shutdown (come back in N s), 0 when asked for its status
if [ "$1" = job_check_status ]; then echo 0; else echo <%= p('dyn.first') %>; fi
"""
FIXED_DRAIN = """#!/bin/bash
echo <%= p('fixed.seconds') %>
"""


def drain_release(tmp: Path) -> Path:
    return write_release(tmp, "drains", {
        "dyn": {"templates": {"bin/drain": DYNAMIC_DRAIN, "config/dyn.conf": "v=<%= p('dyn.v') %>\n"},
                "properties": {"dyn.first": -2, "dyn.v": 1}},
        "fixed": {"templates": {"bin/drain": FIXED_DRAIN}, "properties": {"fixed.seconds": 5}},
    })


async def test_drain_of_two_jobs_waits_for_each_on_its_own(director: Director, tmp_path: Path) -> None:
    """dyn answers -2 then 0, fixed answers 5: the agent runs each script on its own, so the drain takes about
    5 s (not 7), and the director has nothing to poll."""
    await director.upload_release(drain_release(tmp_path))
    await director.deploy(dummy_manifest(release="drains", jobs=["dyn", "fixed"]))
    task = await director.deploy(dummy_manifest(release="drains", jobs=["dyn", "fixed"],
                                                properties={"dyn": {"v": 2}}), timeout=30)
    debug = await director.output(task)
    took = (debug_time(debug, ": stop") - debug_time(debug, ": drain update")).total_seconds()
    assert 4.8 <= took < 6.8, f"drain took {took:.1f}s: expected ~5 s (each job waited for on its own), not 7"
    drains = [a for _, m, a in sent_methods(await director.sent(task)) if m == "drain"]
    assert [a[0] for a in drains] == ["update"], drains
    vm = await director.vm_of((await director.instances("dep"))[0])
    agent_log = director.cpi.agent_log_text(vm.cid)
    assert "fixed/bin/drain job_changed hash_changed" in agent_log
    assert "dyn/bin/drain job_check_status hash_unchanged" in agent_log


async def test_dynamic_drain_on_scale_down_polls_drain_status(director: Director, tmp_path: Path) -> None:
    await director.upload_release(drain_release(tmp_path))
    props = {"dyn": {"first": -1}}
    await director.deploy(dummy_manifest(instances=2, max_in_flight=2, release="drains", jobs=["dyn"],
                                         properties=props))
    rows = await director.instances("dep")
    task = await director.deploy(dummy_manifest(instances=1, release="drains", jobs=["dyn"], properties=props))
    after = await director.instances("dep")
    assert len(after) == 1
    gone = next(r for r in rows if r.id not in {a.id for a in after})
    assert gone.vm_cid not in director.cpi.vms
    to_gone = [(m, a) for s, m, a in sent_methods(await director.sent(task)) if s == f"agent.{gone.agent_id}"]
    drains = [a for m, a in to_gone if m == "drain"]
    assert drains[:2] == [["shutdown"], ["status"]], to_gone
    methods = [m for m, _ in to_gone]
    assert methods.index("stop") > max(i for i, m in enumerate(methods) if m == "drain")
    assert "dynamic drain, checking again in 1s" in await director.output(task)
