"""The director process: HTTP API (25555), registry (25889), NATS RPC, Docker CPI, sqlite, tasks.

Resources are opened and closed with aiohttp's ``cleanup_ctx``; handlers reach the director through the
``DIRECTOR`` AppKey."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from boshlab import wire
from boshlab.dav import DavClient, DavConfig

from .config import Config
from .cpi import LABEL_ROLE, DockerCPI
from .db import Database
from .deployer import ACTIONS, Deployer
from .health import Heartbeat, HealthMonitor
from .lifecycle import apply_resolutions, delete_deployment, delete_release, scan
from .manifest import Manifest, ManifestError, parse_manifest
from .nats_rpc import AgentClient, AgentError, NatsRpc, RpcTimeout
from .releases import upload_release
from .tasks import DeploymentLocked, Task, TaskNotRunning, TaskRunner

log = logging.getLogger("director")

VERSION = "0.1.0"


class Director:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = Database(Path(config.data_dir) / "director.sqlite3")
        self.rpc = NatsRpc(config.nats_url)
        self.cpi = DockerCPI(config.stemcell_image, config.lab_name, config.network, threads=config.max_threads)
        self.dav = DavClient(DavConfig(config.blobstore_endpoint, config.blobstore_director_user,
                                       config.blobstore_director_password))
        self.tasks = TaskRunner(self.db, config.data_dir)
        self.health = HealthMonitor(self)

    @property
    def heartbeats(self) -> dict[str, Heartbeat]:
        return self.health.heartbeats

    async def start(self) -> None:
        await self.db.open()
        failed = await self.tasks.recover()
        if failed:
            log.warning("task(s) %s were running when the director stopped: marked failed", ", ".join(map(str, failed)))
        await self.cpi.setup()
        await self.rpc.connect()
        assert self.rpc.nc is not None
        await self.rpc.nc.subscribe(wire.HEARTBEAT_WILDCARD, cb=self.health.on_heartbeat)
        await self.reconcile()
        self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.tasks.cancel_all()
        if not self.config.keep_vms_on_stop:
            await self.delete_all_vms()
        else:
            log.info("keeping the VMs: a restarted director finds them again (docker compose down deletes them)")
        await self.rpc.close()
        await self.dav.close()
        await self.cpi.close()
        await self.db.close()

    # --- VMs that really exist -----------------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Match the director's state to the containers that exist: forget VMs that are gone, delete VMs
        the director does not know (e.g. a compilation VM of a task that died). Returns what it did."""
        done: list[str] = []
        vms = await self.cpi.list_vms()
        known = {r["vm_cid"]: r for r in await self.db.all("SELECT * FROM instances WHERE vm_cid IS NOT NULL")}
        existing = {v["cid"] for v in vms}
        for cid, row in known.items():
            if cid not in existing:
                await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, dirty=1 WHERE id=?", (row["id"],))
                await self.db.delete_settings(cid)
                done.append(f"VM of {row['deployment']}/{row['group_name']}/{row['idx']} is gone; it will be recreated")
        for v in vms:
            if v["cid"] not in known:
                await self.cpi.delete_vm(v["cid"])
                await self.db.delete_settings(v["cid"])
                done.append(f"deleted unknown VM {v['name']} ({v.get(LABEL_ROLE, 'vm')})")
        kept = len(existing & set(known))
        if kept:
            done.append(f"found {kept} VM(s) of the last run")
        for line in done:
            log.info("reconcile: %s", line)
        return done

    async def delete_all_vms(self) -> None:
        vms = await self.cpi.list_vms()
        await asyncio.gather(*(self.cpi.delete_vm(v["cid"]) for v in vms), return_exceptions=True)
        for v in vms:
            await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL WHERE vm_cid=?", (v["cid"],))
            await self.db.delete_settings(v["cid"])
        if vms:
            log.info("deleted %d VM(s) of lab %s", len(vms), self.cpi.lab)

    async def deployments_missing_vms(self) -> list[str]:
        rows = await self.db.all("SELECT DISTINCT deployment FROM instances WHERE vm_cid IS NULL")
        return [str(r["deployment"]) for r in rows]

    async def ips_in_use(self, ip_range: str, exclude_deployment: str) -> dict[str, str]:
        """IP -> who holds it, on a manual network's range, outside one deployment."""
        out: dict[str, str] = {}
        for r in await self.db.all("SELECT id, deployment, group_name, idx, networks FROM instances WHERE deployment != ?",
                                   (exclude_deployment,)):
            for net in json.loads(r["networks"] or "{}").values():
                if isinstance(net, dict) and net.get("range") == ip_range and net.get("ip"):
                    out[str(net["ip"])] = f"{r['deployment']}/{r['group_name']}/{r['id']} ({r['idx']})"
        return out

    # --- resurrection ----------------------------------------------------------------------------------

    async def resurrection_enabled(self, deployment: str) -> bool:
        for key in (deployment, "*"):
            row = await self.db.one("SELECT enabled FROM resurrection WHERE deployment=?", (key,))
            if row is not None:
                return bool(row["enabled"])
        return self.config.resurrection

    async def set_resurrection(self, enabled: bool, deployment: str | None) -> None:
        await self.db.execute("INSERT INTO resurrection (deployment, enabled) VALUES (?, ?) ON CONFLICT(deployment) "
                              "DO UPDATE SET enabled=excluded.enabled", (deployment or "*", int(enabled)))

    # --- operations (each a task) --------------------------------------------------------------------

    async def upload_release_task(self, path: Path) -> int:
        async def body(task: Task) -> str:
            try:
                return await upload_release(self.db, self.dav, task, path, Path(self.config.data_dir) / "tmp")
            finally:
                path.unlink(missing_ok=True)
        return await self.tasks.start("create release", body)

    async def deploy_task(self, manifest_text: str, deployment: str | None = None, skip_drain: bool = False,
                          pinned: dict[str, str] | None = None) -> int:
        """A deploy holds its deployment's lock (DeploymentLocked if another task has it). A manifest whose
        name cannot be read still gets a task: it fails there with the parse error. ``pinned``: release
        versions to use where the manifest says "latest" (a redeploy of what was deployed)."""
        name = deployment or manifest_name(manifest_text)

        async def body(task: Task) -> str:
            return await Deployer(self, task).deploy(manifest_text, skip_drain=skip_drain, pinned=pinned)
        return await self.tasks.start("create deployment", body, name, lock=name is not None)

    async def stored(self, deployment: str) -> dict[str, Any]:
        row = await self.db.one("SELECT * FROM deployments WHERE name=?", (deployment,))
        if row is None:
            raise NotFound(f"Deployment '{deployment}' doesn't exist")
        return row

    async def select_instances(self, deployment: str, group: str | None, ref: str | None) -> list[dict[str, Any]]:
        """All instances, a group's, or one (``index`` or ``uuid``), as the bosh CLI's ``group[/id]``."""
        rows = await self.db.all("SELECT * FROM instances WHERE deployment=? ORDER BY group_name, idx", (deployment,))
        if group not in (None, "", "*"):
            rows = [r for r in rows if r["group_name"] == group]
            if not rows:
                raise NotFound(f"Deployment '{deployment}' has no instance group '{group}'")
        if ref not in (None, ""):
            # an index, else an id, else the start of an id (the bosh CLI's GROUP/INDEX and GROUP/ID)
            rows = ([r for r in rows if str(r["idx"]) == ref] or [r for r in rows if r["id"] == ref]
                    or [r for r in rows if r["id"].startswith(str(ref))])
            if len(rows) != 1:
                raise NotFound(f"Deployment '{deployment}' has no instance '{group}/{ref}'" if not rows else
                               f"'{group}/{ref}' matches {len(rows)} instances: give more of the id")
        return rows

    async def change_state_task(self, deployment: str, group: str | None, ref: str | None, action: str,
                                skip_drain: bool = False) -> int:
        """start | stop | restart | recreate, as a deploy of the stored manifest for the chosen instances."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        dep = await self.stored(deployment)
        rows = await self.select_instances(deployment, group, ref)
        ids = {r["id"] for r in rows}

        async def body(task: Task) -> str:
            await Deployer(self, task).deploy(dep["manifest"], actions={i: action for i in ids}, only=ids,
                                              pinned=json.loads(dep["releases"] or "{}"), store=False,
                                              skip_drain=skip_drain)
            return f"{action} {len(ids)} instance(s) of {deployment}"
        what = f"{group}/{ref}" if ref else group if group not in (None, "", "*") else "all"
        return await self.tasks.start(f"{action} instance(s) {what}", body, deployment, lock=True)

    async def delete_deployment_task(self, deployment: str, force: bool) -> int:
        await self.stored(deployment)

        async def body(task: Task) -> str:
            return await delete_deployment(self, task, deployment, force)
        return await self.tasks.start("delete deployment", body, deployment, lock=True)

    async def delete_release_task(self, name: str, version: str | None, force: bool) -> int:
        if await self.db.one("SELECT 1 FROM releases WHERE name=?", (name,)) is None:
            raise NotFound(f"Release '{name}' doesn't exist")

        async def body(task: Task) -> str:
            return await delete_release(self, task, name, version, force)
        return await self.tasks.start("delete release", body)

    async def problems(self, deployment: str) -> list[dict[str, Any]]:
        await self.stored(deployment)
        return [p.to_json() for p in await scan(self, deployment)]

    async def resolve_task(self, deployment: str, resolutions: dict[str, str]) -> int:
        await self.stored(deployment)

        async def body(task: Task) -> str:
            return await apply_resolutions(self, task, deployment, resolutions)
        return await self.tasks.start("apply resolutions", body, deployment, lock=True)

    async def scan_and_fix_task(self, deployment: str, instance_ids: list[str]) -> int:
        """The resurrector's task: recreate the VMs of these instances if they are still unresponsive."""
        async def body(task: Task) -> str:
            return await apply_resolutions(self, task, deployment, {i: "recreate_vm" for i in instance_ids})
        return await self.tasks.start("scan and fix", body, deployment, lock=True)

    async def instances(self, deployment: str, full: bool = False) -> list[dict[str, Any]]:
        rows = await self.db.all("SELECT * FROM instances WHERE deployment=? ORDER BY group_name, idx", (deployment,))
        out = []
        now = time.time()
        for r in rows:
            spec = json.loads(r["apply_spec"]) if r["apply_spec"] else None
            hb = self.heartbeats.get(r["agent_id"] or "")
            out.append({"instance": f"{r['group_name']}/{r['id']}", "group": r["group_name"], "index": r["idx"],
                        "id": r["id"], "agent_id": r["agent_id"], "vm_cid": r["vm_cid"], "vm_name": r["vm_name"],
                        "ips": instance_ips(r), "process_state": self.health.state_of(r, now),
                        "state": r["state"], "configuration_hash": spec.get("configuration_hash") if spec else None,
                        "vitals": hb.payload.get("vitals") if hb else None,
                        "last_heartbeat": hb.at if hb else None,
                        "vm_created_at": r["vm_created_at"]})
        if full:
            async def processes(item: dict[str, Any]) -> None:
                item["processes"] = []
                if not item["agent_id"] or item["process_state"] in ("no vm", "unresponsive agent"):
                    return
                try:
                    state = await AgentClient(self.rpc, item["agent_id"]).call("get_state", timeout=3)
                except (AgentError, RpcTimeout):
                    return
                item["processes"] = state.get("processes") or [] if isinstance(state, dict) else []
                item["job_state"] = state.get("job_state") if isinstance(state, dict) else None
            await asyncio.gather(*(processes(i) for i in out))
        return out

    async def vms(self, deployment: str) -> list[dict[str, Any]]:
        m = manifest_or_none((await self.stored(deployment))["manifest"])
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


