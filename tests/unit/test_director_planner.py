"""The planner (director/planner.py) on plain values, no I/O: which instances a manifest wants and with which
ids, states, IPs and apply specs (``desired_instances``); what each one needs and why (``change_for``); disk
changes; instances to delete (``unneeded``); the order of instance groups (``update_batches``).

Jobs are the dummy release's (tests/assets/releases/dummy), read once as ReleaseJobRow values."""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from boshlab.contracts import NetworkSpec
from director.manifest import Manifest, parse_manifest
from director.planner import (
    Change,
    CurrentState,
    DesiredInstance,
    PlanError,
    change_for,
    desired_instances,
    disk_change,
    needs_apply,
    unneeded,
    update_batches,
)
from director.store import DiskRow, InstanceRow, NetworkAddress, ReleaseJobRow

DUMMY = Path(__file__).resolve().parents[1] / "assets" / "releases" / "dummy"


def job_row(name: str) -> ReleaseJobRow:
    spec: dict[str, Any] = yaml.safe_load((DUMMY / "jobs" / name / "spec").read_text())
    return ReleaseJobRow("dummy", "1", name, f"v-{name}", f"fp-{name}", f"sha-{name}", f"blob-{name}", spec,
                         "check process x", {})


JOBS = {name: job_row(name) for name in ("dummy", "never-running")}
STEMCELL = ("bosh-lab-stemcell", "1.0")
DYNAMIC = "- {name: default, type: dynamic}\n"
LAB = """- name: lab
  type: manual
  subnets:
  - range: 10.250.7.0/24
    gateway: 10.250.7.1
    reserved: [10.250.7.2 - 10.250.7.9]
    static: [10.250.7.10 - 10.250.7.19]
"""
LAB_RANGE = "10.250.7.0/24"


def manifest(groups: str, networks: str = DYNAMIC, extra: str = "") -> Manifest:
    return parse_manifest("name: d\nreleases: [{name: dummy}]\n" + extra + "networks:\n" + networks +
                          "instance_groups:\n" + groups)


def new_ids() -> Callable[[], str]:
    n = itertools.count(1)
    return lambda: f"new-{next(n)}"


def row(group: str, index: int, iid: str | None = None, *, vm: bool = True, state: str = "started",
        networks: dict[str, NetworkAddress] | None = None, dirty: bool = False) -> InstanceRow:
    iid = iid or f"old-{group}-{index}"
    return InstanceRow(iid, "d", group, index, f"agent-{iid}" if vm else None, f"cid-{iid}" if vm else None,
                       f"vm-{iid}" if vm else None, "172.18.0.5" if vm else None, None, state, networks or {}, dirty)


def plan(m: Manifest, rows: Iterable[InstanceRow] = (), *, vm_networks: dict[str, dict[str, NetworkSpec]] | None = None,
         taken: dict[str, dict[str, str]] | None = None, **kw: Any) -> list[DesiredInstance]:
    current = CurrentState(list(rows), vm_networks or {}, taken or {})
    return desired_instances(m, JOBS, current, STEMCELL, new_id=new_ids(), **kw)


def by_label(p: list[DesiredInstance]) -> dict[str, DesiredInstance]:
    return {f"{i.group.name}/{i.index}": i for i in p}


# --- desired_instances ------------------------------------------------------------------------------------


