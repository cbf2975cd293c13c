"""Fixtures for the agent's unit tests: a tmp /var/vcap, a fake job supervisor (monit's seam), a fake
mounter (mount(8)'s seam: a "mount" is a symlink, so data really moves), fake users (useradd's seam), an
in-process DAV blobstore, small HTTP servers, and a real nats-server on a random loopback port."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.paths import Paths
from agent.settings import Settings
from boshlab.dav import DavClient, DavConfig, blob_path
from tests.support.fakes import HOST_KEY as HOST_KEY  # re-exported: shared with the fake CPI
from tests.support.fakes import FakeMounter as FakeMounter
from tests.support.fakes import FakeSupervisor as FakeSupervisor
from tests.support.fakes import FakeUsers as FakeUsers
from tests.unit.conftest import Handler  # http_server and nats_server are shared: tests/unit/conftest.py

DATA = Path(__file__).with_name("data")


@pytest.fixture
def vcap(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "vcap")
    paths.ensure_layout()
    return paths


@pytest.fixture
def supervisor(vcap: Paths) -> FakeSupervisor:
    return FakeSupervisor(vcap)


@pytest.fixture
def mounter() -> FakeMounter:
    return FakeMounter()


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers()


@dataclass
class FakeDav:
    """An in-memory DAV blobstore with BOSH's paths and basic auth (user agent/agent)."""
    url: str = ""
    store: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def put(self, blob_id: str, data: bytes) -> str:
        self.store[blob_path(blob_id)] = data
        return hashlib.sha1(data).hexdigest()

    def get(self, blob_id: str) -> bytes:
        return self.store[blob_path(blob_id)]

    def client(self) -> DavClient:
        return DavClient(DavConfig(self.url, "agent", "agent"))

    async def handler(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != "Basic YWdlbnQ6YWdlbnQ=":  # agent:agent
            return web.Response(status=401)
        if request.method == "PUT":
            self.store[request.path] = await request.read()
            return web.Response(status=201)
        if request.path not in self.store:
            return web.Response(status=404)
        return web.Response(body=self.store[request.path])


@pytest.fixture
async def dav(http_server: Callable[[Handler], Awaitable[str]]) -> FakeDav:
    fake = FakeDav()
    fake.url = await http_server(fake.handler)
    return fake




async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def make_settings(blobstore_url: str = "http://127.0.0.1:9", mbus: str = "nats://nats:nats@127.0.0.1:4222",
                  agent_id: str = "agent-1", heartbeat_interval: float = 30) -> Settings:
    return {
        "agent_id": agent_id, "vm": {"name": "vm-1"}, "mbus": mbus,
        "blobstore": {"provider": "dav", "options": {"endpoint": blobstore_url, "user": "agent", "password": "agent"}},
        "networks": {"default": {"type": "dynamic", "ip": "172.18.0.5", "netmask": "255.255.0.0",
                                 "gateway": "172.18.0.1", "dns": ["127.0.0.11"], "default": ["dns", "gateway"],
                                 "cloud_properties": {}}},
        "disks": {"system": "/dev/sda", "ephemeral": None, "persistent": {}},
        "ntp": [], "env": {"bosh": {"heartbeat_interval": heartbeat_interval, "lab": {}}},
    }


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.published.append((subject, payload))

    async def flush(self, timeout: int) -> None:
        pass


@dataclass
class FakeRegistry:
    """The director's registry as the agent's SettingsService sees it: edit ``settings``, or set ``error``."""
    settings: Settings
    error: str | None = None
    fetches: int = 0

    async def fetch(self, user_data: Any) -> Any:
        from agent.settings import SettingsError, parse_settings
        self.fetches += 1
        if self.error is not None:
            raise SettingsError(self.error)
        return parse_settings(copy.deepcopy(self.settings))


@pytest.fixture
def registry(dav: FakeDav) -> FakeRegistry:
    return FakeRegistry(make_settings(dav.url))


@pytest.fixture
def services(vcap: Paths, supervisor: FakeSupervisor, dav: FakeDav, mounter: FakeMounter, users: FakeUsers,
             registry: FakeRegistry) -> Any:
    from agent.action.base import Services, blobstore_client
    from agent.applier import Applier
    from agent.settings import SettingsService
    from agent.spec import SpecStore
    from agent.tasks import TaskManager
    from agent.vitals import Vitals

    settings = SettingsService(vcap, fetcher=registry.fetch, retry_delay=0)
    settings.user_data = {"registry": {"endpoint": "http://registry.invalid"}, "instance_id": "vm-1"}
    settings.use(copy.deepcopy(registry.settings))
    applier = Applier(vcap, lambda: blobstore_client(settings), supervisor)
    return Services(vcap, settings, SpecStore(vcap), supervisor, applier, TaskManager(), FakePublisher(), Vitals(vcap),
                    mounter, users)


@pytest.fixture
def agent_log() -> Iterator[list[str]]:
    """The agent's log messages (without the ``#[pid] LEVEL:`` prefix), as ``LEVEL: message`` strings."""
    import logging

    from agent.log import log

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname.replace('WARNING', 'WARN')}: {record.getMessage()}")

    handler = Collect(logging.DEBUG)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield lines
    log.removeHandler(handler)
    log.setLevel(level)


async def call(services: Any, method: str, args: list[Any] | None = None, protocol: int = 3,
               timeout: float = 15.0) -> dict[str, Any]:
    """One request through the real dispatcher, as the director sends it. For an async action, wait for its
    task and return what ``get_task`` answers at the end: ``{"value": ...}`` or ``{"exception": ...}``."""
    import json

    from agent.dispatcher import Dispatcher, build_registry

    async def no_reply(subject: str, payload: bytes) -> None:
        pass

    d = Dispatcher(build_registry(services), services.tasks, no_reply)

    async def ask(m: str, a: list[Any]) -> dict[str, Any]:
        req = {"protocol": protocol, "method": m, "arguments": a, "reply_to": "director.p.agent-1.r"}
        reply: dict[str, Any] = json.loads(await d.dispatch(json.dumps(req).encode()))
        return reply

    reply = await ask(method, args or [])
    value = reply.get("value")
    if isinstance(value, dict) and set(value) == {"agent_task_id", "state"}:
        task_id = value["agent_task_id"]
        await wait_for(lambda: services.tasks.get(task_id).state != "running", timeout)
        return await ask("get_task", [task_id])
    return reply


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` with its mode and (for files) content digest, (for links) target."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                what = "-> " + os.readlink(p)
            elif p.is_file():
                what = hashlib.sha1(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[str(p.relative_to(root))] = (st.st_mode, what)
    return out
