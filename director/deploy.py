"""The deploy task: the 2013 update flow the deck shows, with today's wire details.

    parse ─► plan (director/planner.py) ─► render every template once (fail here, before anything changes)
      ─► compile missing packages on compilation VMs ─► create missing VMs in parallel (ping until ready)
      ─► instance groups one after another (neighbours with serial: false together); in each group the
         canaries first, then the rest max_in_flight at a time, each through the one update routine
         (director/instance_updater.py) ─► delete instances the manifest no longer has

The lifecycle commands (start, stop, restart, recreate of a deployment, a group or one instance) and
cloud-check's recreate run the same flow on the stored manifest, as BOSH does: deploys with a target state for
some instances."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .compiler import Blobs, Compiler
from .cpi import CPI, CPIError
from .instance_updater import InstanceUpdater, Observe, delete_instance
from .manifest import InstanceGroup, Manifest, ManifestError, UpdateConfig, parse_manifest
from .nats_auth import NatsAuth
from .nats_rpc import Agents
from .planner import (
    Change,
    CurrentState,
    DesiredInstance,
    PlanError,
    change_for,
    desired_instances,
    runtime_packages,
    unneeded,
    update_batches,
)
from .releases import resolve_version
from .store import CompiledPackages, Deployments, Disks, Instances, Registry, ReleaseJobRow, Releases
from .tasks import Task, TaskFailed
from .templates import Renderer, RenderError
from .vms import AgentEnv, VMs


def creation_limit(max_threads: int, cpus: int | None = None) -> int:
    """How many VMs are created and pinged at once: BOSH's ``max_threads``, but at most 4 per CPU this
    director may use. A VM's boot is CPU work (Docker, the agent's start-up) on the same machine: 4 per CPU
    keeps every CPU busy while some VMs wait on Docker, and more at once only makes each VM slower to answer
    its ping (and the director look into more of them)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    return max(1, min(max_threads, 4 * cpus))


@dataclass(frozen=True)
class DeployRequest:
    manifest: str
    actions: dict[str, str] | None = None    # instance id -> start | stop | restart | recreate
    only: set[str] | None = None             # touch just these instances (lifecycle commands, cloud-check)
    pinned: dict[str, str] | None = None     # release versions to use where the manifest says "latest"
    store: bool = True                       # record the manifest as the deployment's
    skip_drain: bool = False


