"""Per-agent NATS users (director/nats_auth.py) against a real nats-server, reloaded by the nats image's own
nats/reload-on-change script: an agent can only hear its own requests and only publish replies and its own
heartbeats; a removed agent is disconnected and refused."""
from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from boshlab.httpauth import with_userinfo
from director.nats_auth import NatsAuth, render
from tests.unit.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AuthServer:
    port: int
    auth: NatsAuth

    def url(self, user: str, password: str) -> str:
        return with_userinfo(f"nats://127.0.0.1:{self.port}", user, password)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AuthServer]:
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "director.password").write_text("d-secret")
    (auth_dir / "operator.user").write_text("nats")
    (auth_dir / "operator.password").write_text("o-secret")
    (auth_dir / "auth.conf").write_text(render("d-secret", ("nats", "o-secret"), {}))
    port, http = free_port(), free_port()
    pid = tmp_path / "nats.pid"
    conf = auth_dir / "nats.conf"   # as the nats image has it: beside auth.conf (includes are relative)
    conf.write_text(f'listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\npid_file: "{pid}"\ninclude "auth.conf"\n')
    quiet = asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(exe, "-c", str(conf), stdout=quiet, stderr=quiet)
    watcher = await asyncio.create_subprocess_exec("sh", str(ROOT / "nats" / "reload-on-change"),
                                                   str(auth_dir / "auth.conf"), str(pid), stdout=quiet, stderr=quiet)
    try:
        deadline = time.monotonic() + 10
        while not pid.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        yield AuthServer(port, NatsAuth(str(auth_dir), f"http://127.0.0.1:{http}", reload_wait=5))
    finally:
        watcher.kill()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 5)
        await asyncio.wait_for(watcher.wait(), 5)


async def connect(url: str, errors: list[str] | None = None) -> Client:
    async def on_error(e: Exception) -> None:
        if errors is not None:
            errors.append(str(e))
    return await nats.connect(url, allow_reconnect=False, connect_timeout=3, error_cb=on_error)


async def test_an_agent_hears_only_its_own_requests_and_publishes_only_replies_and_heartbeats(server: AuthServer) -> None:
    a1 = await server.auth.add("a1")
    a2 = await server.auth.add("a2")
    director = await connect(server.url("director", "d-secret"))
    errors: list[str] = []
    agent = await connect(server.url("a1", a1), errors)
    other = await connect(server.url("a2", a2))
    try:
        got: list[str] = []

        async def collect(msg: Msg) -> None:
            got.append(msg.subject)
        await director.subscribe("director.>", cb=collect)
        await director.subscribe("hm.agent.>", cb=collect)
        await director.flush()
        await agent.subscribe("agent.a2")                 # another agent's requests: refused
        await agent.publish("agent.a2", b"{}")            # commanding another agent: refused
        await agent.publish("hm.agent.heartbeat.a2", b"{}")   # forging another agent's heartbeat: refused
        await agent.publish("director.x.a1.r1", b"{}")    # a reply: allowed
        await agent.publish("hm.agent.heartbeat.a1", b"{}")   # its own heartbeat: allowed
        await agent.flush()
        await asyncio.sleep(0.3)
        assert any('subscription to "agent.a2"' in e for e in errors), errors
        assert any('publish to "agent.a2"' in e for e in errors), errors
        assert any('publish to "hm.agent.heartbeat.a2"' in e for e in errors), errors
        assert sorted(got) == ["director.x.a1.r1", "hm.agent.heartbeat.a1"]
        assert other.is_connected
    finally:
        for c in (director, agent, other):
            await c.close()


async def test_a_removed_agent_is_disconnected_and_refused(server: AuthServer) -> None:
    password = await server.auth.add("gone")
    conn = await connect(server.url("gone", password))
    await server.auth.remove(["gone"])
    deadline = time.monotonic() + 5
    while conn.is_connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not conn.is_connected, "nats-server keeps the deleted VM's connection"
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(server.url("gone", password), allow_reconnect=False, max_reconnect_attempts=0,
                           connect_timeout=3)
    # the director and the operator keep working
    for user, pw in (("director", "d-secret"), ("nats", "o-secret")):
        c = await connect(server.url(user, pw))
        await c.close()


async def test_sync_replaces_the_users(server: AuthServer) -> None:
    await server.auth.sync({"x1": "p1", "x2": "p2"})
    c = await connect(server.url("x2", "p2"))
    await c.close()
    await server.auth.sync({"x1": "p1"})
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(server.url("x2", "p2"), allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)


def test_without_an_auth_dir_every_agent_shares_the_mbus_url() -> None:
    auth = NatsAuth("")
    assert not auth.enabled
    assert with_userinfo("nats://nats:nats@nats:4222", "a-1", "p/w") == "nats://a-1:p%2Fw@nats:4222"


def test_quotes_cannot_break_out_of_the_config() -> None:
    text = render('d"x', None, {'evil", permissions: {}}, {user: "z': "p"})
    assert 'user: "evil\\", permissions' in text
    assert text.count("\n    {user: ") == 2, text   # one line per user: the quote did not open a new one


async def test_vms_made_side_by_side_share_reloads(server: AuthServer) -> None:
    writes = 0
    write = server.auth._write   # counting the writes is what this test is about

    async def counted() -> None:
        nonlocal writes
        writes += 1
        await write()
    server.auth._write = counted  # type: ignore[method-assign]
    passwords = await asyncio.gather(*(server.auth.add(f"par-{i}") for i in range(10)))
    assert writes <= 3, f"{writes} writes (and reloads) for 10 VMs made at once"
    for i, pw in enumerate(passwords):
        c = await connect(server.url(f"par-{i}", pw))
        await c.close()
