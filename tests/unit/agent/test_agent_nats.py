"""An in-process round trip against a REAL nats-server (127.0.0.1, random port, user/password nats/nats):
the agent boots from user data + registry, subscribes, heartbeats, and answers requests the way the
director sends them (reply_to = director.<process-uuid>.<agent-id>.<request-uuid>, get_task polling)."""
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent.boot import configure
from agent.paths import Paths
from boshlab import wire
from tests.unit.conftest import Handler, NatsServer

from .conftest import FakeSupervisor, make_settings


class Director:
    def __init__(self, nc: NATS, agent_id: str) -> None:
        self.nc = nc
        self.agent_id = agent_id
        self.process_uuid = str(uuid.uuid4())
        self.pending: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        async def on_reply(msg: Msg) -> None:
            fut = self.pending.pop(wire.request_id_of(msg.subject), None)
            if fut is not None and not fut.done():
                fut.set_result(msg.data)
        await self.nc.subscribe(f"{wire.director_inbox(self.process_uuid)}.>", cb=on_reply)

    async def send(self, method: str, args: list[Any] | None = None, timeout: float = 10) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        reply_to = wire.reply_subject(self.process_uuid, self.agent_id, request_id)
        fut = asyncio.get_running_loop().create_future()
        self.pending[request_id] = fut
        await self.nc.publish(wire.agent_subject(self.agent_id), wire.encode_request(method, args or [], reply_to))
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(fut, timeout))
        return reply

    async def run(self, method: str, args: list[Any] | None = None) -> dict[str, Any]:
        """Send, then poll get_task every 0.2 s while the task is running (the director's loop)."""
        reply = await self.send(method, args)
        while (task_id := wire.running_task_id(reply.get("value"))) is not None:
            await asyncio.sleep(0.2)
            reply = await self.send("get_task", [task_id])
        return reply


@pytest.fixture
async def registry(http_server: Callable[[Handler], Awaitable[str]], nats_server: NatsServer) -> str:
    settings = make_settings(mbus=nats_server.url, agent_id="agent-rt", heartbeat_interval=0.3)

    async def handler(request: web.Request) -> web.Response:
        if request.path != "/instances/vm-cid-rt/settings":
            return web.Response(status=404)
        return web.json_response({"settings": json.dumps(settings)})
    return await http_server(handler)


async def test_round_trip(vcap: Paths, registry: str, nats_server: NatsServer, agent_log: list[str]) -> None:
    host = registry.removeprefix("http://")
    vcap.user_data.write_text(json.dumps({"registry": {"endpoint": f"http://admin:admin@{host}"},
                                          "instance_id": "vm-cid-rt", "server": {"name": "vm-rt"}}))
    agent = await configure(vcap, FakeSupervisor(vcap))
    heartbeats: list[dict[str, Any]] = []
    nc = await nats.connect(nats_server.url)
    try:
        async def on_heartbeat(msg: Msg) -> None:
            heartbeats.append(json.loads(msg.data))
        await nc.subscribe("hm.agent.heartbeat.*", cb=on_heartbeat)
        await nc.flush()
        beating = asyncio.create_task(agent.heartbeater.run())
        director = Director(nc, "agent-rt")
        await director.start()

        assert await director.send("ping") == {"value": "pong"}
        state = await director.send("state")
        assert state["value"]["agent_id"] == "agent-rt" and state["value"]["job_state"] == "running"
        assert state["value"]["vm"] == {"name": "vm-1"}
        full = (await director.send("get_state", ["full"]))["value"]
        assert set(full["vitals"]) == {"cpu", "disk", "load", "mem", "swap", "uptime"}

        # garbage and unanswerable messages do not stop the agent
        await nc.publish("agent.agent-rt", b"{not json")
        await nc.publish("agent.agent-rt", b'{"method": "ping", "arguments": []}')
        assert await director.send("nope") == {"exception": {"message": "unknown message nope"}}
        assert await director.send("apply") == {"exception": {
            "message": "Action Failed apply: Not enough arguments, expected 1, got 0"}}

        identity = {"deployment": "redis-solo", "job": {"name": "redis"}, "index": 0, "id": "uuid-rt",
                    "networks": {}}
        assert await director.run("apply", [identity]) == {"value": "applied"}
        assert await director.run("drain", ["status"]) == {"value": 0}
        assert await director.run("stop") == {"value": "stopped"}
        assert (await director.send("get_state"))["value"]["job_state"] == "stopped"
        assert await director.send("start") == {"value": "started"}
        assert await director.run("list_disk") == {"value": []}
        assert await director.send("prepare_network_change") == {"value": "ok"}  # re-read from the registry
        assert agent.settings.settings["agent_id"] == "agent-rt" and vcap.settings.exists()
        assert await director.send("ping") == {"value": "pong"}

        seen = len(heartbeats)
        for _ in range(100):
            if len(heartbeats) > seen and len(heartbeats) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(heartbeats) >= 3  # one at start, then every 0.3 s (env.bosh.heartbeat_interval)
        last = heartbeats[-1]
        assert (last["deployment"], last["job"], last["index"], last["node_id"]) == \
            ("redis-solo", "redis", 0, "uuid-rt")
        assert last["job_state"] == "running" and last["number_of_processes"] == 0
        beating.cancel()
    finally:
        await nc.close()
        await agent.mbus.close()

    assert agent_log[:4] == ["INFO: Starting agent bosh-lab 0.1.0...", "INFO: Configuring agent...",
                             "INFO: Configuring instance", 'INFO: Docker user data: "' +
                             vcap.user_data.read_text().replace('"', '\\"') + '"']
    assert agent_log[4].startswith('INFO: loaded new infrastructure settings: {"networks"=>')
    messages = [m for m in agent_log if m.startswith("INFO: Message: ")]
    assert messages[0].startswith('INFO: Message: {"method"=>"ping", "arguments"=>[], "reply_to"=>"director.')
    assert any("Dropping message that is not JSON or has no reply_to" in m for m in agent_log)
    assert "INFO: Heartbeat sent" in agent_log and "DEBUG: Heartbeat delivered" in agent_log
