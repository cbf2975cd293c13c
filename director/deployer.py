"""Deploying a manifest: the 2013 update flow the deck shows, with today's wire details.

    parse + bind ─► render every template once (fail here, before anything changes)
      ─► compile missing packages on compilation VMs ─► create missing VMs in parallel (ping until ready)
      ─► instance groups one after another (neighbours with serial: false together); in each group the
         canaries first, then the rest max_in_flight at a time:
         drain ─► stop ─► apply ─► start ─► get_state until running (the watch schedule)

The same machinery runs the lifecycle commands (start, stop, restart, recreate of a deployment, a group or
one instance) on the stored manifest, as BOSH does: they are deploys with a target state for some instances.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from boshlab.erb import JobTemplates, TemplateError, render
from boshlab.properties import merge_properties

from .cpi import LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_ROLE, CPIError
from .diagnose import diagnose_agent_log, tail
from . import disks as pdisks
from .manifest import InstanceGroup, Manifest, ManifestError, Subnet, UpdateConfig, parse_manifest
from .nats_rpc import AgentClient, AgentError, RpcTimeout
from .releases import resolve_version
from .tasks import Task, TaskFailed

if TYPE_CHECKING:
    from .app import Director

ACTIONS = ("start", "stop", "restart", "recreate")
RENDER_CONCURRENCY = 4           # ruby processes at once
DIAGNOSE_AFTER = 3.0             # seconds of silence before the director looks into the VM


@dataclass
class ReleaseJob:
    release: str
    release_version: str
    name: str
    version: str
    sha1: str
    blobstore_id: str
    spec: dict[str, Any]
    monit: str
    templates: dict[str, str]


@dataclass
class PlannedInstance:
    group: InstanceGroup
    index: int
    id: str
    row: dict[str, Any] | None            # the existing instances row, if any
    properties: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    desired_state: str = "started"
    action: str | None = None             # start | stop | restart | recreate, from a lifecycle command
    ips: dict[str, str] = field(default_factory=dict)   # manual network (with a subnet) -> IP
    recreate: bool = False                # its VM must be made again (e.g. its IPs changed)
    vm_fresh: bool = False                # its VM was made by this task

    @property
    def label(self) -> str:
        """BOSH's instance name in task logs: ``group/uuid (index)``."""
        return f"{self.group.name}/{self.id} ({self.index})"

    @property
    def has_vm(self) -> bool:
        return bool(self.row and self.row.get("vm_cid"))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def configuration_hash(rendered: dict[str, dict[str, str]], jobs: dict[str, ReleaseJob]) -> tuple[str, dict[str, str]]:
    """BOSH's hashes: ``configuration_hash`` over the jobs sorted by name (monit, name, then each template's
    content and destination sorted by source); ``template_hashes[job]`` over monit then each template."""
    config = hashlib.sha1()
    per_job: dict[str, str] = {}
    for name in sorted(rendered):
        out = rendered[name]
        job = jobs[name]
        t = hashlib.sha1()
        config.update(out["monit"].encode())
        config.update(name.encode())
        t.update(out["monit"].encode())
        for src in sorted(job.spec["templates"]):
            config.update(out[src].encode())
            config.update(job.spec["templates"][src].encode())
            t.update(out[src].encode())
        per_job[name] = t.hexdigest()
    return config.hexdigest(), per_job


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
                raise TaskFailed(f"static IP {static} of {subnet.range} is already used by {taken[static]}")
            out[iid] = static
            claimed.add(static)
    pool = [str(a) for a in subnet.dynamic_pool()]
    pool_set = set(pool)
    for iid, static, current in wanted:
        if static is None and current and current in pool_set and current not in taken and current not in claimed:
            out[iid] = current
            claimed.add(current)
    free = (a for a in pool if a not in taken and a not in claimed)
    for iid, static, _ in wanted:
        if iid not in out:
            ip = next(free, None)
            if ip is None:
                raise TaskFailed(f"network {subnet.range} has no free IP left for instance {iid}")
            out[iid] = ip
            claimed.add(ip)
    return out