def test_new_instances_get_ids_from_new_id_in_group_order_and_a_bound_spec() -> None:
    m = manifest("- {name: web, instances: 2, jobs: [{name: dummy}], properties: {dummy: {message: hi}}}\n"
                 "- {name: worker, instances: 1, jobs: [{name: dummy}], persistent_disk: 10}\n")
    p = plan(m)
    assert [(i.group.name, i.index, i.id) for i in p] == [("web", 0, "new-1"), ("web", 1, "new-2"),
                                                          ("worker", 0, "new-3")]
    assert all(i.row is None and not i.has_vm and i.desired_state == "started" and i.action is None
               and not i.recreate_reasons for i in p)
    s = p[1].spec
    assert (s["deployment"], s["name"], s["index"], s["id"]) == ("d", "web", 1, "new-2")
    assert s["release"] == {"name": "dummy", "version": "1"}
    assert s["job"]["template"] == "dummy" and s["job"]["sha1"] == "sha-dummy"
    assert s["job"]["templates"] == [{"name": "dummy", "version": "v-dummy", "sha1": "sha-dummy",
                                      "blobstore_id": "blob-dummy"}]
    assert s["resource_pool"]["stemcell"] == {"name": "bosh-lab-stemcell", "version": "1.0"}
    # job.MF defaults under the manifest's values, per group
    assert s["properties"] == {"dummy": {"message": "hi", "drain_seconds": 0}}
    assert p[2].spec["properties"] == {"dummy": {"message": "hello", "drain_seconds": 0}}
    assert (s["persistent_disk"], p[2].spec["persistent_disk"]) == (0, 10)
    # not rendered, not compiled yet
    assert s["configuration_hash"] is None and s["packages"] == {} and s["template_hashes"] == {}
    # a dynamic network before the VM exists: a placeholder address, the default for dns and gateway
    assert s["networks"]["default"]["ip"] == "127.0.0.1"
    assert s["networks"]["default"]["default"] == ["dns", "gateway"]


def test_existing_instances_keep_their_ids_by_group_and_index() -> None:
    m = manifest("- {name: web, instances: 3, jobs: [{name: dummy}]}\n- {name: worker, instances: 1, jobs: [{name: dummy}]}\n")
    rows = [row("web", 0, "w0"), row("web", 2, "w2", state="stopped"), row("worker", 0, "k0"),
            row("gone", 1, "g1")]
    p = by_label(plan(m, rows))
    assert {k: i.id for k, i in p.items()} == {"web/0": "w0", "web/1": "new-1", "web/2": "w2", "worker/0": "k0"}
    assert p["web/0"].row is rows[0] and p["web/1"].row is None
    assert p["web/2"].desired_state == "stopped", "no action: an instance keeps the state it was left in"
    assert p["web/0"].spec["id"] == "w0"


@pytest.mark.parametrize("action, was, state, reasons", [
    ("stop", "started", "stopped", []),
    ("start", "stopped", "started", []),
    ("restart", "started", "started", []),
    ("restart", "stopped", "started", []),
    ("recreate", "stopped", "started", ["recreate requested"]),
])
def test_actions_set_the_desired_state(action: str, was: str, state: str, reasons: list[str]) -> None:
    m = manifest("- {name: web, instances: 2, jobs: [{name: dummy}]}\n")
    p = plan(m, [row("web", 0, "w0", state=was), row("web", 1, "w1", state=was)], actions={"w0": action})
    assert (p[0].action, p[0].desired_state, p[0].recreate_reasons) == (action, state, reasons)
    assert (p[1].action, p[1].desired_state, p[1].recreate_reasons) == (None, was, [])


def test_only_filters_the_instances() -> None:
    m = manifest("- {name: web, instances: 3, jobs: [{name: dummy}]}\n- {name: worker, instances: 1, jobs: [{name: dummy}]}\n")
    rows = [row("web", 0, "w0"), row("web", 1, "w1"), row("web", 2, "w2"), row("worker", 0, "k0")]
    assert [i.id for i in plan(m, rows, only={"w1", "k0"})] == ["w1", "k0"]
    assert plan(m, rows, only=set()) == []


def test_a_vm_on_other_networks_is_recreated() -> None:
    m = manifest("- {name: web, instances: 2, jobs: [{name: dummy}], networks: [{name: default}]}\n",
                 DYNAMIC + "- {name: other, type: dynamic}\n")
    running: NetworkSpec = {"type": "dynamic", "ip": "172.18.0.5", "netmask": "255.255.0.0", "gateway": "172.18.0.1",
                            "dns": ["127.0.0.11"], "default": ["dns", "gateway"], "cloud_properties": {}}
    p = plan(m, [row("web", 0, "w0"), row("web", 1, "w1")],
             vm_networks={"w0": {"other": running}, "w1": {"default": running}})
    assert p[0].recreate_reasons == ["networks change ['other'] -> ['default']"]
    assert p[0].spec["networks"]["default"]["ip"] == "127.0.0.1", "the new VM's networks, not the old ones"
    assert p[1].recreate_reasons == []
    assert p[1].spec["networks"] == {"default": running}, "an instance keeps the networks its VM runs with"


