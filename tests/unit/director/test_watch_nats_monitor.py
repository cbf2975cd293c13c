"""The watch's NATS identity: the read-only ``monitor`` user (nats/entrypoint.sh, director/nats_auth.py) may
hear every subject and publish none, against a real nats-server; and the tap (director/watch/tap.py) as that
user turns traffic into paired events, and keeps trying while NATS is down."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from boshlab import wire
from boshlab.httpauth import with_userinfo
from director.nats_auth import NatsAuth, NatsAuthError, render
from director.watch.correlator import Correlator
from director.watch.hub import Hub
from director.watch.tap import Tap, agent_of
from tests.support.nats_server import NatsServerMissing, executable, free_port, nats_server

ROOT = Path(__file__).resolve().parents[3]


def test_render_keeps_the_monitor_user_read_only() -> None:
    text = render("d-secret", ("nats", "o-secret"), {"a1": "p1"}, monitor_password='m"x')
    line, = [x for x in text.splitlines() if '"monitor"' in x]
    assert 'password: "m\\"x"' in line
    assert 'permissions: {publish: {deny: [">"]}, subscribe: {allow: [">"]}}' in line
    assert '"monitor"' not in render("d-secret", None, {})


def test_the_entrypoint_writes_the_same_monitor_user() -> None:
    script = (ROOT / "nats" / "entrypoint.sh").read_text()
    assert 'monitor_password=$(secret "$NATS_AUTH_DIR/monitor.password")' in script
    assert ('{user: "monitor", password: "$(q "$monitor_password")", '
            'permissions: {publish: {deny: [">"]}, subscribe: {allow: [">"]}}}') in script


async def test_nats_auth_writes_the_monitor_user_and_gives_its_url(tmp_path: Path) -> None:
    auth = NatsAuth(str(tmp_path))
    (tmp_path / "director.password").write_text("d-secret")
    with pytest.raises(NatsAuthError, match="monitor.password"):
        auth.monitor_url("nats://nats:4222")
    (tmp_path / "monitor.password").write_text("m-secret\n")
    assert auth.monitor_url("nats://nats:4222") == "nats://monitor:m-secret@nats:4222"
    await auth.sync({"agent-1": "p1"})
    conf = (tmp_path / "auth.conf").read_text()
    assert '{user: "monitor", password: "m-secret", permissions: {publish: {deny: [">"]}' in conf
    assert '"agent-1"' in conf
    assert NatsAuth("").monitor_url("nats://u:p@h:4222") == "nats://u:p@h:4222"   # no auth dir: the plain URL


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[int]:
    try:
        executable()
    except NatsServerMissing as e:
        pytest.skip(str(e))
    (tmp_path / "auth.conf").write_text(render("d-secret", None, {}, monitor_password="m-secret"))
    with nats_server(tmp_path, lambda port: f'listen: 127.0.0.1:{port}\ninclude "auth.conf"\n') as port:
        yield port


def url(port: int, user: str, password: str) -> str:
    return with_userinfo(f"nats://127.0.0.1:{port}", user, password)


async def test_the_monitor_hears_everything_and_cannot_publish(auth_server: int) -> None:
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))
    director = await nats.connect(url(auth_server, "director", "d-secret"), allow_reconnect=False, connect_timeout=3)
    monitor = await nats.connect(url(auth_server, "monitor", "m-secret"), allow_reconnect=False, connect_timeout=3,
                                 error_cb=on_error)
    try:
        heard: list[str] = []
        got_by_director: list[str] = []

        async def on_monitor(msg: Msg) -> None:
            heard.append(msg.subject)

        async def on_director(msg: Msg) -> None:
            got_by_director.append(msg.subject)
        await monitor.subscribe(">", cb=on_monitor)
        await director.subscribe("agent.>", cb=on_director)
        await monitor.flush(3)
        await director.publish("agent.a1", b"{}")
        await director.publish("hm.agent.heartbeat.a1", b"{}")
        await director.flush(3)
        await monitor.publish("agent.a1", b'{"method": "forged"}')     # refused by nats-server
        await monitor.flush(3)
        await asyncio.sleep(0.3)
        assert heard == ["agent.a1", "hm.agent.heartbeat.a1"], (errors, monitor.is_connected)
        assert got_by_director == ["agent.a1"]                          # only the director's own message
        assert any("permissions violation" in e.lower() for e in errors), errors
    finally:
        await director.close()
        await monitor.close()


async def test_the_tap_as_monitor_pairs_traffic_into_the_hub(auth_server: int) -> None:
    hub = Hub()
    tap = Tap(lambda: url(auth_server, "monitor", "m-secret"), hub, Correlator(lambda a: None), interval=0.1)
    tap.start()
    director = await nats.connect(url(auth_server, "director", "d-secret"), allow_reconnect=False, connect_timeout=3)
    try:
        for _ in range(100):
            if tap.connected:
                break
            await asyncio.sleep(0.05)
        assert tap.connected
        reply_to = wire.reply_subject("proc", "a1", "r1")
        await director.publish("agent.a1", wire.encode_request("ping", [], reply_to))
        await director.publish(reply_to, wire.encode_value("pong"))
        await director.publish("agent.a1", wire.encode_request("get_state", [], wire.reply_subject("proc", "a1", "r2")))
        await director.flush(3)
        for _ in range(100):
            if len(hub.history()) >= 3:
                break
            await asyncio.sleep(0.05)
        kinds = [(e["kind"], e.get("call"), e.get("state")) for e in hub.history()]
        assert kinds == [("request", "r1", "sent"), ("reply", "r1", "done"), ("request", "r2", "sent")]
        assert tap.messages == 3
        await tap.stop()                  # its connection goes: nothing more is heard
        await director.publish("agent.a1", wire.encode_request("ping", [], wire.reply_subject("proc", "a1", "r3")))
        await director.flush(3)
        await asyncio.sleep(0.2)
        assert tap.messages == 3 and len(hub.history()) == 3
    finally:
        await director.close()
        await tap.stop()


async def test_the_tap_keeps_trying_while_nats_is_down_and_stops_promptly() -> None:
    hub = Hub()
    tap = Tap(lambda: f"nats://127.0.0.1:{free_port()}", hub, Correlator(lambda a: None, timeout=0.05),
              interval=0.05, retry=0.05, connect_deadline=1)
    tap.start()
    await asyncio.sleep(0.5)
    assert not tap.connected and tap.last_error
    await asyncio.wait_for(tap.stop(), 5)


def test_agent_of_subjects() -> None:
    assert agent_of("agent.a1") == "a1"
    assert agent_of("hm.agent.heartbeat.a1") == "a1"
    assert agent_of("director.p.a1.r") == "a1"
    assert agent_of("_INBOX.x") is None and agent_of("agent") is None
