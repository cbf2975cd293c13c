"""Compiling packages: every package the jobs need, dependencies first, each on a compilation VM of its own
(``compile_package``), reusing what was compiled before for the same fingerprint, stemcell and dependencies
(version ``<package version>.<build>``, as on slide 23)."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Protocol

from boshlab.contracts import BlobRef

from .cpi import LABEL_ROLE
from .nats_rpc import AgentError, Agents, RpcTimeout
from .store import CompiledPackageRow, CompiledPackages, ReleaseJobRow, ReleasePackageRow, Releases
from .tasks import Task, TaskFailed
from .vms import VMs


class Blobs(Protocol):
    async def sha1_of(self, blob_id: str) -> str | None: ...


def dependency_key(deps: dict[str, BlobRef]) -> str:
    return json.dumps(sorted([name, ref["version"]] for name, ref in deps.items()))


def topological(wanted: dict[str, ReleasePackageRow]) -> list[str]:
    """Package names, every package after its dependencies; a cycle is named."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise TaskFailed(f"package dependency cycle at '{name}'")
        visiting.add(name)
        for d in wanted[name].dependencies:
            visit(d)
        visiting.discard(name)
        order.append(name)
    for k in sorted(wanted):
        visit(k)
    return order


class Compiler:
    def __init__(self, releases: Releases, compiled: CompiledPackages, blobs: Blobs, vms: VMs, agents: Agents,
                 task: Task, stemcell_version: str, workers: int) -> None:
        self.releases, self.compiled, self.blobs, self.vms = releases, compiled, blobs, vms
        self.agents, self.task, self.stemcell, self.workers = agents, task, stemcell_version, workers

    async def _intact(self, blob_id: str, sha1: str, label: str) -> bool:
        """A compiled package is reused only if its blob is there with the sha1 recorded when it was made."""
        got = await self.blobs.sha1_of(blob_id)
        if got is None:
            self.task.info(f"compiled package {label}: its blob {blob_id} is gone from the blobstore: compiling again")
            return False
        if got != sha1:
            self.task.info(f"compiled package {label}: blob {blob_id} has sha1 {got}, not {sha1} as recorded "
                           f"(changed in the blobstore): compiling again")
            return False
        return True

    async def _collect(self, release: str, version: str, name: str, wanted: dict[str, ReleasePackageRow]) -> None:
        if name in wanted:
            return
        row = await self.releases.package(release, version, name)
        if row is None:
            raise TaskFailed(f"Package '{name}' is not in release '{release}/{version}'")
        wanted[name] = row
        for d in row.dependencies:
            await self._collect(release, version, d, wanted)

    async def compile(self, jobs: dict[str, ReleaseJobRow]) -> dict[str, BlobRef]:
        """Compile every package the jobs need (dependencies first); reuse what was compiled before."""
        wanted: dict[str, ReleasePackageRow] = {}
        for job in jobs.values():
            for p in job.spec.get("packages") or []:
                await self._collect(job.release, job.release_version, p, wanted)
        compiled: dict[str, BlobRef] = {}
        todo: list[str] = []
        for name in topological(wanted):
            row = wanted[name]
            cached = None
            if all(d in compiled for d in row.dependencies):
                key = dependency_key({d: compiled[d] for d in row.dependencies})
                cached = await self.compiled.find(row.fingerprint, self.stemcell, key)
            if cached is not None and await self._intact(cached.blobstore_id, cached.sha1, f"{name}/{cached.version}"):
                compiled[name] = cached.ref()
                self.task.info(f"package {name}/{cached.version} is already compiled for stemcell {self.stemcell}")
            else:
                todo.append(name)
        if not todo:
            return compiled
        sem = asyncio.Semaphore(self.workers)
        done = {name: asyncio.Event() for name in todo}
        for name in compiled:
            done.setdefault(name, asyncio.Event()).set()

        async def one(i: int, name: str) -> None:
            row = wanted[name]
            for d in row.dependencies:
                await done[d].wait()
            async with sem:
                compiled[name] = await self._compile_one(row, {d: compiled[d] for d in row.dependencies}, i, len(todo))
            done[name].set()

        results = await asyncio.gather(*(one(i + 1, n) for i, n in enumerate(todo)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return compiled

    async def _compile_one(self, row: ReleasePackageRow, deps: dict[str, BlobRef], index: int, total: int) -> BlobRef:
        build = await self.compiled.next_build(row.name, self.stemcell)
        version = f"{row.version}.{build}"
        label = f"{row.name}/{version}"
        async with self.task.step("Compiling packages", label, index, total):
            vm = await self.vms.create(f"compile-{row.name}", {LABEL_ROLE: "compilation"})
            try:
                self.task.info(f"compiling {label} on compilation VM {vm.info.name}")
                result = await self.agents(vm.agent_id).send_message(
                    "compile_package", row.blobstore_id, row.sha1, row.name, version, deps)
            except (AgentError, RpcTimeout) as e:
                raise TaskFailed(f"Compiling package {label} failed: {e}") from None
            finally:
                await self.vms.delete(vm.cid)
            res = result.get("result") if isinstance(result, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("blobstore_id"), str) \
                    or not isinstance(res.get("sha1"), str):
                raise TaskFailed(f"Compiling package {label}: agent answered {result!r}, expected "
                                 f"result.blobstore_id and sha1")
            done = CompiledPackageRow(row.name, row.fingerprint, self.stemcell, dependency_key(deps), build, version,
                                      res["sha1"], res["blobstore_id"], time.time())
            await self.compiled.put(done)
            return done.ref()
