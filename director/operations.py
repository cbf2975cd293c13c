"""The service layer: every operation of the director's API, as a task (deploy, delete, cloud-check, ...)
or a query (instances, VMs, deployments). HTTP handlers call these and do nothing else; each operation
builds its collaborators (deployer, cloud-check, VM factory) with just the parts they need."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from boshlab import safeyaml
from boshlab.dav import BlobNotFound, BlobstoreError, DavClient

from .cloudcheck import CloudCheck, scan
from .config import Config
from .cpi import CPI, CPIError
from .deletion import delete_deployment, delete_release
from .deploy import Deployer, DeployRequest
from .disks import delete_orphaned_disk
from .health import HealthMonitor
from .manifest import Manifest, ManifestError, parse_manifest
from .naming import instance_path
from .nats_auth import NatsAuth
from .nats_rpc import AgentError, Agents, RpcTimeout
from .planner import ACTIONS
from .releases import upload_release
from .store import DeploymentRow, DiskRow, InstanceRow, Store, TaskRow
from .tasks import Task, TaskFailed, TaskRunner
from .vms import AgentEnv, VMs

log = logging.getLogger("director")

LOG_TYPES = ("job", "agent", "system")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")     # as the manifest parser takes names
FOLLOW_COMMAND = ["bash", "-O", "globstar", "-O", "nullglob", "-c",
                  "echo $$; exec tail -n 20 -F /var/vcap/sys/log/**/*.log /var/vcap/bosh/log/current 2>&1"]


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class BadRequest(ValueError):
    pass


class Unavailable(Exception):
    """A part the operation needs (the CPI, the blobstore) failed; the text names it (502)."""


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer as it was on the wire: a value, or the exception's message."""
    value: Any = None
    exception: str | None = None


def manifest_header(text: str) -> tuple[str | None, set[str]]:
    """The deployment name and the release names a manifest gives, as far as they can be read (the deploy
    task checks the rest and names what is wrong). One parse, for the lock and the releases in use."""
    try:
        doc = safeyaml.load(text, what="manifest")
    except safeyaml.YamlError:
        return None, set()
    if not isinstance(doc, dict):
        return None, set()
    name = doc.get("name")
    raw = doc.get("releases")
    releases = {str(r["name"]) for r in raw if isinstance(r, dict) and "name" in r} if isinstance(raw, list) else set()
    return (name if isinstance(name, str) and NAME.fullmatch(name) else None), releases


async def _cpi_errors_named(stream: AsyncGenerator[bytes, None], label: str) -> AsyncGenerator[bytes, None]:
    try:
        async for data in stream:
            yield data
    except CPIError as e:
        raise Unavailable(f"{label}: {e}") from None


def pick_instances(rows: list[InstanceRow], deployment: str, group: str | None, ref: str | None) -> list[InstanceRow]:
    """All instances, a group's, or one: a number is an index (the bosh CLI's GROUP/INDEX), anything else an id
    or the start of one (GROUP/ID). NotFound names what matched nothing, or that a prefix matched several."""
    if group not in (None, "", "*"):
        rows = [r for r in rows if r.group == group]
        if not rows:
            raise NotFound(f"Deployment '{deployment}' has no instance group '{group}'")
    if ref is None or ref == "":
        return rows
    if ref.isascii() and ref.isdigit():
        rows = [r for r in rows if len(ref) <= 9 and r.index == int(ref)]
    else:
        rows = [r for r in rows if r.id == ref] or [r for r in rows if r.id.startswith(ref)]
    if len(rows) != 1:
        raise NotFound(f"Deployment '{deployment}' has no instance '{group}/{ref}'" if not rows else
                       f"'{group}/{ref}' matches {len(rows)} instances: give more of the id")
    return rows


def manifest_or_none(text: str) -> Manifest | None:
    try:
        return parse_manifest(text)
    except ManifestError:
        return None