def test_manual_network_ips_lowest_free_and_kept() -> None:
    m = manifest("- {name: web, instances: 3, jobs: [{name: dummy}], networks: [{name: lab}]}\n", LAB)
    rows = [row("web", 1, "w1", networks={"lab": NetworkAddress("10.250.7.40", LAB_RANGE)})]
    p = by_label(plan(m, rows, taken={LAB_RANGE: {"10.250.7.20": "other/x"}}))
    assert {k: i.ips for k, i in p.items()} == {"web/0": {"lab": "10.250.7.21"}, "web/1": {"lab": "10.250.7.40"},
                                                "web/2": {"lab": "10.250.7.22"}}
    assert all(not i.recreate_reasons for i in p.values())
    net = p["web/0"].spec["networks"]["lab"]
    assert (net["ip"], net["netmask"], net["gateway"], net["type"]) == ("10.250.7.21", "255.255.255.0", "10.250.7.1",
                                                                        "manual")
    assert p["web/1"].addresses(m) == {"lab": NetworkAddress("10.250.7.40", LAB_RANGE)}


def test_an_ip_change_recreates_a_vm() -> None:
    m = manifest("- {name: web, instances: 3, jobs: [{name: dummy}], networks: [{name: lab, static_ips: "
                 "[10.250.7.10 - 10.250.7.12]}]}\n", LAB)
    rows = [row("web", 0, "w0", networks={"lab": NetworkAddress("10.250.7.10", LAB_RANGE)}),   # same: kept
            row("web", 1, "w1", networks={"lab": NetworkAddress("10.250.7.40", LAB_RANGE)}),   # dynamic -> static
            row("web", 2, "w2", vm=False, networks={"lab": NetworkAddress("10.250.7.41", LAB_RANGE)})]  # no VM
    p = plan(m, rows)
    assert [i.ips["lab"] for i in p] == ["10.250.7.10", "10.250.7.11", "10.250.7.12"]
    assert p[0].recreate_reasons == []
    assert p[1].recreate_reasons == ["IP on network 'lab' changes 10.250.7.40 -> 10.250.7.11"]
    assert p[2].recreate_reasons == [], "no VM: nothing to recreate, it is created"


def test_an_address_on_another_range_is_not_kept() -> None:
    m = manifest("- {name: web, instances: 1, jobs: [{name: dummy}], networks: [{name: lab}]}\n", LAB)
    p = plan(m, [row("web", 0, "w0", networks={"lab": NetworkAddress("10.250.8.40", "10.250.8.0/24")})])
    assert p[0].ips == {"lab": "10.250.7.20"}
    assert p[0].recreate_reasons == ["IP on network 'lab' changes - -> 10.250.7.20"]


def test_a_full_subnet_is_a_plan_error() -> None:
    small = "- {name: lab, type: manual, subnets: [{range: 10.250.9.0/29}]}\n"   # .2 - .6: 5 addresses
    m = manifest("- {name: web, instances: 6, jobs: [{name: dummy}], networks: [{name: lab}]}\n", small)
    with pytest.raises(PlanError, match="no free IP"):
        plan(m)
    m = manifest("- {name: web, instances: 5, jobs: [{name: dummy}], networks: [{name: lab}]}\n", small)
    with pytest.raises(PlanError, match="no free IP"):
        plan(m, taken={"10.250.9.0/29": {"10.250.9.4": "other/x"}})


# --- change_for ---------------------------------------------------------------------------------------------


def one(groups: str = "- {name: web, instances: 1, jobs: [{name: dummy}]}\n", **kw: Any) -> DesiredInstance:
    """The one instance of a one-instance plan, with a VM, applied with exactly the spec it is to get
    (after 'rendering': configuration_hash h1) unless a test changes one side."""
    inst = plan(manifest(groups), [row("web", 0, "w0", **kw)])[0]
    inst.spec["configuration_hash"] = "h1"
    assert inst.row is not None
    inst.row = replace(inst.row, apply_spec=copy.deepcopy(inst.spec))
    return inst