class NotFound(Exception):
    pass


def manifest_name(text: str) -> str | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and name else None


def manifest_or_none(text: str) -> Manifest | None:
    try:
        return parse_manifest(text)
    except ManifestError:
        return None


def instance_ips(r: dict[str, Any]) -> list[str]:
    ips = [str(r["ip"])] if r["ip"] else []
    for net in json.loads(r.get("networks") or "{}").values():
        if isinstance(net, dict) and net.get("ip") and str(net["ip"]) not in ips:
            ips.append(str(net["ip"]))
    return ips


DIRECTOR = web.AppKey("director", Director)


# --- HTTP helpers ------------------------------------------------------------------------------------

def _authorized(request: web.Request, user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return given == f"{user}:{password}"


def basic_auth(user: str, password: str, realm: str, open_paths: tuple[str, ...] = ()) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in open_paths or _authorized(request, user, password):
            return await handler(request)
        return web.json_response({"code": 401, "description": "Not authorized: give the director's user and password"},
                                 status=401, headers={"WWW-Authenticate": f'Basic realm="{realm}"'})
    return mw


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as e:
        return web.json_response({"code": 404, "description": str(e)}, status=404)
    except (DeploymentLocked, TaskNotRunning) as e:
        return web.json_response({"code": 409, "description": str(e)}, status=409)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            return web.json_response({"code": e.status, "description": e.text or e.reason}, status=e.status)
        raise


def task_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "state": row["state"], "description": row["description"], "timestamp": int(row["started_at"]),
            "started_at": int(row["started_at"]), "ended_at": int(row["ended_at"]) if row["ended_at"] else None,
            "result": row["result"], "user": row["user"], "deployment": row["deployment"]}


