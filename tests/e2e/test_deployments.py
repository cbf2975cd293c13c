"""Issue 4 end to end, on deployments of the light dummy release (real Docker, NATS, monit): several groups,
canaries and max_in_flight, an update that touches one group only, a failing canary, lifecycle verbs, static
IPs, invalid manifests, --json and exit codes. Tests run in file order and share the `two-groups` deployment."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Lab, run
from .deployments_helpers import (
    by_name,
    cli,
    events,
    free_subnet,
    group,
    instances,
    manifest,
    methods_by_agent,
    post_deploy,
    sent,
    task_done_id,
    vm_file,
    wait_for,
)

pytestmark = pytest.mark.e2e

DEP = "two-groups"


def two_groups(alpha: str = "alpha-v1", beta: str = "beta-v1", beta_jobs: tuple[str, ...] = ("dummy",),
               update: dict[str, Any] | None = None) -> str:
    return manifest(DEP, [group("alpha", 3, alpha), group("beta", 3, beta, beta_jobs)], update)


def in_flight_peak(evs: list[dict[str, Any]]) -> int:
    running = peak = 0
    for e in evs:
        running += {"started": 1, "finished": -1, "failed": -1}[e["state"]]
        peak = max(peak, running)
    return peak


def test_two_groups_canary_then_max_in_flight(lab: Lab, dummy_release: str) -> None:
    task = lab.wait_task(post_deploy(lab, two_groups()))
    assert task["state"] == "done", task
    evs = events(lab, task["id"])
    creating = [e for e in evs if e["stage"] == "Creating missing vms"]
    assert len(creating) == 12
    assert [e["state"] for e in creating[:6]] == ["started"] * 6, "missing VMs are created in parallel"
    upd = [e for e in evs if e["stage"] == "Updating instance"]
    alpha = [e for e in upd if e["tags"] == ["alpha"]]
    beta = [e for e in upd if e["tags"] == ["beta"]]
    assert len(alpha) == len(beta) == 6
    assert upd.index(alpha[-1]) < upd.index(beta[0]), "groups are updated one after the other"
    for g in (alpha, beta):
        assert g[0]["state"] == "started" and g[0]["task"].endswith("(canary)")
        assert g[1] == {**g[1], "task": g[0]["task"], "state": "finished"}, "the canary finishes before any other starts"
        assert not any("(canary)" in e["task"] for e in g[2:])
        assert in_flight_peak(g[:2]) == 1 and in_flight_peak(g[2:]) == 2   # max_in_flight 2 after 1 canary
        assert all(e["total"] == 3 for e in g)
    rows = instances(lab, DEP)
    assert len(rows) == 6 and all(r["process_state"] == "running" for r in rows), rows
    by_agent = methods_by_agent(lab, task["id"])
    for r in rows:   # (a compilation VM's agent got compile_package when the package was not compiled yet)
        assert by_agent[r["agent_id"]] == ["drain", "stop", "apply", "start"], (r["instance"], by_agent)
    cid = by_name(rows)["beta/2"]["vm_cid"]
    assert vm_file(lab, cid, "/var/vcap/jobs/dummy/config/dummy.conf") == "message=beta-v1\nindex=2\n"


def test_property_change_touching_one_group_updates_only_it(lab: Lab) -> None:
    before = by_name(instances(lab, DEP))
    task = lab.wait_task(post_deploy(lab, two_groups(alpha="alpha-v2")))
    assert task["state"] == "done", task
    upd = [e for e in events(lab, task["id"]) if e["stage"] == "Updating instance"]
    assert {tuple(e["tags"]) for e in upd} == {("alpha",)} and len(upd) == 6
    after = by_name(instances(lab, DEP))
    alpha_agents = {before[f"alpha/{i}"]["agent_id"] for i in range(3)}
    touched = methods_by_agent(lab, task["id"])
    assert set(touched) == alpha_agents, touched
    for name, row in after.items():
        assert row["vm_cid"] == before[name]["vm_cid"], "updated in place"
        changed = row["configuration_hash"] != before[name]["configuration_hash"]
        assert changed == name.startswith("alpha"), name
    assert "message=alpha-v2" in vm_file(lab, after["alpha/0"]["vm_cid"], "/var/vcap/jobs/dummy/config/dummy.conf")
    again = lab.wait_task(post_deploy(lab, two_groups(alpha="alpha-v2")))
    assert again["state"] == "done"
    assert not [e for e in events(lab, again["id"]) if e["stage"] == "Updating instance"], "nothing changed: nothing touched"
    assert not methods_by_agent(lab, again["id"])


def test_a_failing_canary_stops_the_deploy_and_the_rest_keep_the_old_version(lab: Lab) -> None:
    before = by_name(instances(lab, DEP))
    bad = two_groups(alpha="alpha-v2", beta="beta-v2", beta_jobs=("dummy", "never-running"),
                     update={"canary_watch_time": "500-3000"})
    task = lab.wait_task(post_deploy(lab, bad))
    assert task["state"] == "error", task
    assert "is not running after update" in task["result"] and "never-running" in task["result"], task["result"]
    upd = [e for e in events(lab, task["id"]) if e["stage"] == "Updating instance"]
    assert [(e["tags"], e["state"]) for e in upd] == [(["beta"], "started"), (["beta"], "failed")], upd
    assert upd[0]["task"].endswith("(canary)") and "beta/" in upd[0]["task"] and "(0)" in upd[0]["task"]
    after = by_name(instances(lab, DEP))
    for name in ("beta/1", "beta/2", "alpha/0", "alpha/1", "alpha/2"):
        assert after[name]["configuration_hash"] == before[name]["configuration_hash"], name
        assert after[name]["process_state"] == "running", after[name]
        conf = vm_file(lab, after[name]["vm_cid"], "/var/vcap/jobs/dummy/config/dummy.conf")
        assert "v2" not in conf or name.startswith("alpha"), conf
    assert not run(["docker", "exec", after["beta/1"]["vm_cid"], "test", "-e", "/var/vcap/jobs/never-running"],
                   check=False).returncode == 0
    # The deployment can be fixed by deploying a good manifest: only the failed canary is touched.
    fixed = lab.wait_task(post_deploy(lab, two_groups(alpha="alpha-v2")))
    assert fixed["state"] == "done", fixed
    upd = [e for e in events(lab, fixed["id"]) if e["stage"] == "Updating instance" and e["state"] == "started"]
    assert [e["task"].split(" ")[0] for e in upd] == [f"beta/{before['beta/0']['id']}"]
    assert by_name(instances(lab, DEP))["beta/0"]["configuration_hash"] == before["beta/0"]["configuration_hash"]


def test_stop_start_restart_one_instance_or_a_group(lab: Lab) -> None:
    rows = by_name(instances(lab, DEP))
    b1 = rows["beta/1"]
    p = cli(lab, "stop", "-d", DEP, "beta/1")
    assert p.returncode == 0, p.stderr
    task_id = task_done_id(p.stderr)
    assert methods_by_agent(lab, task_id) == {b1["agent_id"]: ["drain", "stop"]}
    drain = next(a for _, m, a in sent(lab, task_id) if m == "drain")
    assert drain == ["shutdown"]
    wait_for("beta/1 stopped", lambda: by_name(instances(lab, DEP))["beta/1"]["process_state"] == "stopped", 15)
    now = by_name(instances(lab, DEP))
    assert now["beta/1"]["state"] == "stopped"
    assert all(r["process_state"] == "running" for n, r in now.items() if n != "beta/1")
    # A deploy keeps a stopped instance stopped.
    t = lab.wait_task(post_deploy(lab, two_groups(alpha="alpha-v2")))
    assert t["state"] == "done" and not methods_by_agent(lab, t["id"])
    p = cli(lab, "start", "-d", DEP, f"beta/{b1['id']}")          # by uuid this time
    assert p.returncode == 0, p.stderr
    task_id = task_done_id(p.stderr)
    assert methods_by_agent(lab, task_id) == {b1["agent_id"]: ["start"]}
    wait_for("beta/1 running", lambda: by_name(instances(lab, DEP))["beta/1"]["process_state"] == "running", 15)
    p = cli(lab, "restart", "-d", DEP, "alpha")
    assert p.returncode == 0, p.stderr
    task_id = task_done_id(p.stderr)
    touched = methods_by_agent(lab, task_id)
    assert set(touched) == {rows[f"alpha/{i}"]["agent_id"] for i in range(3)}
    assert all(m == ["drain", "stop", "start"] for m in touched.values()), touched
    upd = [e for e in events(lab, task_id) if e["stage"] == "Updating instance"]
    assert upd[0]["task"].endswith("(canary)") and in_flight_peak(upd[2:]) == 2


def test_listings_take_json_and_exit_codes_are_stable(lab: Lab) -> None:
    p = cli(lab, "instances", "-d", DEP, "--ps", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert len(rows) == 6 and all(r["processes"] and r["processes"][0]["name"] == "dummy" for r in rows)
    assert all(r["processes"][0]["state"] == "running" for r in rows)
    p = cli(lab, "--json", "vms", "-d", DEP, "--vitals")
    vms = json.loads(p.stdout)
    assert len(vms) == 6 and all(v["vitals"] and "load" in v["vitals"] and "mem" in v["vitals"] for v in vms)
    p = cli(lab, "instances", "-d", DEP, "--vitals")
    assert p.returncode == 0 and "Load (1m, 5m, 15m)" in p.stdout and "Memory Usage" in p.stdout
    for args in (["deployments"], ["releases"], ["tasks", "--recent", "5"], ["cck", "--report", "-d", DEP]):
        p = cli(lab, *args, "--json")
        assert p.returncode == 0, (args, p.stderr)
        json.loads(p.stdout)
    deps = {d["name"]: d for d in json.loads(cli(lab, "deployments", "--json").stdout)}
    assert deps[DEP]["instances"] == 6 and deps[DEP]["releases"] == [{"name": "dummy", "version": "1"}]
    rels = {r["name"]: r for r in json.loads(cli(lab, "releases", "--json").stdout)}
    assert rels["dummy"]["release_versions"][0]["currently_deployed"]
    assert cli(lab, "instances", "-d", "no-such-deployment").returncode == 4
    assert cli(lab, "task", "999999").returncode == 4
    assert cli(lab, "stop", "-d", DEP, "gamma").returncode == 4
    assert cli(lab, "deploy", "/no/such/manifest.yml").returncode == 2
    assert cli(lab, "cancel-task", "1").returncode == 5
    p = subprocess_unreachable()
    assert p.returncode == 3 and "cannot reach the director" in p.stderr
    p = cli(lab, "delete-release", "dummy")
    assert p.returncode == 1 and "in use by deployment(s)" in p.stderr and DEP in p.stderr


def subprocess_unreachable() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "-e", "http://127.0.0.1:9", "deployments"],
                          capture_output=True, text=True, timeout=60)


def _unknown_job(m: dict[str, Any]) -> None:
    m["instance_groups"][0]["jobs"][0]["name"] = "no-such-job"


def _unknown_release(m: dict[str, Any]) -> None:
    m["releases"] = [{"name": "no-such-release", "version": "latest"}]
    for g in m["instance_groups"]:
        for j in g["jobs"]:
            j["release"] = "no-such-release"


def _missing_property(m: dict[str, Any]) -> None:
    m["instance_groups"][1]["jobs"].append({"name": "needs-property", "release": "dummy"})


def _bad_update(m: dict[str, Any]) -> None:
    m["update"]["max_in_flight"] = 0


@pytest.mark.parametrize("change, problem", [
    (_unknown_job, "uses job 'no-such-job'"),
    (_unknown_release, "Release 'no-such-release' doesn't exist"),
    (_missing_property, "needy.value"),
    (_bad_update, "max_in_flight must be"),
])
def test_invalid_manifests_fail_before_anything_changes(lab: Lab, change: Callable[[dict[str, Any]], None], problem: str) -> None:
    before = by_name(instances(lab, DEP))
    doc = yaml.safe_load(two_groups(alpha="alpha-v3"))
    change(doc)
    task = lab.wait_task(post_deploy(lab, yaml.safe_dump(doc)))
    assert task["state"] == "error" and problem in task["result"], task
    assert not methods_by_agent(lab, task["id"])
    assert not [e for e in events(lab, task["id"]) if e["stage"] in ("Updating instance", "Creating missing vms")]
    after = by_name(instances(lab, DEP))
    assert {n: r["configuration_hash"] for n, r in after.items()} == {n: r["configuration_hash"] for n, r in before.items()}


def test_static_and_dynamic_ips_on_a_manual_network(lab: Lab, dummy_release: str) -> None:
    net = free_subnet()
    hosts = list(net.hosts())
    gw, static = hosts[0], [str(hosts[9]), str(hosts[10])]
    networks = [{"name": "lab", "type": "manual", "subnets": [{
        "range": str(net), "gateway": str(gw), "reserved": [f"{hosts[1]} - {hosts[4]}"],
        "static": [f"{hosts[9]} - {hosts[19]}"]}]}]
    groups = [group("web", 2, networks=[{"name": "lab", "static_ips": static}]),
              group("worker", 1, networks=[{"name": "lab"}])]
    task = lab.wait_task(post_deploy(lab, manifest("static-ips", groups, networks=networks)))
    assert task["state"] == "done", task
    rows = by_name(instances(lab, "static-ips"))
    assert rows["web/0"]["ips"] == [static[0]] and rows["web/1"]["ips"] == [static[1]]
    assert rows["worker/0"]["ips"] == [str(hosts[5])], "first dynamic address: after the gateway and reserved ones"
    addr = run(["docker", "exec", rows["web/1"]["vm_cid"], "ip", "-4", "-o", "addr"]).stdout
    assert f"inet {static[1]}/24" in addr
    settings = json.loads(vm_file(lab, rows["web/1"]["vm_cid"], "/var/vcap/bosh/settings.json"))
    assert settings["networks"]["lab"]["ip"] == static[1] and settings["networks"]["lab"]["gateway"] == str(gw)
    docker_net = f"{lab.project}-net-{net.network_address}-24"
    assert run(["docker", "network", "inspect", docker_net]).returncode == 0
    p = cli(lab, "delete-deployment", "-d", "static-ips")
    assert p.returncode == 0, p.stderr
    assert run(["docker", "network", "inspect", docker_net], check=False).returncode != 0, "its network is gone"
    assert not run(["docker", "ps", "-aq", "--filter", "label=io.bosh-lab.deployment=static-ips"]).stdout.strip()


def test_delete_release_version(lab: Lab, dummy_release: str, tmp_path: Path) -> None:
    from boshlab.release import create_release

    from .conftest import ROOT
    create_release(ROOT / "tests" / "assets" / "releases" / "dummy", tmp_path / "d2.tgz", version="2")
    status, body, _ = lab.request("POST", "/releases", (tmp_path / "d2.tgz").read_bytes(), content_type="application/x-compressed")
    assert status == 202 and lab.wait_task(json.loads(body)["id"])["state"] == "done"
    versions: Callable[[], list[str]] = lambda: [v["version"] for r in lab.get("/releases") if r["name"] == "dummy" for v in r["release_versions"]]  # noqa: E731
    assert versions() == ["1", "2"]
    p = cli(lab, "delete-release", "dummy/2")
    assert p.returncode == 0, p.stderr
    assert versions() == ["1"]
    assert cli(lab, "delete-release", "dummy/7").returncode == 1
    assert cli(lab, "delete-release", "no-such-release").returncode == 4