def disk(size: int) -> DiskRow:
    return DiskRow("disk-1", "d", "w0", "web/w0", size, False, 1.0, None)


def test_no_vm_is_create() -> None:
    inst = plan(manifest("- {name: web, instances: 1, jobs: [{name: dummy}], persistent_disk: 10}\n"))[0]
    c = change_for(inst, None)
    assert (c.kind, c.reasons, c.disk, c.touches) == ("create", ("no VM",), "create", True)
    gone = plan(manifest("- {name: web, instances: 1, jobs: [{name: dummy}]}\n"), [row("web", 0, vm=False)])[0]
    assert change_for(gone, None).kind == "create"


def test_recreate_with_its_reasons() -> None:
    inst = one()
    inst.recreate_reasons += ["recreate requested", "networks change ['a'] -> ['b']"]
    c = change_for(inst, disk(10))
    assert (c.kind, c.reasons, c.disk) == ("recreate", ("recreate requested", "networks change ['a'] -> ['b']"),
                                           "orphan")


def test_unchanged_when_nothing_differs() -> None:
    inst = one()
    c = change_for(inst, None)
    assert (c.kind, c.reasons, c.disk, c.touches) == ("unchanged", (), None, False)
    assert not needs_apply(inst)
    with_disk = one("- {name: web, instances: 1, jobs: [{name: dummy}], persistent_disk: 10}\n")
    assert change_for(with_disk, disk(10)).kind == "unchanged"


def test_update_reasons_from_the_spec() -> None:
    inst = one()
    inst.spec["configuration_hash"] = "h2"
    assert change_for(inst, None).reasons == ("configuration changed",)
    assert needs_apply(inst)

    inst = one()
    inst.spec["packages"] = {"dummy-pkg": {"name": "dummy-pkg", "version": "2", "sha1": "s", "blobstore_id": "b"}}
    assert change_for(inst, None).reasons == ("packages changed",)

    inst = one()
    inst.spec["job"]["sha1"] = "sha-new"
    assert change_for(inst, None).reasons == ("jobs changed",)

    inst = one()
    inst.spec["job"]["templates"].append({"name": "never-running", "version": "v", "sha1": "s", "blobstore_id": "b"})
    inst.spec["configuration_hash"] = "h3"
    c = change_for(inst, None)
    assert (c.kind, c.reasons) == ("update", ("configuration changed", "jobs changed"))

    inst = one()
    assert inst.row is not None and inst.row.apply_spec is not None
    inst.row = replace(inst.row, apply_spec=None)
    assert change_for(inst, None).reasons == ("never applied",)
    assert needs_apply(inst)


def test_persistent_disk_reasons() -> None:
    inst = one("- {name: web, instances: 1, jobs: [{name: dummy}], persistent_disk: 10}\n")
    assert inst.row is not None and inst.row.apply_spec is not None
    inst.row.apply_spec["persistent_disk"] = 0
    c = change_for(inst, None)
    assert (c.kind, c.reasons, c.disk) == ("update", ("persistent_disk 0 -> 10",), "create")
    # the spec says the size already but the disk is not there (a failed disk step): the disk change alone
    inst = one("- {name: web, instances: 1, jobs: [{name: dummy}], persistent_disk: 10}\n")
    c = change_for(inst, None)
    assert (c.kind, c.reasons, c.disk) == ("update", ("disk create",), "create")
    c = change_for(inst, disk(20))
    assert (c.kind, c.reasons, c.disk) == ("update", ("disk resize",), "resize")