class Deployer:
    def __init__(self, director: "Director", task: Task) -> None:
        self.d = director
        self.task = task
        self.cfg = director.config
        self._render_sem = asyncio.Semaphore(RENDER_CONCURRENCY)
        self.manifest: Manifest | None = None
        self.jobs: dict[str, ReleaseJob] = {}
        self.docker_nets: dict[str, str] = {}     # manual network name -> Docker network
        self.skip_drain = False
        self.disk_attach: dict[str, list[str]] = {}   # instance id -> disks its next VM gets (director/disks.py)

    def agent(self, agent_id: str) -> AgentClient:
        return AgentClient(self.d.rpc, agent_id, timeout=self.cfg.rpc_timeout, poll_interval=self.cfg.poll_interval,
                           debug=self.task.debug)

    # --- planning ------------------------------------------------------------------------------------

    async def resolve_versions(self, m: Manifest, pinned: dict[str, str] | None = None) -> dict[str, str]:
        out = {}
        for name, v in m.releases.items():
            want = (pinned or {}).get(name) or v
            out[name] = await resolve_version(self.d.db, name, want)
        return out

    async def load_jobs(self, m: Manifest, versions: dict[str, str]) -> dict[str, ReleaseJob]:
        jobs: dict[str, ReleaseJob] = {}
        for g in m.groups:
            for ref in g.jobs:
                rv = versions[ref.release]
                row = await self.d.db.one("SELECT * FROM release_jobs WHERE release=? AND release_version=? AND name=?",
                                          (ref.release, rv, ref.name))
                if row is None:
                    raise TaskFailed(f"Instance group '{g.name}' uses job '{ref.name}', which release "
                                     f"'{ref.release}/{rv}' does not have")
                jobs[ref.name] = ReleaseJob(ref.release, rv, ref.name, row["version"], row["sha1"], row["blobstore_id"],
                                            json.loads(row["spec"]), row["monit"], json.loads(row["templates"]))
        return jobs

    def bind_properties(self, m: Manifest, g: InstanceGroup, jobs: dict[str, ReleaseJob]) -> dict[str, Any]:
        """Each job's properties (job.MF defaults under the manifest's values), merged into the instance's."""
        group_props = deep_merge(m.properties, g.properties)
        out: dict[str, Any] = {}
        for ref in g.jobs:
            declared = jobs[ref.name].spec.get("properties") or {}
            out = deep_merge(out, merge_properties(declared, ref.properties if ref.properties is not None else group_props))
        return out

    def apply_spec(self, m: Manifest, inst: PlannedInstance, jobs: dict[str, ReleaseJob], stemcell: dict[str, str],
                   networks: dict[str, Any], packages: dict[str, Any]) -> dict[str, Any]:
        g = inst.group
        first = jobs[g.jobs[0].name]
        templates = [{"name": jobs[r.name].name, "version": jobs[r.name].version, "sha1": jobs[r.name].sha1,
                      "blobstore_id": jobs[r.name].blobstore_id} for r in g.jobs]
        return {
            "deployment": m.name,
            "release": {"name": first.release, "version": first.release_version},
            "job": {"name": g.name, "release": first.release, "templates": templates, "template": first.name,
                    "version": first.version, "sha1": first.sha1, "blobstore_id": first.blobstore_id},
            "index": inst.index,
            "id": inst.id,
            "name": g.name,
            "networks": networks,
            "resource_pool": {"name": g.vm_type, "cloud_properties": g.cloud_properties,
                              "stemcell": {"name": stemcell["name"], "version": stemcell["version"]}},
            "packages": packages,
            "persistent_disk": g.persistent_disk,
            "configuration_hash": None,
            "properties": inst.properties,
            "template_hashes": {},
        }

    def network_spec(self, m: Manifest, g: InstanceGroup, vm_ip: str | None, prefix: int = 0, gateway: str = "",
                     ips: dict[str, str] | None = None) -> dict[str, Any]:
        """Each of the group's networks as the agent sees it: a manual network with a subnet has its own IP,
        netmask and gateway; the others have the VM's address on the lab's network (Docker picks it)."""
        out: dict[str, Any] = {}
        for i, name in enumerate(g.networks):
            net = m.networks[name]
            subnet: Subnet | None = net.get("subnet")
            n: dict[str, Any] = {"type": net["type"], "cloud_properties": net["cloud_properties"], "dns": ["127.0.0.11"]}
            if subnet is not None and ips and name in ips:
                n.update(ip=ips[name], netmask=str(subnet.range.netmask), gateway=str(subnet.gateway))
                if subnet.dns:
                    n["dns"] = subnet.dns + ["127.0.0.11"]
            else:
                n.update(ip=vm_ip or "127.0.0.1", netmask=netmask(prefix) if vm_ip else "255.255.255.255", gateway=gateway)
            if i == 0:
                n["default"] = ["dns", "gateway"]
            out[name] = n
        return out

    async def render_instance(self, inst: PlannedInstance, jobs: dict[str, ReleaseJob]) -> None:
        """Render every template and monit file of the instance's jobs with Ruby ERB; set the hashes."""
        job_templates = [JobTemplates(r.name, {"monit": jobs[r.name].monit, **jobs[r.name].templates}) for r in inst.group.jobs]
        try:
            async with self._render_sem:
                rendered = await render(job_templates, inst.spec)
        except TemplateError as e:
            raise TaskFailed(f"Unable to render templates for instance {inst.group.name}/{inst.index}: {e}") from None
        inst.spec["configuration_hash"], inst.spec["template_hashes"] = configuration_hash(
            rendered, {r.name: jobs[r.name] for r in inst.group.jobs})

    # --- the deploy ----------------------------------------------------------------------------------

    async def deploy(self, manifest_text: str, *, actions: dict[str, str] | None = None, only: set[str] | None = None,
                     pinned: dict[str, str] | None = None, store: bool = True, skip_drain: bool = False) -> str:
        """Deploy ``manifest_text``. ``actions``: instance id -> start|stop|restart|recreate; ``only``: touch
        just these instances (lifecycle commands, cloud-check); ``pinned``: release versions to use instead
        of "latest"; ``store``: record the manifest as the deployment's; ``skip_drain``: no drain script."""
        t0 = time.monotonic()
        self.skip_drain = skip_drain
        try:
            m = parse_manifest(manifest_text)
        except ManifestError as e:
            raise TaskFailed(f"Manifest is invalid: {e}") from None
        self.manifest = m
        async with self.task.step("Preparing deployment", "Preparing deployment"):
            versions = await self.resolve_versions(m, pinned)
            jobs = self.jobs = await self.load_jobs(m, versions)
            try:
                stemcell = await self.d.cpi.stemcell()
            except CPIError as e:
                raise TaskFailed(str(e)) from None
            plan = await self.plan(m)
            if only is not None:
                plan = [i for i in plan if i.id in only]
            for inst in plan:
                inst.action = (actions or {}).get(inst.id)
                if inst.action in ("stop",):
                    inst.desired_state = "stopped"
                elif inst.action in ("start", "restart", "recreate"):
                    inst.desired_state = "started"
                elif inst.row is not None:
                    inst.desired_state = str(inst.row.get("state") or "started")
            await self.plan_networks(m, plan)
            for inst in plan:
                inst.properties = self.bind_properties(m, inst.group, jobs)
                nets = None
                if inst.has_vm and not inst.recreate:
                    assert inst.row is not None
                    nets = json.loads(await self.d.db.get_settings(inst.row["vm_cid"]) or "{}").get("networks")
                    if nets is not None and set(nets) != set(inst.group.networks):
                        inst.recreate, nets = True, None      # the group's networks changed: a new VM
                inst.spec = self.apply_spec(m, inst, jobs, stemcell,
                                            nets or self.network_spec(m, inst.group, None, ips=inst.ips), {})
            # Render everything before anything changes: a missing property or a broken template fails here.
            await asyncio.gather(*(self.render_instance(i, jobs) for i in plan))
        packages = await self.compile(m, jobs, stemcell)
        for inst in plan:
            inst.spec["packages"] = {p: packages[p] for p in self.runtime_packages(inst.group, jobs)}
        if store:
            await self.d.db.execute(
                "INSERT INTO deployments (name, manifest, updated_at, releases) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest, updated_at=excluded.updated_at, "
                "releases=excluded.releases",
                (m.name, manifest_text, time.time(), json.dumps(versions)))
        await self.create_missing_vms(m, plan, jobs)
        for batch in update_batches(m):
            await asyncio.gather(*(self.update_group(m, g, [i for i in plan if i.group is g]) for g in batch))
        if only is None:
            await self.delete_unneeded(m)
        return f"/deployments/{m.name} ({time.monotonic() - t0:.0f}s)"

    async def plan(self, m: Manifest) -> list[PlannedInstance]:
        rows = await self.d.db.all("SELECT * FROM instances WHERE deployment=?", (m.name,))
        by_key = {(r["group_name"], r["idx"]): r for r in rows}
        plan = []
        for g in m.groups:
            for idx in range(g.instances):
                row = by_key.get((g.name, idx))
                plan.append(PlannedInstance(g, idx, row["id"] if row else str(uuid.uuid4()), row))
        return plan

    async def plan_networks(self, m: Manifest, plan: list[PlannedInstance]) -> None:
        """IPs for manual networks with a subnet (static from the manifest, dynamic from the pool), and the
        Docker network for each such subnet. An existing VM whose IPs change is recreated."""
        for name, net in m.networks.items():
            subnet: Subnet | None = net.get("subnet")
            if subnet is None:
                continue
            on_net = [i for i in plan if name in i.group.networks]
            if not on_net:
                continue
            try:
                self.docker_nets[name] = await self.d.cpi.ensure_network(subnet.range, subnet.gateway)
            except CPIError as e:
                raise TaskFailed(f"network '{name}': {e}") from None
            taken = await self.d.ips_in_use(str(subnet.range), exclude_deployment=m.name)
            wanted = []
            for inst in on_net:
                current = json.loads(inst.row["networks"] or "{}").get(name) if inst.row else None
                cur_ip = current.get("ip") if isinstance(current, dict) and current.get("range") == str(subnet.range) else None
                statics = inst.group.static_ips.get(name)
                static = statics[inst.index] if statics else None
                wanted.append((inst.id, static, cur_ip))
            got = assign_ips(subnet, wanted, taken)
            for inst, (_, _, cur_ip) in zip(on_net, wanted):
                inst.ips[name] = got[inst.id]
                if inst.has_vm and cur_ip != got[inst.id]:
                    inst.recreate = True
                    self.task.info(f"{inst.label}: IP on network '{name}' changes {cur_ip or '-'} -> {got[inst.id]}: "
                                   f"the VM will be recreated")

    def runtime_packages(self, g: InstanceGroup, jobs: dict[str, ReleaseJob]) -> list[str]:
        names: list[str] = []
        for r in g.jobs:
            for p in jobs[r.name].spec.get("packages") or []:
                if p not in names:
                    names.append(p)
        return names

    # --- compilation ---------------------------------------------------------------------------------

    async def compile(self, m: Manifest, jobs: dict[str, ReleaseJob], stemcell: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Compile every package the jobs need (dependencies first); reuse what was compiled before."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for job in jobs.values():
            for p in job.spec.get("packages") or []:
                await self._collect(job.release, job.release_version, p, wanted)
        order = self._topological(wanted)
        compiled: dict[str, dict[str, Any]] = {}
        todo = []
        for key in order:
            row = wanted[key]
            deps = json.loads(row["dependencies"])
            dep_key = json.dumps(sorted([d, compiled[d]["version"]] for d in deps)) if all(d in compiled for d in deps) else None
            cached = None
            if dep_key is not None:
                cached = await self.d.db.one("SELECT * FROM compiled_packages WHERE fingerprint=? AND stemcell=? AND dependency_key=?",
                                             (row["fingerprint"], stemcell["version"], dep_key))
            if cached and await self.d.dav.exists(cached["blobstore_id"]):
                compiled[row["name"]] = {"name": row["name"], "version": cached["version"], "sha1": cached["sha1"],
                                         "blobstore_id": cached["blobstore_id"]}
                self.task.info(f"package {row['name']}/{cached['version']} is already compiled for stemcell {stemcell['version']}")
            else:
                todo.append(key)
        if not todo:
            return compiled
        sem = asyncio.Semaphore(m.compilation_workers)
        done_events = {wanted[k]["name"]: asyncio.Event() for k in todo}
        for name in compiled:
            done_events.setdefault(name, asyncio.Event()).set()

        async def one(i: int, key: tuple[str, str]) -> None:
            row = wanted[key]
            for d in json.loads(row["dependencies"]):
                await done_events[d].wait()
            async with sem:
                await self._compile_one(row, compiled, stemcell, i, len(todo))
            done_events[row["name"]].set()

        results = await asyncio.gather(*(one(i + 1, k) for i, k in enumerate(todo)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return compiled

    async def _collect(self, release: str, version: str, name: str, wanted: dict[tuple[str, str], dict[str, Any]]) -> None:
        if (release, name) in wanted:
            return
        row = await self.d.db.one("SELECT * FROM release_packages WHERE release=? AND release_version=? AND name=?",
                                  (release, version, name))
        if row is None:
            raise TaskFailed(f"Package '{name}' is not in release '{release}/{version}'")
        wanted[(release, name)] = row
        for d in json.loads(row["dependencies"]):
            await self._collect(release, version, d, wanted)

    @staticmethod
    def _topological(wanted: dict[tuple[str, str], dict[str, Any]]) -> list[tuple[str, str]]:
        order: list[tuple[str, str]] = []
        visiting: set[tuple[str, str]] = set()

        def visit(key: tuple[str, str]) -> None:
            if key in order:
                return
            if key in visiting:
                raise TaskFailed(f"package dependency cycle at '{key[1]}'")
            visiting.add(key)
            for d in json.loads(wanted[key]["dependencies"]):
                visit((key[0], d))
            visiting.discard(key)
            order.append(key)
        for k in sorted(wanted):
            visit(k)
        return order

    async def _compile_one(self, row: dict[str, Any], compiled: dict[str, dict[str, Any]], stemcell: dict[str, str],
                           index: int, total: int) -> None:
        deps = {d: compiled[d] for d in json.loads(row["dependencies"])}
        dep_key = json.dumps(sorted([d, v["version"]] for d, v in deps.items()))
        last = await self.d.db.one("SELECT MAX(build) AS b FROM compiled_packages WHERE name=? AND stemcell=?",
                                   (row["name"], stemcell["version"]))
        build = int((last or {}).get("b") or 0) + 1
        version = f"{row['version']}.{build}"
        label = f"{row['name']}/{version}"
        async with self.task.step("Compiling packages", label, index, total):
            agent_id = str(uuid.uuid4())
            name = f"{self.d.cpi.lab}-compile-{row['name']}-{agent_id[:8]}"
            vm = await self.create_vm(agent_id, name, {LABEL_ROLE: "compilation"})
            try:
                self.task.info(f"compiling {label} on compilation VM {name}")
                result = await self.agent(agent_id).send_message(
                    "compile_package", row["blobstore_id"], row["sha1"], row["name"], version, deps)
            except (AgentError, RpcTimeout) as e:
                raise TaskFailed(f"Compiling package {label} failed: {e}") from None
            finally:
                await self.delete_vm(vm)
            res = result.get("result") if isinstance(result, dict) else None
            if not isinstance(res, dict) or not {"blobstore_id", "sha1"} <= set(res):
                raise TaskFailed(f"Compiling package {label}: agent answered {result!r}, expected result.blobstore_id and sha1")
            await self.d.db.execute(
                "INSERT OR REPLACE INTO compiled_packages (name, fingerprint, stemcell, dependency_key, build, version, sha1, "
                "blobstore_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row["name"], row["fingerprint"], stemcell["version"], dep_key, build, version, res["sha1"],
                 res["blobstore_id"], time.time()))
            compiled[row["name"]] = {"name": row["name"], "version": version, "sha1": res["sha1"],
                                     "blobstore_id": res["blobstore_id"]}

    # --- VMs -----------------------------------------------------------------------------------------

    async def create_vm(self, agent_id: str, name: str, labels: dict[str, str],
                        inst: PlannedInstance | None = None) -> str:
        """create_vm + settings in the registry + wait until the agent answers ping. Returns the VM cid."""
        m = self.manifest
        user_data = {"registry": {"endpoint": self.cfg.registry_endpoint()}, "server": {"name": name}}
        static = {self.docker_nets[n]: ip for n, ip in inst.ips.items()} if inst is not None else {}
        disks = await pdisks.disks_for_new_vm(self, inst) if inst is not None else []
        try:
            vm = await self.d.cpi.create_vm(agent_id, name, user_data, labels, static, disks)
        except CPIError as e:
            raise TaskFailed(str(e)) from None
        try:
            shown = ", ".join([vm.ip, *[ip for ip in (inst.ips.values() if inst else [])]])
            self.task.info(f"created VM {name} ({vm.cid[:12]}) for agent {agent_id}, ip {shown}")
            if inst is not None and m is not None:
                nets = self.network_spec(m, inst.group, vm.ip, vm.prefix_len, vm.gateway, inst.ips)
            else:
                nets = {"default": {"type": "dynamic", "ip": vm.ip, "netmask": netmask(vm.prefix_len), "gateway": vm.gateway,
                                    "dns": ["127.0.0.11"], "default": ["dns", "gateway"], "cloud_properties": {}}}
            settings = {
                "agent_id": agent_id, "vm": {"name": name}, "mbus": self.cfg.agent_mbus,
                "blobstore": self.cfg.agent_blobstore(), "networks": nets,
                "disks": {"system": "/dev/sda", "ephemeral": None, "persistent": pdisks.disk_settings(disks)}, "ntp": [],
                "env": {"bosh": {"heartbeat_interval": self.cfg.heartbeat_interval}},
            }
            await self.d.db.put_settings(vm.cid, settings)
            await self.wait_until_ready(agent_id, vm.cid, name)
            if disks:
                await pdisks.mount_disks(self, agent_id, disks, inst.label if inst is not None else name)
        except BaseException:
            await asyncio.shield(self.delete_vm(vm.cid))
            raise
        return vm.cid

    async def wait_until_ready(self, agent_id: str, cid: str, name: str) -> None:
        """Ping until the agent answers. When it does not, say why within seconds: the VM exited (exit code
        and last output), the director's own NATS connection is down, or the agent's log names the cause
        (settings not in the registry, wrong credentials, NATS unreachable)."""
        started = time.monotonic()
        deadline = started + self.cfg.agent_wait_timeout
        client = self.agent(agent_id)
        last_look = 0.0
        log_tail = ""
        while time.monotonic() < deadline:
            if not self.d.rpc.connected:
                await asyncio.sleep(1)
                if not self.d.rpc.connected:
                    raise TaskFailed(f"Cannot ping agent {agent_id} on VM {name}: the director has no NATS connection "
                                     f"(NATS unreachable at {self.d.rpc.redacted_url})")
            if await client.ping(1.0):
                self.task.info(f"agent {agent_id} on {name} answered ping after {time.monotonic() - started:.1f}s")
                return
            status = await self.d.cpi.vm_status(cid)
            if not status.running:
                what = f"exited with code {status.exit_code}" if status.exists else "vanished (its container was removed)"
                raise TaskFailed(f"VM {name} ({cid[:12]}) {what} before its agent answered ping. Last output:\n{status.logs}")
            now = time.monotonic()
            if now - started >= DIAGNOSE_AFTER and now - last_look >= 2.0:
                last_look = now
                try:
                    _, log_tail = await self.d.cpi.exec_in(cid, ["tail", "-n", "60", "/var/vcap/bosh/log/current"])
                except Exception as e:  # noqa: BLE001 - the VM may be going away; the next round says so
                    self.task.info(f"reading the agent log of {name}: {e}")
                    continue
                found = diagnose_agent_log(log_tail)
                if found is not None:
                    raise TaskFailed(f"Agent {agent_id} on VM {name} does not answer ping: {found}. "
                                     f"The agent's log ends with:\n{tail(log_tail)}")
        raise TaskFailed(f"Timed out pinging agent {agent_id} on VM {name} after {self.cfg.agent_wait_timeout:g} seconds. "
                         f"The agent's log ends with:\n{tail(log_tail, 15)}")

    async def delete_vm(self, cid: str) -> None:
        await self.d.cpi.delete_vm(cid)
        await self.d.db.delete_settings(cid)

    def vm_name(self, m: Manifest, inst: PlannedInstance, agent_id: str) -> str:
        return f"{self.d.cpi.lab}-{m.name}-{inst.group.name}-{inst.index}-{agent_id[:8]}"

    async def new_vm_for(self, m: Manifest, inst: PlannedInstance, jobs: dict[str, ReleaseJob]) -> None:
        """Make the instance's VM and record it (a new agent id; the instance keeps its id and IPs)."""
        agent_id = str(uuid.uuid4())
        name = self.vm_name(m, inst, agent_id)
        cid = await self.create_vm(agent_id, name, {LABEL_ROLE: "instance", LABEL_DEPLOYMENT: m.name,
                                                    LABEL_INSTANCE: f"{inst.group.name}/{inst.id}"}, inst)
        settings: dict[str, Any] = json.loads(await self.d.db.get_settings(cid) or "{}")
        first_net: dict[str, Any] = settings["networks"][inst.group.networks[0]]
        nets = {n: {"ip": ip, "range": str(m.networks[n]["subnet"].range)} for n, ip in inst.ips.items()}
        await self.d.db.execute(
            "INSERT INTO instances (id, deployment, group_name, idx, agent_id, vm_cid, vm_name, ip, networks, vm_created_at, "
            "state, dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT(id) DO UPDATE SET agent_id=excluded.agent_id, "
            "vm_cid=excluded.vm_cid, vm_name=excluded.vm_name, ip=excluded.ip, networks=excluded.networks, "
            "vm_created_at=excluded.vm_created_at, apply_spec=NULL, dirty=1",
            (inst.id, m.name, inst.group.name, inst.index, agent_id, cid, name, first_net.get("ip"), json.dumps(nets),
             time.time(), inst.desired_state))
        inst.row = await self.d.db.one("SELECT * FROM instances WHERE id=?", (inst.id,))
        inst.vm_fresh = True
        inst.spec["networks"] = settings["networks"]
        await self.render_instance(inst, jobs)   # the real IP may change what templates render

    async def create_missing_vms(self, m: Manifest, plan: list[PlannedInstance], jobs: dict[str, ReleaseJob]) -> None:
        missing = [i for i in plan if not i.has_vm]
        if not missing:
            return

        sem = asyncio.Semaphore(self.cfg.max_threads)

        async def one(n: int, inst: PlannedInstance) -> None:
            async with sem:
                async with self.task.step("Creating missing vms", inst.label, n, len(missing)):
                    await self.new_vm_for(m, inst, jobs)
        results = await asyncio.gather(*(one(n + 1, i) for n, i in enumerate(missing)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # --- updating instances --------------------------------------------------------------------------

    def changed(self, inst: PlannedInstance) -> bool:
        if inst.row and inst.row.get("dirty"):
            return True
        current = json.loads(inst.row["apply_spec"]) if inst.row and inst.row.get("apply_spec") else None
        if current is None:
            return True
        return bool(current.get("configuration_hash") != inst.spec["configuration_hash"]
                    or current.get("packages") != inst.spec["packages"]
                    or current.get("job") != inst.spec["job"]
                    or current.get("persistent_disk") != inst.spec["persistent_disk"])

    def needs_update(self, inst: PlannedInstance) -> bool:
        if inst.action is not None or inst.recreate or self.changed(inst):
            return True
        return bool((inst.row or {}).get("state", "started") != inst.desired_state)

    async def update_group(self, m: Manifest, g: InstanceGroup, instances: list[PlannedInstance]) -> None:
        """Canaries first (at most max_in_flight at once), then the rest max_in_flight at a time. The first
        failure stops the group: instances not started yet are left as they are."""
        upd: UpdateConfig = g.update or m.update
        todo = [i for i in instances if self.needs_update(i)]
        for i in instances:
            if i not in todo:
                self.task.info(f"instance {i.label} is up to date")
        if not todo:
            return
        in_flight = upd.in_flight(g.instances or len(instances))
        canaries = todo[:min(upd.canaries, len(todo))]
        rest = todo[len(canaries):]
        total = len(todo)
        failed: list[BaseException] = []
        sem = asyncio.Semaphore(in_flight)

        async def one(n: int, inst: PlannedInstance, canary: bool) -> None:
            async with sem:
                if failed:
                    return
                name = f"{inst.label} (canary)" if canary else inst.label
                try:
                    async with self.task.step("Updating instance", name, n, total, tags=[g.name]):
                        await self.update_instance(m, inst, upd, canary)
                except BaseException as e:
                    failed.append(e)
                    raise
        for phase, batch in ((True, canaries), (False, rest)):
            offset = 0 if phase else len(canaries)
            results = await asyncio.gather(*(one(offset + k + 1, inst, phase) for k, inst in enumerate(batch)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def update_instance(self, m: Manifest, inst: PlannedInstance, upd: UpdateConfig, canary: bool) -> None:
        """drain ─► stop ─► [recreate the VM] ─► apply ─► start ─► watch, as much of it as the instance needs."""
        assert inst.row is not None
        was_stopped = inst.row.get("state") == "stopped" and not inst.row.get("dirty")
        recreate = (inst.recreate or inst.action == "recreate") and not inst.vm_fresh
        disk_change = await pdisks.pending_change(self, inst)
        apply = recreate or self.changed(inst)
        spec = inst.spec
        await self.d.db.execute("UPDATE instances SET dirty=1 WHERE id=?", (inst.id,))
        agent = self.agent(inst.row["agent_id"])
        try:
            if not was_stopped:
                if not self.skip_drain:
                    kind = "shutdown" if recreate or disk_change or inst.desired_state == "stopped" else "update"
                    self.task.info(f"{inst.label}: drain {kind}")
                    n = await (agent.send_message("drain", kind, spec) if kind == "update" else agent.send_message("drain", kind))
                    await self.wait_for_drain(agent, inst, n)
                self.task.info(f"{inst.label}: stop")
                await agent.send_message("stop")
            if recreate:
                self.task.info(f"{inst.label}: recreating its VM")
                await self.delete_vm(inst.row["vm_cid"])
                await self.d.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL WHERE id=?", (inst.id,))
                await self.new_vm_for(m, inst, self.jobs)
                assert inst.row is not None
                agent = self.agent(inst.row["agent_id"])
                spec = inst.spec
            if disk_change and await pdisks.apply_disk_change(self, m, inst):
                assert inst.row is not None
                agent = self.agent(inst.row["agent_id"])
                spec = inst.spec
                apply = True
            if apply:
                self.task.info(f"{inst.label}: apply")
                await agent.send_message("apply", spec)
                await self.d.db.execute("UPDATE instances SET apply_spec=? WHERE id=?", (json.dumps(spec), inst.id))
            if inst.desired_state == "started":
                self.task.info(f"{inst.label}: start")
                await agent.call("start")
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        if inst.desired_state == "started":
            await self.watch(agent, inst, (upd.canary_watch_time if canary else upd.update_watch_time).schedule())
        else:
            self.d.health.observe(agent.agent_id, "stopped")
        await self.d.db.execute("UPDATE instances SET apply_spec=?, state=?, dirty=0 WHERE id=?",
                                (json.dumps(spec), inst.desired_state, inst.id))

    async def wait_for_drain(self, agent: AgentClient, inst: PlannedInstance, n: Any) -> None:
        """2013's contract: a positive drain value means sleep that long; negative means sleep, then ask
        ``drain status`` again until the value is >= 0."""
        if not isinstance(n, int):
            raise TaskFailed(f"{inst.label}: drain returned {n!r}, expected an integer")
        while n < 0:
            self.task.info(f"{inst.label}: dynamic drain, checking again in {-n}s")
            await asyncio.sleep(-n)
            n = await agent.send_message("drain", "status")
            if not isinstance(n, int):
                raise TaskFailed(f"{inst.label}: drain status returned {n!r}, expected an integer")
        if n > 0:
            self.task.info(f"{inst.label}: drain asked to wait {n}s")
            await asyncio.sleep(n)

    async def watch(self, agent: AgentClient, inst: PlannedInstance, schedule: list[float]) -> None:
        state: dict[str, Any] = {}
        for delay in schedule:
            await asyncio.sleep(delay)
            try:
                state = await agent.call("get_state")
            except (AgentError, RpcTimeout) as e:
                self.task.info(f"{inst.label}: get_state failed: {e}")
                continue
            self.task.info(f"{inst.label}: job_state {state.get('job_state')}")
            if isinstance(state.get("job_state"), str):
                self.d.health.observe(agent.agent_id, state["job_state"])
            if state.get("job_state") == "running":
                return
        failing = [p.get("name") for p in state.get("processes") or [] if p.get("state") != "running"]
        raise TaskFailed(f"'{inst.group.name}/{inst.id} ({inst.index})' is not running after update "
                         f"(job_state {state.get('job_state', 'unknown')}). Review logs for failed jobs: "
                         f"{', '.join(str(f) for f in failing) or ', '.join(j.name for j in inst.group.jobs)}")

    async def delete_unneeded(self, m: Manifest) -> None:
        """Instances beyond a group's count, or of groups no longer in the manifest: drain, stop, delete."""
        wanted = {(g.name, i) for g in m.groups for i in range(g.instances)}
        rows = await self.d.db.all("SELECT * FROM instances WHERE deployment=?", (m.name,))
        extra = [r for r in rows if (r["group_name"], r["idx"]) not in wanted]
        for n, r in enumerate(extra):
            async with self.task.step("Deleting unneeded instances", f"{r['group_name']}/{r['id']} ({r['idx']})", n + 1, len(extra)):
                await self.delete_instance(r, force=True)
                await pdisks.orphan_instance_disks(self.d, r["id"])
        if extra:
            await self.d.cpi.remove_unused_networks()

    async def delete_instance(self, r: dict[str, Any], force: bool) -> None:
        """drain shutdown, stop, delete the VM, forget the instance. With ``force``, agent errors are logged
        and the deletion goes on."""
        if r["vm_cid"]:
            status = await self.d.cpi.vm_status(r["vm_cid"])
            if status.running and r["agent_id"]:
                agent = self.agent(r["agent_id"])
                try:
                    if not await agent.ping(2.0):
                        raise RpcTimeout(f"agent {r['agent_id']} does not answer ping")
                    n = await agent.send_message("drain", "shutdown")
                    if isinstance(n, int) and n > 0:
                        await asyncio.sleep(n)
                    await agent.send_message("stop")
                except (AgentError, RpcTimeout) as e:
                    if not force:
                        raise TaskFailed(f"{r['group_name']}/{r['id']} ({r['idx']}): {e} (use --force to delete anyway)") from None
                    self.task.info(f"ignoring '{e}' while deleting {r['group_name']}/{r['idx']}")
            await self.delete_vm(r["vm_cid"])
        await self.d.db.execute("DELETE FROM instances WHERE id=?", (r["id"],))
