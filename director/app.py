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
from nats.aio.msg import Msg

from boshlab import wire
from boshlab.dav import DavClient, DavConfig

from .config import Config
from .cpi import LABEL_ROLE, DockerCPI
from .db import Database
from .deployer import Deployer
from .nats_rpc import NatsRpc
from .releases import upload_release
from .tasks import Task, TaskRunner

log = logging.getLogger("director")

VERSION = "0.1.0"


class Director:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = Database(Path(config.data_dir) / "director.sqlite3")
        self.rpc = NatsRpc(config.nats_url)
        self.cpi = DockerCPI(config.stemcell_image, config.lab_name, config.network)
        self.dav = DavClient(DavConfig(config.blobstore_endpoint, config.blobstore_director_user,
                                       config.blobstore_director_password))
        self.tasks = TaskRunner(self.db, config.data_dir)
        self.heartbeats: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def deployment_lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def start(self) -> None:
        await self.db.open()
        await self.tasks.recover()
        await self.cpi.setup()
        await self.rpc.connect()
        assert self.rpc.nc is not None
        await self.rpc.nc.subscribe(wire.HEARTBEAT_WILDCARD, cb=self._on_heartbeat)
        await self.reconcile()

    async def stop(self) -> None:
        await self.tasks.cancel_all()
        if not self.config.keep_vms_on_stop:
            await self.delete_all_vms()
        await self.rpc.close()
        await self.dav.close()
        await self.cpi.close()
        await self.db.close()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            agent_id = wire.agent_id_of_hm_subject(msg.subject)
            payload = json.loads(msg.data)
        except (wire.WireError, ValueError):
            return
        if isinstance(payload, dict):
            self.heartbeats[agent_id] = (time.time(), payload)

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
                await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, apply_spec=NULL WHERE id=?", (row["id"],))
                await self.db.delete_settings(cid)
                done.append(f"VM of {row['deployment']}/{row['group_name']}/{row['idx']} is gone; it will be recreated")
        for v in vms:
            if v["cid"] not in known:
                await self.cpi.delete_vm(v["cid"])
                await self.db.delete_settings(v["cid"])
                done.append(f"deleted unknown VM {v['name']} ({v.get(LABEL_ROLE, 'vm')})")
        for line in done:
            log.info("reconcile: %s", line)
        return done

    async def delete_all_vms(self) -> None:
        vms = await self.cpi.list_vms()
        await asyncio.gather(*(self.cpi.delete_vm(v["cid"]) for v in vms), return_exceptions=True)
        for v in vms:
            await self.db.execute("UPDATE instances SET vm_cid=NULL, agent_id=NULL, apply_spec=NULL WHERE vm_cid=?", (v["cid"],))
            await self.db.delete_settings(v["cid"])
        if vms:
            log.info("deleted %d VM(s) of lab %s", len(vms), self.cpi.lab)

    async def deployments_missing_vms(self) -> list[str]:
        rows = await self.db.all("SELECT DISTINCT deployment FROM instances WHERE vm_cid IS NULL")
        return [str(r["deployment"]) for r in rows]

    # --- operations (each a task) --------------------------------------------------------------------

    async def upload_release_task(self, path: Path) -> int:
        async def body(task: Task) -> str:
            try:
                return await upload_release(self.db, self.dav, task, path, Path(self.config.data_dir) / "tmp")
            finally:
                path.unlink(missing_ok=True)
        return await self.tasks.start("create release", body)

    async def deploy_task(self, manifest_text: str, deployment: str | None = None) -> int:
        async def body(task: Task) -> str:
            return await Deployer(self, task).deploy(manifest_text)
        return await self.tasks.start("create deployment", body, deployment)

    async def instances(self, deployment: str) -> list[dict[str, Any]]:
        rows = await self.db.all("SELECT * FROM instances WHERE deployment=? ORDER BY group_name, idx", (deployment,))
        out = []
        threshold = max(60.0, 2.5 * self.config.heartbeat_interval)
        for r in rows:
            spec = json.loads(r["apply_spec"]) if r["apply_spec"] else None
            hb = self.heartbeats.get(r["agent_id"] or "")
            if not r["vm_cid"]:
                state = "no vm"
            elif hb is None or time.time() - hb[0] > threshold:
                state = "unresponsive agent" if hb is not None else "starting"
            else:
                state = str(hb[1].get("job_state"))
            out.append({"instance": f"{r['group_name']}/{r['id']}", "group": r["group_name"], "index": r["idx"],
                        "id": r["id"], "agent_id": r["agent_id"], "vm_cid": r["vm_cid"], "vm_name": r["vm_name"],
                        "ips": [r["ip"]] if r["ip"] else [], "process_state": state,
                        "configuration_hash": spec.get("configuration_hash") if spec else None,
                        "vitals": hb[1].get("vitals") if hb else None,
                        "last_heartbeat": hb[0] if hb else None})
        return out


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
                              "features": {"workshop": d.config.workshop}})


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
    deployed = await d.db.all("SELECT manifest FROM deployments")
    for dep in deployed:
        for rel in (yaml.safe_load(dep["manifest"]) or {}).get("releases") or []:
            if isinstance(rel, dict) and rel.get("name") in out:
                for v in out[rel["name"]]["release_versions"]:
                    if str(rel.get("version")) in (v["version"], "latest"):
                        v["currently_deployed"] = True
    return web.json_response(list(out.values()))


@routes.post("/deployments")
async def post_deployment(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    text = await request.text()
    if not text.strip():
        raise web.HTTPBadRequest(text="empty body: send the deployment manifest (YAML)")
    return task_accepted(request, await d.deploy_task(text))


@routes.get("/deployments")
async def get_deployments(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    out = []
    for r in await d.db.all("SELECT name, manifest FROM deployments ORDER BY name"):
        m = yaml.safe_load(r["manifest"]) or {}
        out.append({"name": r["name"], "releases": [{"name": x.get("name"), "version": str(x.get("version"))}
                                                    for x in m.get("releases") or [] if isinstance(x, dict)]})
    return web.json_response(out)


async def _deployment_or_404(d: Director, name: str) -> dict[str, Any]:
    row = await d.db.one("SELECT * FROM deployments WHERE name=?", (name,))
    if row is None:
        raise web.HTTPNotFound(text=f"Deployment '{name}' doesn't exist")
    return row


@routes.get("/deployments/{name}")
async def get_deployment(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    row = await _deployment_or_404(d, request.match_info["name"])
    return web.json_response({"name": row["name"], "manifest": row["manifest"]})


@routes.get("/deployments/{name}/instances")
async def get_instances(request: web.Request) -> web.Response:
    d = request.app[DIRECTOR]
    name = request.match_info["name"]
    await _deployment_or_404(d, name)
    return web.json_response(await d.instances(name))


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
