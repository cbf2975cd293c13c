"""A whole director in-process for scenario tests: ``director.lab.Lab`` with the fake CPI (VMs running the real
agent), a real nats-server, a real nginx DAV blobstore, and the API and registry apps served on free loopback
ports (aiohttp AppRunner: the API app's startup starts the Lab, its cleanup stops it)."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from boshlab.release import create_release
from director.api import make_apps
from director.config import Config
from director.lab import Lab
from director.operations import Operations
from director.store import InstanceRow

from .dav_server import DavServer
from .fake_cpi import FakeCPI, FakeVM

ROOT = Path(__file__).resolve().parents[2]
DUMMY_RELEASE = ROOT / "tests" / "assets" / "releases" / "dummy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def director_config(data_dir: Path, nats_url: str, dav: DavServer, **overrides: Any) -> Config:
    values: dict[str, Any] = dict(
        name="test-director", api_port=free_port(), registry_port=free_port(), registry_host="127.0.0.1",
        nats_url=nats_url, agent_mbus=nats_url, blobstore_endpoint=dav.endpoint,
        blobstore_director_user=dav.director_user, blobstore_director_password=dav.director_password,
        blobstore_agent_user=dav.agent_user, blobstore_agent_password=dav.agent_password,
        data_dir=str(data_dir), lab_name="fake-lab", heartbeat_interval=1.0, agent_timeout=3.0,
        health_interval=0.5, poll_interval=0.05, rpc_timeout=15.0, agent_wait_timeout=30.0, workshop=False,
        keep_vms_on_stop=True)
    values.update(overrides)
    return Config(**values)


@dataclass
class Director:
    """One running director: ``ops`` (the service layer), ``cpi`` (the fake), helpers for releases and tasks."""
    config: Config
    cpi: FakeCPI
    lab: Lab
    runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def ops(self) -> Operations:
        return self.lab.operations

    @classmethod
    async def start(cls, config: Config, cpi: FakeCPI) -> Director:
        lab = Lab(config, cpi=cpi)
        d = cls(config, cpi, lab)
        api, reg = make_apps(config, lab.operations, lab.process_uuid, lab.start, lab.stop, faults=lab.faults,
                             watch_hub=lab.watch_hub)
        for app, port in ((reg, config.registry_port), (api, config.api_port)):
            runner = web.AppRunner(app)
            await runner.setup()          # the API app's setup runs lab.start()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            d.runners.append(runner)
        return d

    async def stop(self) -> None:
        """Stop serving; the API app's cleanup runs lab.stop() (VMs are kept, as the real director keeps them)."""
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()

    # --- releases ----------------------------------------------------------------------------------

    async def upload_release(self, source: Path = DUMMY_RELEASE, version: str = "1") -> str:
        out = Path(self.config.data_dir) / f"upload-{time.monotonic_ns()}.tgz"
        await asyncio.to_thread(create_release, source, out, version=version)
        return await self.run_task(await self.ops.upload_release_task(out))

    # --- tasks -------------------------------------------------------------------------------------

    async def wait_task(self, task_id: int, timeout: float = 60.0) -> tuple[str, str]:
        row = await asyncio.wait_for(self.ops.tasks.wait(task_id), timeout)
        return row.state, row.result or ""

    async def run_task(self, task_id: int, timeout: float = 60.0) -> str:
        """Wait for the task; it must end ``done`` (else AssertionError with its debug log's end)."""
        state, result = await self.wait_task(task_id, timeout)
        if state != "done":
            debug = (await self.output(task_id, "debug"))[-3000:]
            raise AssertionError(f"task {task_id} ended {state}: {result}\n--- debug log ---\n{debug}")
        return result

    async def deploy(self, manifest: str, timeout: float = 60.0) -> int:
        """Deploy and wait: the task id (the task must succeed)."""
        task_id = await self.ops.deploy_task(manifest)
        await self.run_task(task_id, timeout)
        return task_id

    async def output(self, task_id: int, kind: str = "debug") -> str:
        _, data = await self.ops.task_output(task_id, kind, 0)
        return data.decode(errors="replace")

    async def events(self, task_id: int) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (await self.output(task_id, "event")).splitlines() if line.strip()]

    async def sent(self, task_id: int) -> list[str]:
        """The debug log's ``SENT: <subject> <payload>`` lines (every message the director sent)."""
        return [line.split("SENT: ", 1)[1] for line in (await self.output(task_id, "debug")).splitlines()
                if "SENT: " in line]

    # --- state -------------------------------------------------------------------------------------

    async def instances(self, deployment: str) -> list[InstanceRow]:
        return await self.lab.store.instances.of_deployment(deployment)

    async def vm_of(self, row: InstanceRow) -> FakeVM:
        assert row.vm_cid is not None, f"{row.label} has no VM"
        return self.cpi.vms[row.vm_cid]


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Await ``predicate()`` (sync or async) until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        await asyncio.sleep(interval)


def with_config(config: Config, **changes: Any) -> Config:
    return replace(config, **changes)


def dummy_manifest(name: str = "dep", instances: int = 1, *, canaries: int = 1, max_in_flight: int | str = 1,
                   watch: str = "100-3000", persistent_disk: int = 0, properties: dict[str, Any] | None = None,
                   jobs: list[str] | None = None, release: str = "dummy", group: str = "app") -> str:
    """A manifest of one group of the dummy release (JSON is YAML)."""
    doc: dict[str, Any] = {
        "name": name, "releases": [{"name": release, "version": "latest"}],
        "update": {"canaries": canaries, "max_in_flight": max_in_flight, "canary_watch_time": watch,
                   "update_watch_time": watch},
        "networks": [{"name": "default", "type": "dynamic"}],
        "instance_groups": [{"name": group, "instances": instances, "persistent_disk": persistent_disk,
                             "networks": [{"name": "default"}],
                             "jobs": [{"name": j, "release": release} for j in (jobs or ["dummy"])],
                             "properties": properties or {}}],
    }
    return json.dumps(doc, indent=1)


def write_release(root: Path, name: str, jobs: dict[str, dict[str, Any]]) -> Path:
    """A release source tree without packages: ``jobs`` = {job: {"templates": {"bin/drain": "<ERB>", ...},
    "properties": {"x.y": default, ...}}}. Each job's monit file checks one process named after the job."""
    src = root / name
    (src / "config").mkdir(parents=True, exist_ok=True)
    (src / "config" / "final.yml").write_text(f"name: {name}\n")
    for job, what in jobs.items():
        jdir = src / "jobs" / job
        (jdir / "templates").mkdir(parents=True, exist_ok=True)
        templates: dict[str, str] = what.get("templates", {})
        props: dict[str, Any] = what.get("properties", {})
        spec = {"name": job, "packages": [],
                "templates": {f"{dest}.erb": dest for dest in templates},
                "properties": {k: {"description": k, "default": v} for k, v in props.items()}}
        (jdir / "spec").write_text(json.dumps(spec, indent=1))
        (jdir / "monit").write_text(f"check process {job}\n  with pidfile /var/vcap/sys/run/{job}/{job}.pid\n"
                                    f"  start program \"/bin/true\"\n  stop program \"/bin/true\"\n  group vcap\n")
        for dest, text in templates.items():
            t = jdir / "templates" / f"{dest}.erb"
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text(text)
    return src
