"""Issue 12, VMs ready fast and small: the agent's start-up imports only what boot and ``ping`` need (no
aiohttp, yaml, tarballs, ERB), actions are imported when their message first comes, and the small HTTP client
that replaced aiohttp for the registry and monit speaks HTTP/1.1 correctly, within its deadline."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent import httpclient
from agent.__main__ import without_module
from agent.dispatcher import ACTION_TABLE, ActionRegistry, Dispatcher, build_registry
from tests.unit.conftest import Handler

ROOT = Path(__file__).resolve().parents[3]

BOOT_IMPORTS = """
import json, sys
from agent.__main__ import without_module
with without_module("aiohttp"):
    import nats
import agent.boot, agent.dispatcher
print(json.dumps(sorted(sys.modules)))
"""


def test_boot_imports_no_blob_client_yaml_tarballs_or_erb() -> None:
    out = subprocess.run([sys.executable, "-c", BOOT_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    modules = set(json.loads(out))
    assert "agent.boot" in modules and "nats" in modules
    heavy = {"aiohttp", "yaml", "tarfile", "boshlab.dav", "boshlab.release", "boshlab.erb", "boshlab.tarball",
             "agent.action.compile_package", "agent.action.fetch_logs", "docker"}
    assert heavy & modules == set()


def test_without_module_hides_a_module_only_within_the_block() -> None:
    name = "agent_test_not_imported_yet"
    with without_module(name):
        with pytest.raises(ImportError):
            __import__(name)
    assert name not in sys.modules
    with without_module("json"):     # already imported: left alone
        assert sys.modules["json"] is json


async def test_actions_are_made_on_first_use(services: Any) -> None:
    registry = build_registry(services)
    assert isinstance(registry, ActionRegistry)
    names = {n for name, aliases, _, _ in ACTION_TABLE for n in (name, *aliases)}
    assert set(registry) == names and len(registry) == len(names) == 18
    assert registry._made == {}
    ping = await registry.load("ping")
    assert ping is not None and ping.name == "ping" and registry["ping"] is ping
    assert await registry.load("state") is await registry.load("get_state")
    assert await registry.load("no_such_message") is None
    assert list(registry._made) == [("ping", "Ping"), ("get_state", "GetState")]


async def test_the_dispatcher_answers_through_the_lazy_registry(services: Any) -> None:
    sent: list[tuple[str, bytes]] = []

    async def reply(subject: str, payload: bytes) -> None:
        sent.append((subject, payload))
    d = Dispatcher(build_registry(services), services.tasks, reply)
    await d.handle(json.dumps({"method": "ping", "arguments": [], "reply_to": "director.x.a.1"}).encode())
    await d.handle(json.dumps({"method": "nope", "arguments": [], "reply_to": "director.x.a.2"}).encode())
    assert [json.loads(p) for _, p in sent] == [{"value": "pong"},
                                                {"exception": {"message": "unknown message nope"}}]


# --- the small HTTP client ---------------------------------------------------------------------------

Serve = Callable[[Handler], Awaitable[str]]


async def test_get_with_content_length_and_headers(http_server: Serve) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(path=request.path_qs, auth=request.headers.get("Authorization"), host=request.host)
        return web.json_response({"settings": "{}"})
    url = await http_server(handler)
    r = await httpclient.request("GET", f"{url}/instances/i-1/settings?x=1", headers={"Authorization": "Basic eA=="})
    assert r.status == 200 and json.loads(r.body) == {"settings": "{}"}
    assert r.headers["content-type"].startswith("application/json")
    assert seen == {"path": "/instances/i-1/settings?x=1", "auth": "Basic eA==", "host": url.split("//")[1]}


async def test_chunked_answer_and_a_post_body(http_server: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        resp = web.StreamResponse(status=302, headers={"Location": "/elsewhere"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"action=", str(form["action"]).encode(), b";", request.headers["Cookie"].encode()):
            await resp.write(part)
        await resp.write_eof()
        return resp
    url = await http_server(handler)
    r = await httpclient.request("POST", f"{url}/redis", body=b"action=stop&securitytoken=t",
                                 headers={"Cookie": "securitytoken=t",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 302 and r.text() == "action=stop;securitytoken=t"   # a redirect is not followed


async def test_errors_are_oserrors_and_the_deadline_holds(http_server: Serve) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2048)
    with socket.socket() as s:      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await httpclient.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
    url = await http_server(slow)
    loop = asyncio.get_running_loop()
    t = loop.time()
    with pytest.raises(TimeoutError):
        await httpclient.request("GET", url, timeout=0.2)
    assert loop.time() - t < 2
    with pytest.raises(httpclient.HTTPError, match="larger than 1024 bytes"):
        await httpclient.request("GET", await http_server(big), max_body=1024)
    with pytest.raises(httpclient.HTTPError, match="not an http"):
        await httpclient.request("GET", "ftp://x/")


async def test_an_answer_that_is_not_http_is_an_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(httpclient.HTTPError, match="not an HTTP answer"):
            await httpclient.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        server.close()
        await server.wait_closed()


# --- sshd is started by the first ssh setup --------------------------------------------------------------

async def test_ensure_sshd_waits_for_a_host_key_and_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import users
    monkeypatch.setattr(users, "SSHD_SERVICE", str(tmp_path / "no-runit-here"))
    key = tmp_path / "ssh_host_ed25519_key.pub"
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    linux = users.LinuxUsers(host_keys=(key,))
    try:
        with pytest.raises(users.UserError, match="sshd did not start within 0.3 s"):
            await linux.ensure_sshd(port, timeout=0.3)          # no host key yet
        asyncio.get_running_loop().call_later(0.2, key.write_text, "ssh-ed25519 AAAA host\n")
        await linux.ensure_sshd(port, timeout=10)
        assert linux.host_public_key() == "ssh-ed25519 AAAA host"
    finally:
        server.close()
        await server.wait_closed()