@dataclass
class Deployer:
    releases: Releases
    compiled: CompiledPackages
    deployments: Deployments
    instances: Instances
    disks: Disks
    registry: Registry
    blobs: Blobs
    cpi: CPI
    agents: Agents
    env: AgentEnv
    observe: Observe
    task: Task
    director_name: str = "bosh-lab"
    max_threads: int = 16
    new_id: Callable[[], str] | None = None
    nats_auth: NatsAuth | None = None

    async def deploy(self, req: DeployRequest) -> str:
        t0 = time.monotonic()
        try:
            m = await asyncio.to_thread(parse_manifest, req.manifest)
        except ManifestError as e:
            raise TaskFailed(f"Manifest is invalid: {e}") from None
        agents = self.agents.for_task(self.task.debug)
        vms = VMs(self.cpi, self.registry, agents, self.env, self.task, self.nats_auth)
        async with self.task.step("Preparing deployment", "Preparing deployment"):
            versions = {name: await resolve_version(self.releases, name, (req.pinned or {}).get(name) or v)
                        for name, v in m.releases.items()}
            jobs = await self.load_jobs(m, versions)
            try:
                stemcell = await self.cpi.stemcell()
            except CPIError as e:
                raise TaskFailed(str(e)) from None
            static_networks = await self.manual_networks(m, req.only)
            current = await self.current_state(m)
            kw = {"new_id": self.new_id} if self.new_id else {}
            try:
                plan = desired_instances(m, jobs, current, (stemcell.name, stemcell.version), actions=req.actions,
                                         only=req.only, **kw)
            except PlanError as e:
                raise TaskFailed(str(e)) from None
            for inst in plan:
                for reason in inst.recreate_reasons:
                    self.task.info(f"{inst.label}: {reason}: the VM will be recreated")
            renderer = Renderer(jobs)
            # Render everything before anything changes: a missing property or a broken template fails here.
            try:
                await asyncio.gather(*(renderer.render(i) for i in plan))
            except RenderError as e:
                raise TaskFailed(str(e)) from None
        compiler = Compiler(self.releases, self.compiled, self.blobs, vms, agents, self.task, stemcell.version,
                            m.compilation_workers)
        packages = await compiler.compile(jobs)
        for inst in plan:
            inst.spec["packages"] = {p: packages[p] for p in runtime_packages(inst.group, jobs)}
        if req.store:
            await self.deployments.save(m.name, req.manifest, versions)
        updater = InstanceUpdater(m, self.cpi, agents, vms, self.instances, self.disks, self.registry, renderer,
                                  self.observe, self.task, self.director_name, static_networks, req.skip_drain)
        changes = [change_for(i, await self.disks.current(i.id)) for i in plan]
        await self.create_missing_vms(updater, plan)
        for batch in update_batches(m):
            await asyncio.gather(*(self.update_group(updater, m, g, [c for c in changes if c.instance.group is g])
                                   for g in batch))
        if req.only is None:
            await self.delete_unneeded(m, vms, agents)
        return f"/deployments/{m.name} ({time.monotonic() - t0:.0f}s)"

    async def load_jobs(self, m: Manifest, versions: dict[str, str]) -> dict[str, ReleaseJobRow]:
        jobs: dict[str, ReleaseJobRow] = {}
        for g in m.groups:
            for ref in g.jobs:
                rv = versions[ref.release]
                row = await self.releases.job(ref.release, rv, ref.name)
                if row is None:
                    raise TaskFailed(f"Instance group '{g.name}' uses job '{ref.name}', which release "
                                     f"'{ref.release}/{rv}' does not have")
                jobs[ref.name] = row
        return jobs

    async def manual_networks(self, m: Manifest, only: set[str] | None) -> dict[str, str]:
        """The CPI network for each manual network with a subnet that a group uses (made if need be)."""
        out: dict[str, str] = {}
        for name, net in m.networks.items():
            subnet = net.get("subnet")
            if subnet is None or not any(name in g.networks and g.instances for g in m.groups):
                continue
            try:
                out[name] = await self.cpi.ensure_network(subnet.range, subnet.gateway)
            except CPIError as e:
                raise TaskFailed(f"network '{name}': {e}") from None
        return out

    async def current_state(self, m: Manifest) -> CurrentState:
        rows = await self.instances.of_deployment(m.name)
        vm_networks = {}
        for r in rows:
            if r.vm_cid:
                settings = await self.registry.get(r.vm_cid)
                if settings is not None:
                    vm_networks[r.id] = settings["networks"]
        taken = {}
        for net in m.networks.values():
            subnet = net.get("subnet")
            if subnet is not None:
                taken[str(subnet.range)] = await self.instances.ips_in_use(str(subnet.range), m.name)
        return CurrentState(rows, vm_networks, taken)

    async def create_missing_vms(self, updater: InstanceUpdater, plan: list[DesiredInstance]) -> None:
        missing = [i for i in plan if not i.has_vm]
        if not missing:
            return
        sem = asyncio.Semaphore(creation_limit(self.max_threads))

        async def one(n: int, inst: DesiredInstance) -> None:
            async with sem:
                async with self.task.step("Creating missing vms", inst.label, n, len(missing)):
                    await updater.new_vm(inst)
        results = await asyncio.gather(*(one(n + 1, i) for n, i in enumerate(missing)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def update_group(self, updater: InstanceUpdater, m: Manifest, g: InstanceGroup,
                           changes: list[Change]) -> None:
        """Canaries first (at most max_in_flight at once), then the rest max_in_flight at a time. The first
        failure stops the group: instances not started yet are left as they are."""
        upd: UpdateConfig = g.update or m.update
        todo = [c for c in changes if c.touches]
        for c in changes:
            if c not in todo:
                self.task.info(f"instance {c.instance.label} is up to date")
            else:
                self.task.info(f"instance {c.instance.label}: {c.kind} ({'; '.join(c.reasons)})")
        if not todo:
            return
        in_flight = upd.in_flight(g.instances or len(changes))
        canaries = todo[:min(upd.canaries, len(todo))]
        rest = todo[len(canaries):]
        total = len(todo)
        failed: list[BaseException] = []
        sem = asyncio.Semaphore(in_flight)

        async def one(n: int, change: Change, canary: bool) -> None:
            async with sem:
                if failed:
                    return
                inst = change.instance
                name = f"{inst.label} (canary)" if canary else inst.label
                watch = (upd.canary_watch_time if canary else upd.update_watch_time).schedule()
                try:
                    async with self.task.step("Updating instance", name, n, total, tags=[g.name]):
                        await updater.update(change, watch)
                except BaseException as e:
                    failed.append(e)
                    raise
        for phase, batch in ((True, canaries), (False, rest)):
            offset = 0 if phase else len(canaries)
            results = await asyncio.gather(*(one(offset + k + 1, c, phase) for k, c in enumerate(batch)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def delete_unneeded(self, m: Manifest, vms: VMs, agents: Agents) -> None:
        """Instances beyond a group's count, or of groups no longer in the manifest: drain, stop, delete;
        their disks become orphaned."""
        extra = unneeded(m, await self.instances.of_deployment(m.name))
        for n, r in enumerate(extra):
            async with self.task.step("Deleting unneeded instances", r.label, n + 1, len(extra)):
                await delete_instance(r, True, cpi=self.cpi, agents=agents, vms=vms, instances=self.instances,
                                      task=self.task)
                await self.disks.orphan_of_instance(r.id)
        if extra:
            await self.cpi.remove_unused_networks()