def test_dirty_and_state_and_requested_actions() -> None:
    inst = one(dirty=True)
    assert change_for(inst, None).reasons == ("its last update did not finish",)
    assert needs_apply(inst)

    inst = one()
    inst.desired_state = "stopped"
    assert change_for(inst, None).reasons == ("state started -> stopped",)
    assert not needs_apply(inst), "a state change alone needs no apply"

    for action in ("restart", "start", "stop"):
        inst = plan(manifest("- {name: web, instances: 1, jobs: [{name: dummy}]}\n"), [row("web", 0, "w0")],
                    actions={"w0": action})[0]
        assert inst.row is not None
        inst.row = replace(inst.row, apply_spec=copy.deepcopy(inst.spec))
        c = change_for(inst, None)
        assert (c.kind, c.reasons) == ("update", (f"{action} requested",)), action

    inst = one(dirty=True)
    inst.spec["configuration_hash"] = "h2"
    inst.desired_state = "stopped"
    assert change_for(inst, disk(5)).reasons == ("its last update did not finish", "configuration changed",
                                                 "state started -> stopped", "disk orphan")


# --- disks, unneeded instances, batches --------------------------------------------------------------------


@pytest.mark.parametrize("have, want, change", [
    (None, 0, None), (None, 100, "create"), (100, 100, None), (100, 200, "resize"), (200, 100, "resize"),
    (100, 0, "orphan"),
])
def test_disk_change(have: int | None, want: int, change: str | None) -> None:
    assert disk_change(None if have is None else disk(have), want) == change


def test_unneeded_after_scale_down_and_removed_groups() -> None:
    m = manifest("- {name: web, instances: 1, jobs: [{name: dummy}]}\n- {name: idle, instances: 0, jobs: [{name: dummy}]}\n")
    rows = [row("web", 0), row("web", 1), row("web", 2), row("idle", 0), row("old", 0)]
    assert [(r.group, r.index) for r in unneeded(m, rows)] == [("web", 1), ("web", 2), ("idle", 0), ("old", 0)]
    assert unneeded(m, [row("web", 0)]) == []


def test_update_batches() -> None:
    def names(m: Manifest) -> list[list[str]]:
        return [[g.name for g in b] for b in update_batches(m)]
    groups = "".join(f"- {{name: {n}, jobs: [{{name: dummy}}]{s}}}\n" for n, s in
                     (("a", ""), ("b", ", update: {serial: false}"), ("c", ", update: {serial: false}"), ("d", "")))
    assert names(manifest(groups)) == [["a"], ["b", "c"], ["d"]]
    groups = "".join(f"- {{name: {n}, jobs: [{{name: dummy}}]{s}}}\n" for n, s in
                     (("a", ""), ("b", ""), ("c", ", update: {serial: true}"), ("d", "")))
    assert names(manifest(groups, extra="update: {serial: false}\n")) == [["a", "b"], ["c"], ["d"]]
    assert names(manifest("- {name: a, jobs: [{name: dummy}]}\n- {name: b, jobs: [{name: dummy}]}\n")) == [["a"], ["b"]]


def test_a_change_names_its_instance() -> None:
    inst = plan(manifest("- {name: web, instances: 1, jobs: [{name: dummy}]}\n"))[0]
    assert inst.label == "web/new-1 (0)"
    assert Change(inst, "unchanged").touches is False


def test_an_ip_held_by_an_instance_outside_the_plan_is_not_given_away() -> None:
    """A scale-down deletes web/2 only after new VMs exist, and a lifecycle command covers some instances:
    their addresses stay taken."""
    m = manifest("- {name: web, instances: 2, jobs: [{name: dummy}], networks: [{name: lab}]}\n"
                 "- {name: worker, instances: 1, jobs: [{name: dummy}], networks: [{name: lab}]}\n", LAB)
    rows = [row("web", i, f"w{i}", networks={"lab": NetworkAddress(f"10.250.7.{20 + i}", LAB_RANGE)})
            for i in range(3)]
    p = by_label(plan(m, rows))
    assert p["worker/0"].ips == {"lab": "10.250.7.23"}, "web/2 (to be deleted) still holds .22"
    only = by_label(plan(m, [rows[0]] + [row("web", 1, "w1")], only={"w1"}))
    assert only["web/1"].ips == {"lab": "10.250.7.21"}, "web/0, outside the plan, keeps .20"
