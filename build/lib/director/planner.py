"""The planner: a manifest and the deployment's current state in, the changes out. Pure: no I/O, no clock,
no randomness (new instance ids come from the ``new_id`` it is given), so every rule here is unit-tested on
plain values.

    desired_instances()   which instances the manifest wants, their properties, networks, IPs and apply spec
    changes()             for each, what must happen and why: create, update (with reasons), recreate,
                          unchanged, plus its persistent-disk change; and the instances to delete
    update_batches()      instance groups in update order (neighbours with ``serial: false`` together)

The deploy task executes the plan (director/deploy.py); rendering and compiling, which need Ruby and agents,
happen between the two steps and fill in the apply spec's hashes and packages."""
from __future__ import annotations

import copy
import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boshlab.contracts import ApplySpec, BlobRef, JobSpec, NetworkSpec
from boshlab.properties import merge_properties

from .manifest import InstanceGroup, Manifest, Subnet
from .naming import instance_label
from .store import DiskRow, InstanceRow, NetworkAddress, ReleaseJobRow

ACTIONS = ("start", "stop", "restart", "recreate")
DOCKER_DNS = "127.0.0.11"


class PlanError(ValueError):
    """The manifest cannot be deployed onto the current state (e.g. no free IP): nothing was changed."""


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def netmask(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask) if prefix else ""


def update_batches(m: Manifest) -> list[list[InstanceGroup]]:
    """Groups one after another; neighbouring groups with ``serial: false`` form one batch that updates
    in parallel (BOSH's multi_instance_group_updater)."""
    batches: list[list[InstanceGroup]] = []
    parallel_open = False
    for g in m.groups:
        serial = (g.update or m.update).serial
        if not serial and parallel_open:
            batches[-1].append(g)
        else:
            batches.append([g])
        parallel_open = not serial
    return batches


def assign_ips(subnet: Subnet, wanted: list[tuple[str, str | None, str | None]],
               taken: dict[str, str]) -> dict[str, str]:
    """IPs on one manual network. ``wanted``: (instance id, static IP or None, current IP or None), in
    instance order. ``taken``: IP -> who holds it outside this deployment. An instance keeps its current
    dynamic IP while it is still free; others get the lowest free address of the dynamic pool."""
    out: dict[str, str] = {}
    claimed: set[str] = set()
    for iid, static, _ in wanted:
        if static is not None:
            if static in taken:
                raise PlanError(f"static IP {static} of {subnet.range} is already used by {taken[static]}")
            out[iid] = static
            claimed.add(static)
    pool = [str(a) for a in subnet.dynamic_pool()]
    pool_set = set(pool)
    for iid, static, current in wanted:
        if static is None and current and current in pool_set and current not in taken and current not in claimed:
            out[iid] = current
            claimed.add(current)
    free = (a for a in pool if a not in taken and a not in claimed)
    for iid, _static, _ in wanted:
        if iid not in out:
            ip = next(free, None)
            if ip is None:
                raise PlanError(f"network {subnet.range} has no free IP left for instance {iid}")
            out[iid] = ip
            claimed.add(ip)
    return out


def bind_properties(m: Manifest, g: InstanceGroup, jobs: dict[str, ReleaseJobRow]) -> dict[str, Any]:
    """Each job's properties (job.MF defaults under the manifest's values), merged into the instance's."""
    group_props = deep_merge(m.properties, g.properties)
    out: dict[str, Any] = {}
    for ref in g.jobs:
        declared = jobs[ref.name].spec.get("properties") or {}
        out = deep_merge(out, merge_properties(declared, ref.properties if ref.properties is not None else group_props))
    return out


@dataclass(frozen=True)
class VMAddress:
    """Where the CPI put a VM on the lab's own network."""
    ip: str
    prefix_len: int
    gateway: str


def network_spec(m: Manifest, g: InstanceGroup, vm: VMAddress | None, ips: dict[str, str]) -> dict[str, NetworkSpec]:
    """Each of the group's networks as the agent sees it: a manual network with a subnet has its own IP,
    netmask and gateway; the others have the VM's address on the lab's network (the CPI picks it)."""
    out: dict[str, NetworkSpec] = {}
    for i, name in enumerate(g.networks):
        net = m.networks[name]
        subnet: Subnet | None = net.get("subnet")
        n: NetworkSpec = {"type": net["type"], "cloud_properties": net["cloud_properties"], "dns": [DOCKER_DNS]}
        if subnet is not None and name in ips:
            n["ip"], n["netmask"], n["gateway"] = ips[name], str(subnet.range.netmask), str(subnet.gateway)
            if subnet.dns:
                n["dns"] = subnet.dns + [DOCKER_DNS]
        elif vm is not None:
            n["ip"], n["netmask"], n["gateway"] = vm.ip, netmask(vm.prefix_len), vm.gateway
        else:
            n["ip"], n["netmask"], n["gateway"] = "127.0.0.1", "255.255.255.255", ""
        if i == 0:
            n["default"] = ["dns", "gateway"]
        out[name] = n
    return out