def task_json(row: TaskRow) -> dict[str, Any]:
    return {"id": row.id, "state": row.state, "description": row.description, "timestamp": int(row.started_at),
            "started_at": int(row.started_at), "ended_at": int(row.ended_at) if row.ended_at else None,
            "result": row.result, "user": row.user, "deployment": row.deployment}


def disk_json(d: DiskRow) -> dict[str, Any]:
    return {"cid": d.cid, "deployment": d.deployment, "instance": d.instance, "size": d.size, "orphaned": d.orphaned,
            "created_at": d.created_at, "orphaned_at": d.orphaned_at}


class Operations:
    def __init__(self, config: Config, store: Store, cpi: CPI, agents: Agents, dav: DavClient, tasks: TaskRunner,
                 health: HealthMonitor, agent_env: AgentEnv, nats_auth: NatsAuth | None = None) -> None:
        self.config, self.store, self.cpi, self.agents, self.dav = config, store, cpi, agents, dav
        self.tasks, self.health, self.agent_env = tasks, health, agent_env
        self.nats_auth = nats_auth or NatsAuth("")
        self._using_releases: dict[int, set[str]] = {}    # running deploy task -> release names it uses

    # --- collaborators, each with just what it needs ---------------------------------------------------

    def deployer(self, task: Task) -> Deployer:
        s = self.store
        return Deployer(s.releases, s.compiled, s.deployments, s.instances, s.disks, s.registry, self.dav, self.cpi,
                        self.agents, self.agent_env, self.health.observe, task, self.config.name,
                        self.config.max_threads, nats_auth=self.nats_auth)

    def vms(self, task: Task) -> VMs:
        return VMs(self.cpi, self.store.registry, self.agents.for_task(task.debug), self.agent_env, task,
                   self.nats_auth)

    def cloud_check(self, task: Task) -> CloudCheck:
        deployer = self.deployer(task)
        return CloudCheck(self.cpi, self.agents.for_task(task.debug), self.vms(task), self.store.instances,
                          self.store.deployments, task, deployer.deploy)

    # --- VMs that really exist -----------------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Match the director's state to the VMs that exist: forget VMs that are gone, delete VMs the director
        does not know (e.g. a compilation VM of a task that died). Returns what it did."""
        done: list[str] = []
        vms = await self.cpi.list_vms()
        known = {r.vm_cid: r for r in await self.store.instances.with_vms() if r.vm_cid}
        existing = {v.cid for v in vms}
        for cid, row in known.items():
            if cid not in existing:
                await self.store.instances.vm_gone(row.id)
                await self.store.registry.delete(cid)
                done.append(f"VM of {row.deployment}/{row.label} is gone; it will be recreated")
        for v in vms:
            if v.cid not in known:
                await self.cpi.delete_vm(v.cid)
                await self.store.registry.delete(v.cid)
                done.append(f"deleted unknown VM {v.name} ({v.role or 'vm'})")
        kept = len(existing & set(known))
        if kept:
            done.append(f"found {kept} VM(s) of the last run")
        await self.sync_nats_users()
        for line in done:
            log.info("reconcile: %s", line)
        return done

    async def delete_all_vms(self) -> None:
        vms = await self.cpi.list_vms()
        await asyncio.gather(*(self.cpi.delete_vm(v.cid) for v in vms), return_exceptions=True)
        for v in vms:
            await self.store.instances.vm_gone_by_cid(v.cid)
            await self.store.registry.delete(v.cid)
        if vms:
            log.info("deleted %d VM(s) of lab %s", len(vms), self.cpi.lab)
        await self.sync_nats_users()

    async def sync_nats_users(self) -> None:
        """NATS users for exactly the agents of the VMs the registry knows (nats-sync)."""
        users: dict[str, str] = {}
        for settings in (await self.store.registry.all()).values():
            u = urlsplit(settings.get("mbus", ""))
            if u.username and u.password and u.username == settings.get("agent_id"):
                users[unquote(u.username)] = unquote(u.password)
        await self.nats_auth.sync(users)

    async def deployments_missing_vms(self) -> list[str]:
        return await self.store.instances.deployments_missing_vms()

    # --- resurrection ----------------------------------------------------------------------------------

    async def resurrection_enabled(self, deployment: str) -> bool:
        setting = await self.store.resurrection.setting(deployment)
        return self.config.resurrection if setting is None else setting

    async def set_resurrection(self, enabled: bool, deployment: str | None) -> None:
        if deployment is not None:
            await self.stored(deployment)
        await self.store.resurrection.set(enabled, deployment)

    async def resurrection(self) -> dict[str, Any]:
        return {"default": self.config.resurrection, "agent_timeout": self.config.agent_timeout,
                "settings": await self.store.resurrection.all()}

    # --- releases ------------------------------------------------------------------------------------

    def upload_dir(self) -> Path:
        tmp = Path(self.config.data_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    async def upload_release_task(self, path: Path) -> int:
        async def body(task: Task) -> str:
            try:
                return await upload_release(self.store.releases, self.dav, task, path, self.upload_dir())
            finally:
                path.unlink(missing_ok=True)
        return await self.tasks.start("create release", body)

    async def releases(self) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in await self.store.releases.all():
            rel = out.setdefault(r.name, {"name": r.name, "release_versions": []})
            rel["release_versions"].append({"version": r.version, "uploaded_at": int(r.created_at),
                                            "currently_deployed": False})
        for dep in await self.store.deployments.all():
            for rel_name, version in dep.releases.items():
                for v in out.get(rel_name, {}).get("release_versions", []):
                    if v["version"] == version:
                        v["currently_deployed"] = True
                        v.setdefault("deployments", []).append(dep.name)
        return list(out.values())

    async def delete_release_task(self, name: str, version: str | None, force: bool) -> int:
        if not await self.store.releases.exists(name):
            raise NotFound(f"Release '{name}' doesn't exist")
        users = sorted(t for t, names in self._using_releases.items() if name in names)
        if users:
            raise Conflict(f"Release '{name}' is in use by running task(s) {', '.join(map(str, users))}: wait for "
                           f"them to finish (bosh-lab task N), or cancel them first")
        s = self.store

        async def body(task: Task) -> str:
            return await delete_release(name, version, force, releases=s.releases, compiled=s.compiled,
                                        deployments=s.deployments, blobs=self.dav, task=task)
        return await self.tasks.start("delete release", body)

    # --- deployments ---------------------------------------------------------------------------------

    async def deploy_task(self, manifest_text: str, deployment: str | None = None, skip_drain: bool = False,
                          pinned: dict[str, str] | None = None) -> int:
        """A deploy holds its deployment's lock (DeploymentLocked if another task has it). A manifest whose
        name cannot be read still gets a task: it fails there with the parse error. ``pinned``: release
        versions to use where the manifest says "latest" (a redeploy of what was deployed)."""
        named, releases = await asyncio.to_thread(manifest_header, manifest_text)
        name = deployment or named

        async def body(task: Task) -> str:
            self._using_releases[task.id] = releases
            try:
                return await self.deployer(task).deploy(DeployRequest(manifest_text, pinned=pinned,
                                                                      skip_drain=skip_drain))
            finally:
                self._using_releases.pop(task.id, None)
        return await self.tasks.start("create deployment", body, name, lock=name is not None)

    async def stored(self, deployment: str) -> DeploymentRow:
        row = await self.store.deployments.get(deployment)
        if row is None:
            raise NotFound(f"Deployment '{deployment}' doesn't exist")
        return row

    async def deployments(self) -> list[dict[str, Any]]:
        out = []
        for d in await self.store.deployments.all():
            try:
                m = safeyaml.load(d.manifest, what="manifest") or {}
            except safeyaml.YamlError:
                m = {}
            m = m if isinstance(m, dict) else {}
            rels = [{"name": x.get("name"), "version": d.releases.get(str(x.get("name")), str(x.get("version")))}
                    for x in m.get("releases") or [] if isinstance(x, dict)]
            n, vms = await self.store.instances.counts(d.name)
            lock = self.tasks.lock_holder(d.name)
            out.append({"name": d.name, "releases": rels, "instances": n, "vms": vms, "updated_at": int(d.updated_at),
                        "locked_by_task": lock[0] if lock else None,
                        "resurrection": await self.resurrection_enabled(d.name)})
        return out

    async def select_instances(self, deployment: str, group: str | None, ref: str | None) -> list[InstanceRow]:
        """All instances, a group's, or one (``index`` or ``uuid``), as the bosh CLI's ``group[/id]``."""
        return pick_instances(await self.store.instances.of_deployment(deployment), deployment, group, ref)

    async def change_state_task(self, deployment: str, group: str | None, ref: str | None, action: str,
                                skip_drain: bool = False) -> int:
        """start | stop | restart | recreate, as a deploy of the stored manifest for the chosen instances."""
        if action not in ACTIONS:
            raise BadRequest(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        dep = await self.stored(deployment)
        ids = {r.id for r in await self.select_instances(deployment, group, ref)}

        async def body(task: Task) -> str:
            self._using_releases[task.id] = set(dep.releases)
            try:
                await self.deployer(task).deploy(DeployRequest(dep.manifest, actions={i: action for i in ids},
                                                               only=ids, pinned=dep.releases, store=False,
                                                               skip_drain=skip_drain))
            finally:
                self._using_releases.pop(task.id, None)
            return f"{action} {len(ids)} instance(s) of {deployment}"
        what = f"{group}/{ref}" if ref else group if group not in (None, "", "*") else "all"
        return await self.tasks.start(f"{action} instance(s) {what}", body, deployment, lock=True)

    async def delete_deployment_task(self, deployment: str, force: bool) -> int:
        await self.stored(deployment)
        s = self.store

        async def body(task: Task) -> str:
            return await delete_deployment(deployment, force, cpi=self.cpi, agents=self.agents.for_task(task.debug),
                                           vms=self.vms(task), instances=s.instances, disks=s.disks,
                                           deployments=s.deployments, task=task)
        return await self.tasks.start("delete deployment", body, deployment, lock=True)

    async def problems(self, deployment: str) -> list[dict[str, Any]]:
        await self.stored(deployment)
        rows = await self.store.instances.of_deployment(deployment)
        return [p.to_json() for p in await scan(self.cpi, self.agents, rows)]

    async def resolve_task(self, deployment: str, resolutions: dict[str, str]) -> int:
        await self.stored(deployment)

        async def body(task: Task) -> str:
            return await self.cloud_check(task).apply_resolutions(deployment, resolutions)
        return await self.tasks.start("apply resolutions", body, deployment, lock=True)

    async def scan_and_fix_task(self, deployment: str, instance_ids: list[str]) -> int:
        """The resurrector's task: recreate the VMs of these instances if they are still unresponsive, and
        make VMs for those that have none (a replacement that failed before)."""
        async def body(task: Task) -> str:
            return await self.cloud_check(task).resurrect(deployment, instance_ids)
        return await self.tasks.start("scan and fix", body, deployment, lock=True)

    async def instances(self, deployment: str, full: bool = False) -> list[dict[str, Any]]:
        await self.stored(deployment)
        rows = await self.store.instances.of_deployment(deployment)
        out = []
        now = time.time()
        for r in rows:
            hb = self.health.heartbeats.get(r.agent_id or "")
            out.append({"instance": instance_path(r.group, r.id), "group": r.group, "index": r.index, "id": r.id,
                        "agent_id": r.agent_id, "vm_cid": r.vm_cid, "vm_name": r.vm_name, "ips": r.ips(),
                        "process_state": self.health.state_of(r, now), "state": r.state,
                        "configuration_hash": r.configuration_hash,
                        "vitals": hb.payload.get("vitals") if hb else None,
                        "last_heartbeat": hb.at if hb else None, "vm_created_at": r.vm_created_at})
        if full:
            async def processes(item: dict[str, Any]) -> None:
                item["processes"] = []
                if not item["agent_id"] or item["process_state"] in ("no vm", "unresponsive agent"):
                    return
                try:
                    state = await self.agents(item["agent_id"], timeout=3).call("get_state")
                except (AgentError, RpcTimeout):
                    return
                if isinstance(state, dict):
                    procs = state.get("processes")
                    item["processes"] = procs if isinstance(procs, list) else []
                    item["job_state"] = state.get("job_state")
            await asyncio.gather(*(processes(i) for i in out))
        return out

    async def vms_of(self, deployment: str) -> list[dict[str, Any]]:
        m = manifest_or_none((await self.stored(deployment)).manifest)
        out = []
        for i in await self.instances(deployment):
            if not i["vm_cid"]:
                continue
            vm_type = "default"
            if m is not None:
                try:
                    vm_type = m.group(i["group"]).vm_type
                except KeyError:
                    pass
            out.append({"instance": i["instance"], "group": i["group"], "index": i["index"], "id": i["id"],
                        "process_state": i["process_state"], "ips": i["ips"], "vm_cid": i["vm_cid"],
                        "vm_name": i["vm_name"], "vm_type": vm_type, "active": True, "agent_id": i["agent_id"],
                        "vm_created_at": i["vm_created_at"], "vitals": i["vitals"]})
        return out

    # --- tasks ---------------------------------------------------------------------------------------

    async def task(self, task_id: int) -> TaskRow:
        row = await self.tasks.get(task_id)
        if row is None:
            raise NotFound(f"Task {task_id} doesn't exist")
        return row

    async def cancel_task(self, task_id: int) -> str:
        row = await self.task(task_id)
        return await self.tasks.cancel(row.id)

    async def recent_tasks(self, limit: int, states: list[str] | None) -> list[dict[str, Any]]:
        return [task_json(r) for r in await self.store.tasks.recent(limit, states)]

    async def task_output(self, task_id: int, kind: str, offset: int) -> tuple[TaskRow, bytes]:
        row = await self.task(task_id)
        path = self.tasks.output_path(row.id, kind)

        def read() -> bytes:
            if not path.exists() or offset >= path.stat().st_size:
                return b""
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        return row, await asyncio.to_thread(read)

    # --- disks ---------------------------------------------------------------------------------------

    async def disks(self, orphaned: bool | None) -> list[dict[str, Any]]:
        return [disk_json(d) for d in await self.store.disks.list(orphaned)]

    async def delete_disk_task(self, cid: str) -> int:
        row = await self.store.disks.get(cid)
        if row is None:
            raise NotFound(f"Disk '{cid}' doesn't exist")
        if not row.orphaned:
            raise Conflict(f"Disk '{cid}' is attached: only orphaned disks can be deleted")

        async def body(task: Task) -> str:
            return await delete_orphaned_disk(self.cpi, self.store.disks, task, cid)
        return await self.tasks.start("delete orphaned disk", body)

    # --- one instance's VM -------------------------------------------------------------------------------

    async def instance_with_vm(self, deployment: str, group: str, ref: str) -> InstanceRow:
        await self.stored(deployment)
        row = (await self.select_instances(deployment, group, ref))[0]
        if not row.agent_id or not row.vm_cid:
            raise Conflict(f"{row.label} has no VM")
        return row

    async def fetch_logs_task(self, row: InstanceRow, log_type: str, filters: list[str] | None) -> int:
        if not log_type or any(t not in LOG_TYPES for t in log_type.split(",")):
            raise BadRequest(f"type must be one of {', '.join(LOG_TYPES)} (comma-joinable), got {log_type!r}")
        assert row.agent_id is not None

        async def body(task: Task) -> str:
            agent = self.agents.for_task(task.debug)(row.agent_id or "")
            async with task.step("Fetching logs", row.label):
                try:
                    res = await agent.send_message("fetch_logs", log_type, filters)
                except (AgentError, RpcTimeout) as e:
                    raise TaskFailed(f"{row.label}: {e}") from None
            if not isinstance(res, dict) or not {"blobstore_id", "sha1"} <= set(res):
                raise TaskFailed(f"{row.label}: fetch_logs answered {res!r}, expected blobstore_id and sha1")
            return json.dumps({"blobstore_id": res["blobstore_id"], "sha1": res["sha1"]})
        return await self.tasks.start(f"fetch logs {row.group}/{row.index}", body, row.deployment)

    async def resource(self, blob_id: str) -> AsyncGenerator[tuple[int | None, bytes], None]:
        """A blob (log bundles) fetched with the director's credentials, as it comes."""
        if not blob_id or "/" in blob_id or ".." in blob_id:
            raise BadRequest("bad blob id")
        try:
            async for item in self.dav.stream(blob_id):
                yield item
        except BlobNotFound:
            raise NotFound(f"Resource '{blob_id}' doesn't exist") from None
        except BlobstoreError as e:
            raise Unavailable(f"the blobstore: {e}") from None

    async def follow_logs(self, row: InstanceRow) -> AsyncGenerator[bytes, None]:
        """``tail -F`` of the instance's job logs and agent log until the consumer stops; then tail is ended."""
        assert row.vm_cid is not None
        if not await self.cpi.has_vm(row.vm_cid):
            raise Conflict(f"{row.label}: its VM {row.vm_cid[:12]} is gone (bosh-lab cloud-check -d {row.deployment})")
        pid, head = "", b""
        stream = self.cpi.stream_exec(row.vm_cid, FOLLOW_COMMAND)
        try:
            async for data in _cpi_errors_named(stream, row.label):
                if not pid:    # the first line is tail's pid in the VM (bash execs it), to stop it afterwards
                    head += data
                    if b"\n" not in head:
                        continue
                    first, _, data = head.partition(b"\n")
                    pid = first.decode(errors="replace").strip() or "?"
                    if not data:
                        continue
                yield data
        finally:
            await stream.aclose()
            if pid.isdigit():
                try:
                    await self.cpi.exec(row.vm_cid, ["kill", pid])
                except CPIError as e:
                    log.info("stopping tail in %s: %s", row.label, e)

    async def ssh(self, row: InstanceRow, command: str, params: dict[str, Any]) -> AgentReply:
        return await self._ask(row, "ssh", [command, params], poll=False)

    async def agent_message(self, row: InstanceRow, method: str, args: list[Any]) -> AgentReply:
        return await self._ask(row, method, args, poll=True)

    async def _ask(self, row: InstanceRow, method: str, args: list[Any], poll: bool) -> AgentReply:
        """Raises RpcTimeout when the agent does not answer."""
        assert row.agent_id is not None
        agent = self.agents(row.agent_id, timeout=min(self.config.rpc_timeout, 30))
        try:
            value = await (agent.send_message(method, *args) if poll else agent.call(method, *args))
        except AgentError as e:
            return AgentReply(exception=str(e))
        return AgentReply(value=value)

    # --- the registry and /info ------------------------------------------------------------------------

    async def registry_settings(self, vm_cid: str) -> str | None:
        return await self.store.registry.get_raw(vm_cid)

    async def registry_credentials(self, vm_cid: str) -> tuple[str, str] | None:
        return await self.store.registry.credentials(vm_cid)

    def info(self, version: str, process_uuid: str) -> dict[str, Any]:
        c = self.config
        return {"name": c.name, "uuid": process_uuid, "version": version, "user": c.api_user,
                "cpi": c.cpi, "stemcell_image": c.stemcell_image, "lab": self.cpi.lab,
                "features": {"workshop": c.workshop},
                "nats": {"connected": self.agents.connected, "url": self.agents.redacted_url},
                "health": {"heartbeat_interval": c.heartbeat_interval, "agent_timeout": c.agent_timeout,
                           "agents_heard": len(self.health.heartbeats), "heartbeats_received": self.health.received}}