def task_accepted(request: web.Request, task_id: int) -> web.Response:
    return web.json_response({"id": task_id, "state": "processing", "location": f"/tasks/{task_id}"},
                             status=202, headers={"Location": f"/tasks/{task_id}"})


# --- API routes ---------------------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    return web.json_response({"name": d.config.name, "uuid": d.rpc.process_uuid, "version": VERSION, "user": d.config.api_user,
                              "cpi": "docker", "stemcell_image": d.config.stemcell_image, "lab": d.cpi.lab,
                              "features": {"workshop": d.config.workshop},
                              "health": {"heartbeat_interval": d.config.heartbeat_interval,
                                         "agent_timeout": d.config.agent_timeout,
                                         "agents_heard": len(d.heartbeats), "heartbeats_received": d.health.received}})


@routes.post("/releases")
async def post_release(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    tmpdir = Path(d.config.data_dir) / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    path = tmpdir / f"upload-{time.time_ns()}.tgz"
    size = 0
    with open(path, "wb") as f:   # stream to disk: release bodies may be large
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            await asyncio.to_thread(f.write, chunk)
    if size == 0:
        path.unlink()
        raise web.HTTPBadRequest(text="empty body: send the release tarball")
    return task_accepted(request, await d.upload_release_task(path))


@routes.get("/releases")
async def get_releases(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    rows = await d.db.all("SELECT name, version, created_at FROM releases ORDER BY name, created_at")
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        rel = out.setdefault(r["name"], {"name": r["name"], "release_versions": []})
        rel["release_versions"].append({"version": r["version"], "uploaded_at": int(r["created_at"]),
                                        "currently_deployed": False})
    for dep in await d.db.all("SELECT name, releases FROM deployments"):
        for rel, version in json.loads(dep["releases"] or "{}").items():
            for v in out.get(rel, {}).get("release_versions", []):
                if v["version"] == version:
                    v["currently_deployed"] = True
                    v.setdefault("deployments", []).append(dep["name"])
    return web.json_response(list(out.values()))


@routes.delete("/releases/{name}")
async def delete_release_route(request: web.Request) -> web.Response:
    """``?version=V`` deletes one version (default: all); ``?force=true`` goes on when a blob cannot be deleted."""
    d = request.app[DIRECTOR]
    version = request.query.get("version") or None
    return task_accepted(request, await d.delete_release_task(request.match_info["name"], version, _flag(request, "force")))


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


@routes.post("/deployments")
async def post_deployment(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    text = await request.text()
    if not text.strip():
        raise web.HTTPBadRequest(text="empty body: send the deployment manifest (YAML)")
    return task_accepted(request, await d.deploy_task(text, skip_drain=_flag(request, "skip_drain")))


@routes.get("/deployments")
async def get_deployments(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    out = []
    for r in await d.db.all("SELECT name, manifest, releases, updated_at FROM deployments ORDER BY name"):
        resolved = json.loads(r["releases"] or "{}")
        m = yaml.safe_load(r["manifest"]) or {}
        rels = [{"name": x.get("name"), "version": resolved.get(x.get("name"), str(x.get("version")))}
                for x in m.get("releases") or [] if isinstance(x, dict)]
        counts = await d.db.one("SELECT COUNT(*) AS n, SUM(vm_cid IS NOT NULL) AS vms FROM instances WHERE deployment=?",
                                (r["name"],)) or {}
        lock = d.tasks.lock_holder(r["name"])
        out.append({"name": r["name"], "releases": rels, "instances": counts.get("n") or 0, "vms": counts.get("vms") or 0,
                    "updated_at": int(r["updated_at"]), "locked_by_task": lock[0] if lock else None,
                    "resurrection": await d.resurrection_enabled(r["name"])})
    return web.json_response(out)


async def _deployment_or_404(d: Director, name: str) -> dict[str, Any]:
    return await d.stored(name)


@routes.get("/deployments/{name}")
async def get_deployment(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    row = await _deployment_or_404(d, request.match_info["name"])
    return web.json_response({"name": row["name"], "manifest": row["manifest"],
                              "releases": json.loads(row["releases"] or "{}")})


@routes.delete("/deployments/{name}")
async def delete_deployment_route(request: web.Request) -> web.Response:
    """Drain, stop and delete every VM, the deployment's disks and networks; ``?force=true`` goes on past
    agents that do not answer."""
    d = request.app[DIRECTOR]
    return task_accepted(request, await d.delete_deployment_task(request.match_info["name"], _flag(request, "force")))


@routes.get("/deployments/{name}/instances")
async def get_instances(request: web.Request) -> web.Response:
    """``?format=full`` adds each instance's processes (get_state), as ``bosh instances --ps``."""
    d = request.app[DIRECTOR]
    name = request.match_info["name"]
    await _deployment_or_404(d, name)
    return web.json_response(await d.instances(name, full=request.query.get("format") == "full"))


@routes.get("/deployments/{name}/vms")
async def get_vms(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    return web.json_response(await d.vms(request.match_info["name"]))


STATE_ACTIONS = {"started": "start", "stopped": "stop", "restart": "restart", "recreate": "recreate",
                 "start": "start", "stop": "stop"}


async def _change_state(request: web.Request, group: str | None, ref: str | None) -> web.Response:
    d = request.app[DIRECTOR]
    action = STATE_ACTIONS.get(request.query.get("state", ""))
    if action is None:
        raise web.HTTPBadRequest(text="state must be started, stopped, restart or recreate")
    task_id = await d.change_state_task(request.match_info["name"], group, ref, action, _flag(request, "skip_drain"))
    return task_accepted(request, task_id)


@routes.put("/deployments/{name}/jobs/{group}")
async def put_group_state(request: web.Request) -> web.Response:
    """BOSH's ``PUT /deployments/D/jobs/G?state=started|stopped|restart|recreate`` (G ``*``: every group)."""
    return await _change_state(request, request.match_info["group"], None)


@routes.put("/deployments/{name}/jobs/{group}/{ref}")
async def put_instance_state(request: web.Request) -> web.Response:
    """One instance: ``{ref}`` is its index or (a prefix of) its id."""
    return await _change_state(request, request.match_info["group"], request.match_info["ref"])


@routes.get("/deployments/{name}/problems")
async def get_problems(request: web.Request) -> web.Response:
    """cloud-check's scan: VMs that vanished, exited, or whose agent does not answer (read-only)."""
    d = request.app[DIRECTOR]
    return web.json_response(await d.problems(request.match_info["name"]))


@routes.put("/deployments/{name}/problems")
async def put_problems(request: web.Request) -> web.Response:
    """``{"resolutions": {"<problem id>": "recreate_vm" | "delete_vm_reference" | ...}}`` -> a task."""
    d = request.app[DIRECTOR]
    try:
        body = await request.json()
        wanted = body["resolutions"]
        assert isinstance(wanted, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in wanted.items())
    except (ValueError, KeyError, TypeError, AssertionError):
        raise web.HTTPBadRequest(text='body must be {"resolutions": {"<problem id>": "<resolution>"}}') from None
    return task_accepted(request, await d.resolve_task(request.match_info["name"], wanted))


@routes.get("/resurrection")
async def get_resurrection(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    rows = await d.db.all("SELECT deployment, enabled FROM resurrection ORDER BY deployment")
    return web.json_response({"default": d.config.resurrection, "agent_timeout": d.config.agent_timeout,
                              "settings": {r["deployment"]: bool(r["enabled"]) for r in rows}})


@routes.put("/resurrection")
async def put_resurrection(request: web.Request) -> web.Response:
    """``{"resurrection_paused": bool}`` (BOSH) or ``{"enabled": bool}``, optionally ``"deployment": name``."""
    d = request.app[DIRECTOR]
    try:
        body = await request.json()
        enabled = body["enabled"] if "enabled" in body else not body["resurrection_paused"]
        assert isinstance(enabled, bool)
        dep = body.get("deployment")
        assert dep is None or isinstance(dep, str)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise web.HTTPBadRequest(text='body must be {"enabled": true|false} (and optionally "deployment")') from None
    if dep:
        await d.stored(dep)
    await d.set_resurrection(enabled, dep)
    return web.json_response({"deployment": dep or "*", "enabled": enabled})


@routes.get("/tasks")
async def get_tasks(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    try:
        limit = int(request.query.get("limit", "30"))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number") from None
    state = request.query.get("state")
    sql, params = "SELECT * FROM tasks", []
    if state:
        sql += " WHERE state IN (" + ",".join("?" for _ in state.split(",")) + ")"
        params = state.split(",")
    rows = await d.db.all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return web.json_response([task_json(r) for r in rows])


async def _task_or_404(d: Director, raw: str) -> dict[str, Any]:
    try:
        task_id = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"task id must be a number, got {raw!r}") from None
    row = await d.tasks.get(task_id)
    if row is None:
        raise web.HTTPNotFound(text=f"Task {task_id} doesn't exist")
    return row


@routes.get("/tasks/{id}")
async def get_task(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    return web.json_response(task_json(await _task_or_404(d, request.match_info["id"])))


@routes.delete("/tasks/{id}")
@routes.delete("/task/{id}")   # BOSH's route
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a running task: its current step stops (an agent's drain is cancelled with cancel_task)."""
    d = request.app[DIRECTOR]
    row = await _task_or_404(d, request.match_info["id"])
    state = await d.tasks.cancel(int(row["id"]))
    return web.json_response({"id": row["id"], "state": state}, status=202)


@routes.get("/tasks/{id}/output")
async def get_task_output(request: web.Request) -> web.StreamResponse:
    """``?type=event|debug|result``; ``offset`` (bytes) lets clients follow a running task."""
    d = request.app[DIRECTOR]
    row = await _task_or_404(d, request.match_info["id"])
    try:
        path = d.tasks.output_path(row["id"], request.query.get("type", "event"))
        offset = int(request.query.get("offset", "0"))
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    data = b""
    if path.exists():
        def read() -> bytes:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read()
        data = await asyncio.to_thread(read)
    return web.Response(body=data, content_type="text/plain",
                        headers={"X-Task-State": row["state"], "X-Next-Offset": str(offset + len(data))})


# --- registry ---------------------------------------------------------------------------------------

registry_routes = web.RouteTableDef()


@registry_routes.get("/instances/{instance_id}/settings")
async def registry_settings(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    settings = await d.db.get_settings(request.match_info["instance_id"])
    if settings is None:
        return web.json_response({"status": "not_found"}, status=404)
    return web.json_response({"settings": settings, "status": "ok"})


# --- wiring -------------------------------------------------------------------------------------------

def make_apps(director: Director) -> tuple[web.Application, web.Application]:
    cfg = director.config
    api = web.Application(middlewares=[errors_as_json, basic_auth(cfg.api_user, cfg.api_password, "BOSH Director",
                                                                  open_paths=("/healthz", "/info"))],
                          client_max_size=1 << 20)
    api[DIRECTOR] = director
    api.add_routes(routes)
    from .api_agent import routes as agent_routes   # disks, logs, ssh, agent messages
    api.add_routes(agent_routes)
    api.cleanup_ctx.append(cleanup_ctx(director))

    registry = web.Application(middlewares=[errors_as_json, basic_auth(cfg.registry_user, cfg.registry_password, "Registry")])
    registry[DIRECTOR] = director
    registry.add_routes(registry_routes)
    return api, registry


def cleanup_ctx(director: Director) -> Callable[[web.Application], AsyncIterator[None]]:
    """Open the director's resources when the API app starts, close them (VMs included) when it stops."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await director.start()
        yield
        await director.stop()
    return ctx
