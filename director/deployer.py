"""Deploying a manifest: the 2013 update flow the deck shows, with today's wire details.

    parse + bind ─► render every template once (fail here, before anything changes)
      ─► compile missing packages on compilation VMs ─► create missing VMs (ping until ready)
      ─► per instance, canaries first: drain ─► stop ─► apply ─► start ─► get_state until running
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
from .manifest import InstanceGroup, Manifest, ManifestError, UpdateConfig, parse_manifest
from .nats_rpc import AgentClient, AgentError, RpcTimeout
from .releases import resolve_version
from .tasks import Task, TaskFailed

if TYPE_CHECKING:
    from .app import Director


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

    @property
    def label(self) -> str:
        return f"{self.group.name}/{self.index} ({self.id})"

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


class Deployer:
    def __init__(self, director: "Director", task: Task) -> None:
        self.d = director
        self.task = task
        self.cfg = director.config

    def agent(self, agent_id: str) -> AgentClient:
        return AgentClient(self.d.rpc, agent_id, timeout=self.cfg.rpc_timeout, poll_interval=self.cfg.poll_interval,
                           debug=self.task.debug)

    # --- planning ------------------------------------------------------------------------------------

    async def load_jobs(self, m: Manifest) -> dict[str, ReleaseJob]:
        versions = {name: await resolve_version(self.d.db, name, v) for name, v in m.releases.items()}
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

    def network_spec(self, m: Manifest, g: InstanceGroup, ip: str | None, prefix: int = 0, gateway: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, name in enumerate(g.networks):
            n: dict[str, Any] = {"type": m.networks[name]["type"], "cloud_properties": m.networks[name]["cloud_properties"],
                                 "dns": ["127.0.0.11"], "ip": ip or "127.0.0.1",
                                 "netmask": netmask(prefix) if ip else "255.255.255.255", "gateway": gateway}
            if i == 0:
                n["default"] = ["dns", "gateway"]
            out[name] = n
        return out

    async def render_instance(self, inst: PlannedInstance, jobs: dict[str, ReleaseJob]) -> None:
        """Render every template and monit file of the instance's jobs with Ruby ERB; set the hashes."""
        job_templates = [JobTemplates(r.name, {"monit": jobs[r.name].monit, **jobs[r.name].templates}) for r in inst.group.jobs]
        try:
            rendered = await render(job_templates, inst.spec)
        except TemplateError as e:
            raise TaskFailed(f"Unable to render templates for instance {inst.group.name}/{inst.index}: {e}") from None
        inst.spec["configuration_hash"], inst.spec["template_hashes"] = configuration_hash(
            rendered, {r.name: jobs[r.name] for r in inst.group.jobs})

    # --- the deploy ----------------------------------------------------------------------------------

    async def deploy(self, manifest_text: str) -> str:
        t0 = time.monotonic()
        try:
            m = parse_manifest(manifest_text)
        except ManifestError as e:
            raise TaskFailed(f"Manifest is invalid: {e}") from None
        lock = self.d.deployment_lock(m.name)
        if lock.locked():
            raise TaskFailed(f"Deployment '{m.name}' is being changed by another task; wait for it to finish")
        async with lock:
            async with self.task.step("Preparing deployment", "Preparing deployment"):
                jobs = await self.load_jobs(m)
                try:
                    stemcell = await self.d.cpi.stemcell()
                except CPIError as e:
                    raise TaskFailed(str(e)) from None
                plan = await self.plan(m)
                for inst in plan:
                    inst.properties = self.bind_properties(m, inst.group, jobs)
                    nets = None
                    if inst.has_vm:
                        assert inst.row is not None
                        nets = json.loads(await self.d.db.get_settings(inst.row["vm_cid"]) or "{}").get("networks")
                    inst.spec = self.apply_spec(m, inst, jobs, stemcell, nets or self.network_spec(m, inst.group, None), {})
                # Render everything before anything changes: a missing property or a broken template fails here.
                await asyncio.gather(*(self.render_instance(i, jobs) for i in plan))
            packages = await self.compile(m, jobs, stemcell)
            for inst in plan:
                inst.spec["packages"] = {p: packages[p] for p in self.runtime_packages(inst.group, jobs)}
            await self.d.db.execute(
                "INSERT INTO deployments (name, manifest, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest, updated_at=excluded.updated_at",
                (m.name, manifest_text, time.time()))
            await self.create_missing_vms(m, plan, jobs)
            for g in m.groups:
                await self.update_group(m, g, [i for i in plan if i.group is g])
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
            vm = await self.create_vm(agent_id, name, {LABEL_ROLE: "compilation"}, networks=None)
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
                        networks: tuple[Manifest, InstanceGroup] | None) -> str:
        """create_vm + settings in the registry + wait until the agent answers ping. Returns the VM cid."""
        user_data = {"registry": {"endpoint": self.cfg.registry_endpoint()}, "server": {"name": name}}
        try:
            vm = await self.d.cpi.create_vm(agent_id, name, user_data, labels)
        except CPIError as e:
            raise TaskFailed(str(e)) from None
        self.task.info(f"created VM {name} ({vm.cid[:12]}) for agent {agent_id}, ip {vm.ip}")
        if networks is not None:
            nets = self.network_spec(networks[0], networks[1], vm.ip, vm.prefix_len, vm.gateway)
        else:
            nets = {"default": {"type": "dynamic", "ip": vm.ip, "netmask": netmask(vm.prefix_len), "gateway": vm.gateway,
                                "dns": ["127.0.0.11"], "default": ["dns", "gateway"], "cloud_properties": {}}}
        settings = {
            "agent_id": agent_id, "vm": {"name": name}, "mbus": self.cfg.agent_mbus,
            "blobstore": self.cfg.agent_blobstore(), "networks": nets,
            "disks": {"system": "/dev/sda", "ephemeral": None, "persistent": {}}, "ntp": [],
            "env": {"bosh": {"heartbeat_interval": self.cfg.heartbeat_interval}},
        }
        await self.d.db.put_settings(vm.cid, settings)
        try:
            await self.wait_until_ready(agent_id, vm.cid, name)
        except BaseException:
            await self.delete_vm(vm.cid)
            raise
        return vm.cid

    async def wait_until_ready(self, agent_id: str, cid: str, name: str) -> None:
        """Ping until the agent answers; say why at once when the VM dies instead of timing out."""
        deadline = time.monotonic() + self.cfg.agent_wait_timeout
        client = AgentClient(self.d.rpc, agent_id, debug=None)
        while time.monotonic() < deadline:
            if await client.ping(1.0):
                self.task.info(f"agent {agent_id} on {name} answered ping")
                return
            status = await self.d.cpi.vm_status(cid)
            if not status.running:
                raise TaskFailed(f"VM {name} ({cid[:12]}) {'exited with code ' + str(status.exit_code) if status.exists else 'vanished'}"
                                 f" before its agent answered ping. Last output:\n{status.logs}")
        _, tail = await self.d.cpi.exec_in(cid, ["tail", "-n", "15", "/var/vcap/bosh/log/current"])
        raise TaskFailed(f"Timed out pinging agent {agent_id} on VM {name} after {self.cfg.agent_wait_timeout:g} seconds. "
                         f"The agent's log ends with:\n{tail}")

    async def delete_vm(self, cid: str) -> None:
        await self.d.cpi.delete_vm(cid)
        await self.d.db.delete_settings(cid)

    async def create_missing_vms(self, m: Manifest, plan: list[PlannedInstance], jobs: dict[str, ReleaseJob]) -> None:
        missing = [i for i in plan if not i.has_vm]
        if not missing:
            return

        async def one(n: int, inst: PlannedInstance) -> None:
            async with self.task.step("Creating missing vms", inst.label, n, len(missing)):
                agent_id = str(uuid.uuid4())
                name = f"{self.d.cpi.lab}-{m.name}-{inst.group.name}-{inst.index}-{agent_id[:8]}"
                cid = await self.create_vm(agent_id, name, {LABEL_ROLE: "instance", LABEL_DEPLOYMENT: m.name,
                                                            LABEL_INSTANCE: f"{inst.group.name}/{inst.id}"},
                                           networks=(m, inst.group))
                settings: dict[str, Any] = json.loads(await self.d.db.get_settings(cid) or "{}")
                first_net: dict[str, Any] = next(iter(settings["networks"].values()))
                ip = first_net.get("ip")
                await self.d.db.execute(
                    "INSERT INTO instances (id, deployment, group_name, idx, agent_id, vm_cid, vm_name, ip) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET agent_id=excluded.agent_id, "
                    "vm_cid=excluded.vm_cid, vm_name=excluded.vm_name, ip=excluded.ip, apply_spec=NULL",
                    (inst.id, m.name, inst.group.name, inst.index, agent_id, cid, name, ip))
                inst.row = await self.d.db.one("SELECT * FROM instances WHERE id=?", (inst.id,))
                inst.spec["networks"] = settings["networks"]
                await self.render_instance(inst, jobs)   # the real IP may change what templates render
        results = await asyncio.gather(*(one(n + 1, i) for n, i in enumerate(missing)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # --- updating instances --------------------------------------------------------------------------

    def changed(self, inst: PlannedInstance) -> bool:
        current = json.loads(inst.row["apply_spec"]) if inst.row and inst.row.get("apply_spec") else None
        if current is None:
            return True
        return bool(current.get("configuration_hash") != inst.spec["configuration_hash"]
                    or current.get("packages") != inst.spec["packages"]
                    or current.get("job") != inst.spec["job"]
                    or current.get("persistent_disk") != inst.spec["persistent_disk"])

    async def update_group(self, m: Manifest, g: InstanceGroup, instances: list[PlannedInstance]) -> None:
        upd: UpdateConfig = g.update or m.update
        todo = [i for i in instances if self.changed(i)]
        for i in instances:
            if i not in todo:
                self.task.info(f"instance {i.label} is up to date")
        if not todo:
            return
        canaries = todo[:min(upd.canaries, len(todo))]
        rest = todo[len(canaries):]
        total = len(todo)
        for n, inst in enumerate(canaries):
            async with self.task.step("Updating instance", f"{inst.label} (canary)", n + 1, total, tags=[g.name]):
                await self.update_instance(inst, upd, canary=True)
        sem = asyncio.Semaphore(upd.in_flight(len(instances)))

        async def one(n: int, inst: PlannedInstance) -> None:
            async with sem:
                async with self.task.step("Updating instance", inst.label, n, total, tags=[g.name]):
                    await self.update_instance(inst, upd, canary=False)
        results = await asyncio.gather(*(one(len(canaries) + k + 1, i) for k, i in enumerate(rest)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def update_instance(self, inst: PlannedInstance, upd: UpdateConfig, canary: bool) -> None:
        assert inst.row is not None
        agent = self.agent(inst.row["agent_id"])
        spec = inst.spec
        try:
            self.task.info(f"{inst.label}: drain")
            n = await agent.send_message("drain", "update", spec)
            await self.wait_for_drain(agent, inst, n)
            self.task.info(f"{inst.label}: stop")
            await agent.send_message("stop")
            self.task.info(f"{inst.label}: apply")
            await agent.send_message("apply", spec)
            self.task.info(f"{inst.label}: start")
            await agent.call("start")
        except (AgentError, RpcTimeout) as e:
            raise TaskFailed(f"{inst.label}: {e}") from None
        await self.d.db.execute("UPDATE instances SET apply_spec=? WHERE id=?", (json.dumps(spec), inst.id))
        await self.watch(agent, inst, (upd.canary_watch_time if canary else upd.update_watch_time).schedule())

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
            if state.get("job_state") == "running":
                return
        failing = [p.get("name") for p in state.get("processes") or [] if p.get("state") != "running"]
        raise TaskFailed(f"'{inst.group.name}/{inst.index} ({inst.id})' is not running after update "
                         f"(job_state {state.get('job_state', 'unknown')}). Review logs for failed jobs: "
                         f"{', '.join(str(f) for f in failing) or inst.group.jobs[0].name}")

    async def delete_unneeded(self, m: Manifest) -> None:
        """Instances beyond a group's count, or of groups no longer in the manifest: drain, stop, delete."""
        wanted = {(g.name, i) for g in m.groups for i in range(g.instances)}
        rows = await self.d.db.all("SELECT * FROM instances WHERE deployment=?", (m.name,))
        extra = [r for r in rows if (r["group_name"], r["idx"]) not in wanted]
        for n, r in enumerate(extra):
            async with self.task.step("Deleting unneeded instances", f"{r['group_name']}/{r['idx']} ({r['id']})", n + 1, len(extra)):
                if r["vm_cid"]:
                    agent = self.agent(r["agent_id"])
                    try:
                        await agent.send_message("drain", "shutdown")
                        await agent.send_message("stop")
                    except (AgentError, RpcTimeout) as e:
                        self.task.info(f"ignoring {e} while deleting {r['group_name']}/{r['idx']}")
                    await self.delete_vm(r["vm_cid"])
                await self.d.db.execute("DELETE FROM instances WHERE id=?", (r["id"],))