def runtime_packages(g: InstanceGroup, jobs: dict[str, ReleaseJobRow]) -> list[str]:
    names: list[str] = []
    for r in g.jobs:
        for p in jobs[r.name].spec.get("packages") or []:
            if p not in names:
                names.append(p)
    return names


def job_spec(g: InstanceGroup, jobs: dict[str, ReleaseJobRow]) -> JobSpec:
    first = jobs[g.jobs[0].name]
    templates: list[BlobRef] = [{"name": jobs[r.name].name, "version": jobs[r.name].version,
                                 "sha1": jobs[r.name].sha1, "blobstore_id": jobs[r.name].blobstore_id} for r in g.jobs]
    return {"name": g.name, "release": first.release, "templates": templates, "template": first.name,
            "version": first.version, "sha1": first.sha1, "blobstore_id": first.blobstore_id}


def apply_spec(m: Manifest, g: InstanceGroup, index: int, instance_id: str, jobs: dict[str, ReleaseJobRow],
               stemcell: tuple[str, str], networks: dict[str, NetworkSpec], properties: dict[str, Any]) -> ApplySpec:
    """The 2013 apply spec (protocol.md §9) before rendering (hashes) and compiling (packages)."""
    first = jobs[g.jobs[0].name]
    return {
        "deployment": m.name,
        "release": {"name": first.release, "version": first.release_version},
        "job": job_spec(g, jobs),
        "index": index,
        "id": instance_id,
        "name": g.name,
        "networks": networks,
        "resource_pool": {"name": g.vm_type, "cloud_properties": g.cloud_properties,
                          "stemcell": {"name": stemcell[0], "version": stemcell[1]}},
        "packages": {},
        "persistent_disk": g.persistent_disk,
        "configuration_hash": None,
        "properties": properties,
        "template_hashes": {},
    }


@dataclass
class DesiredInstance:
    """One instance the manifest wants, with what it has now (``row``) and what it is to get (``spec``)."""
    group: InstanceGroup
    index: int
    id: str
    row: InstanceRow | None
    desired_state: str = "started"
    action: str | None = None             # start | stop | restart | recreate, from a lifecycle command
    ips: dict[str, str] = field(default_factory=dict)   # manual network (with a subnet) -> IP
    recreate_reasons: list[str] = field(default_factory=list)
    spec: ApplySpec = field(default_factory=lambda: ApplySpec())
    vm_fresh: bool = False                # its VM was made by this task

    @property
    def label(self) -> str:
        return instance_label(self.group.name, self.id, self.index)

    @property
    def has_vm(self) -> bool:
        return self.row is not None and self.row.has_vm

    def addresses(self, m: Manifest) -> dict[str, NetworkAddress]:
        return {n: NetworkAddress(ip, str(m.networks[n]["subnet"].range)) for n, ip in self.ips.items()}


@dataclass(frozen=True)
class CurrentState:
    """What the deployment has now, as the planner needs it."""
    instances: list[InstanceRow]
    vm_networks: dict[str, dict[str, NetworkSpec]] = field(default_factory=dict)   # instance id -> networks it runs with
    ips_taken: dict[str, dict[str, str]] = field(default_factory=dict)   # subnet range -> IP -> holder elsewhere


def desired_instances(m: Manifest, jobs: dict[str, ReleaseJobRow], current: CurrentState, stemcell: tuple[str, str],
                      *, actions: dict[str, str] | None = None, only: set[str] | None = None,
                      new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> list[DesiredInstance]:
    """Every instance the manifest wants (or just ``only`` these ids), in group order, with its apply spec
    bound (properties, networks) but not rendered."""
    by_key = {(r.group, r.index): r for r in current.instances}
    plan: list[DesiredInstance] = []
    for g in m.groups:
        for idx in range(g.instances):
            row = by_key.get((g.name, idx))
            inst = DesiredInstance(g, idx, row.id if row else new_id(), row)
            if only is not None and inst.id not in only:
                continue
            inst.action = (actions or {}).get(inst.id)
            if inst.action == "stop":
                inst.desired_state = "stopped"
            elif inst.action in ("start", "restart", "recreate"):
                inst.desired_state = "started"
            elif row is not None:
                inst.desired_state = row.state or "started"
            if inst.action == "recreate":
                inst.recreate_reasons.append("recreate requested")
            plan.append(inst)
    _assign_manual_ips(m, plan, current)
    for inst in plan:
        nets = None
        if inst.has_vm and not inst.recreate_reasons:
            nets = current.vm_networks.get(inst.id)
            if nets is not None and set(nets) != set(inst.group.networks):
                inst.recreate_reasons.append(f"networks change {sorted(nets)} -> {sorted(inst.group.networks)}")
                nets = None
        inst.spec = apply_spec(m, inst.group, inst.index, inst.id, jobs, stemcell,
                               nets or network_spec(m, inst.group, None, inst.ips), bind_properties(m, inst.group, jobs))
    return plan


def _assign_manual_ips(m: Manifest, plan: list[DesiredInstance], current: CurrentState) -> None:
    for name, net in m.networks.items():
        subnet: Subnet | None = net.get("subnet")
        if subnet is None:
            continue
        on_net = [i for i in plan if name in i.group.networks]
        if not on_net:
            continue
        wanted: list[tuple[str, str | None, str | None]] = []
        for inst in on_net:
            have = inst.row.networks.get(name) if inst.row else None
            cur_ip = have.ip if have is not None and have.range == str(subnet.range) else None
            statics = inst.group.static_ips.get(name)
            wanted.append((inst.id, statics[inst.index] if statics else None, cur_ip))
        rng = str(subnet.range)
        planned = {i.id for i in plan}
        # Taken: addresses held outside the deployment, and by its instances this plan does not cover (ones
        # a scale-down deletes only after the new VMs exist, ones a lifecycle command leaves alone).
        taken = dict(current.ips_taken.get(rng, {}))
        taken.update({a.ip: r.label for r in current.instances if r.id not in planned
                      for a in r.networks.values() if a.range == rng})
        got = assign_ips(subnet, wanted, taken)
        for inst, (_, _, cur_ip) in zip(on_net, wanted, strict=True):
            inst.ips[name] = got[inst.id]
            if inst.has_vm and cur_ip != got[inst.id]:
                inst.recreate_reasons.append(f"IP on network '{name}' changes {cur_ip or '-'} -> {got[inst.id]}")


def disk_change(have: DiskRow | None, want: int) -> str | None:
    """None, 'create' (0 -> N), 'resize' (N -> M) or 'orphan' (N -> 0)."""
    if have is None:
        return "create" if want > 0 else None
    if want == 0:
        return "orphan"
    return "resize" if have.size != want else None


@dataclass(frozen=True)
class Change:
    """What happens to one instance and why (the deploy's plan, shown in the task log)."""
    instance: DesiredInstance
    kind: str                       # create | recreate | update | unchanged
    reasons: tuple[str, ...] = ()
    disk: str | None = None         # create | resize | orphan

    @property
    def touches(self) -> bool:
        return self.kind != "unchanged"


def spec_differences(current: ApplySpec | None, new: ApplySpec) -> list[str]:
    if current is None:
        return ["never applied"]
    out = []
    if current.get("configuration_hash") != new.get("configuration_hash"):
        out.append("configuration changed")
    if current.get("packages") != new.get("packages"):
        out.append("packages changed")
    if current.get("job") != new.get("job"):
        out.append("jobs changed")
    if current.get("persistent_disk") != new.get("persistent_disk"):
        out.append(f"persistent_disk {current.get('persistent_disk')} -> {new.get('persistent_disk')}")
    return out


def change_for(inst: DesiredInstance, disk: DiskRow | None) -> Change:
    """The change one instance needs, once its spec is rendered and its packages compiled."""
    dchange = disk_change(disk, inst.group.persistent_disk)
    if not inst.has_vm:
        return Change(inst, "create", ("no VM",), dchange)
    if inst.recreate_reasons:
        return Change(inst, "recreate", tuple(inst.recreate_reasons), dchange)
    row = inst.row
    assert row is not None
    reasons = []
    if row.dirty:
        reasons.append("its last update did not finish")
    reasons += spec_differences(row.apply_spec, inst.spec)
    if inst.action in ("restart", "start", "stop") and inst.action is not None:
        reasons.append(f"{inst.action} requested")
    elif (row.state or "started") != inst.desired_state:
        reasons.append(f"state {row.state} -> {inst.desired_state}")
    if dchange is not None and not any(r.startswith("persistent_disk") for r in reasons):
        reasons.append(f"disk {dchange}")
    return Change(inst, "update" if reasons else "unchanged", tuple(reasons), dchange)


def needs_apply(inst: DesiredInstance) -> bool:
    """Whether the agent must get ``apply`` (a new VM, an unfinished update, or a different spec)."""
    row = inst.row
    if row is None or row.dirty or row.apply_spec is None:
        return True
    return bool(spec_differences(row.apply_spec, inst.spec))


def unneeded(m: Manifest, current: list[InstanceRow]) -> list[InstanceRow]:
    """Instances beyond a group's count, or of groups no longer in the manifest."""
    wanted = {(g.name, i) for g in m.groups for i in range(g.instances)}
    return [r for r in current if (r.group, r.index) not in wanted]
