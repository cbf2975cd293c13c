"""The agent's bounds (issue 8): hostile messages (nested 100k deep, over 1 MiB) are refused or dropped and
the agent keeps answering; at most ``max_queued`` async tasks wait; the last ``keep`` finished tasks are
kept; at most ``max_inflight`` messages are handled at once."""
import asyncio
import json
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from agent.action.base import Action, Arg
from agent.action.get_task import GetTask
from agent.dispatcher import Dispatcher, build_registry
from agent.mbus import MBus
from agent.tasks import TaskManager, TooManyTasks
from boshlab import wire
from tests.unit.conftest import NatsServer

from .conftest import wait_for
from .test_agent_dispatcher import Replies, ask, request

DEEP = 100_000


async def test_json_nested_100k_deep_is_dropped_and_the_agent_answers_ping(services: Any,
                                                                             agent_log: list[str]) -> None:
    replies = Replies()
    d = Dispatcher(build_registry(services), services.tasks, replies)
    await d.handle(b"[" * DEEP + b"]" * DEEP)
    await d.handle(b'{"reply_to": "director.p.a.r0", "method": "ping", "arguments": '
                   + b"[" * DEEP + b"]" * DEEP + b"}")
    await d.handle(b'{"a": ' * DEEP + b"1" + b"}" * DEEP)
    assert replies.sent == []
    assert sum("Dropping message that is not JSON" in line for line in agent_log) == 3
    await d.handle(request("ping", reply_to="director.p.a.r1"))
    assert replies.sent == [("director.p.a.r1", {"value": "pong"})]
    # the same through dispatch (the reply_to check skipped): an exception, not a RecursionError
    assert await d.dispatch(b"[" * DEEP + b"]" * DEEP) == wire.encode_exception("message is nested too deeply to parse")


async def test_a_message_over_1_mib_is_refused_and_the_agent_answers_ping(services: Any,
                                                                          agent_log: list[str]) -> None:
    replies = Replies()
    d = Dispatcher(build_registry(services), services.tasks, replies)
    assert d.max_message_bytes == wire.MAX_REQUEST_BYTES == 1024 * 1024
    big = request("ping", ["x" * wire.MAX_REQUEST_BYTES], reply_to="director.p.a.big")
    await d.handle(big)
    await d.handle(json.dumps({"method": "ping", "arguments": ["x" * wire.MAX_REQUEST_BYTES]}).encode())  # no reply_to
    await d.handle(b"[" * (2 * wire.MAX_REQUEST_BYTES))   # not JSON at all
    message = f"message of {len(big)} bytes exceeds the agent's limit of 1048576 bytes"
    assert replies.sent == [("director.p.a.big", {"exception": {"message": message}})]
    assert sum("Dropping message of" in line for line in agent_log) == 2
    await d.handle(request("ping", reply_to="director.p.a.r1"))
    assert replies.sent[-1] == ("director.p.a.r1", {"value": "pong"})
    # just under the limit is fine
    small = request("ping", ["x" * (wire.MAX_REQUEST_BYTES - 200)], reply_to="director.p.a.r2")
    assert len(small) <= wire.MAX_REQUEST_BYTES
    await d.handle(small)
    assert replies.sent[-1] == ("director.p.a.r2", {"value": "pong"})


class Block(Action):
    """Async; waits until the test lets it go."""
    name = "block"
    args = (Arg("label", str),)
    gate: asyncio.Event

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, label: str) -> str:
        await self.gate.wait()
        return label


async def test_at_most_max_queued_tasks_wait(services: Any) -> None:
    Block.gate = asyncio.Event()
    tasks = TaskManager(max_queued=3)
    d = Dispatcher(build_registry(services, (Block, GetTask)), tasks, Replies())
    assert TaskManager().max_queued == 100
    running = await ask(d, "block", ["running"])
    await wait_for(lambda: tasks.queued == 0)          # the first one runs: it does not count as queued
    queued = [await ask(d, "block", [f"q{i}"]) for i in range(3)]
    assert all(r["value"]["state"] == "running" for r in [running, *queued])
    assert await ask(d, "block", ["one too many"]) == {
        "exception": {"message": "Action Failed block: too many tasks queued (3)"}}
    assert len(tasks.tasks) == 4                       # the refused one was never made a task
    with pytest.raises(TooManyTasks, match=r"too many tasks queued \(3\)"):
        tasks.submit("x", Block.gate.wait)
    Block.gate.set()
    last = queued[-1]["value"]["agent_task_id"]
    await wait_for(lambda: tasks.get(last).state == "done")
    assert await ask(d, "block", ["again"]) != {"exception": {"message": "Action Failed block: too many tasks queued (3)"}}


async def test_only_the_last_keep_finished_tasks_are_kept() -> None:
    tm = TaskManager(keep=5, max_queued=1000)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "slow"

    async def quick() -> int:
        return 1
    first = tm.submit("slow", slow)      # 50 tasks submitted while the oldest one still runs ...
    quick_ones = [tm.submit("q", quick) for _ in range(50)]
    gate.set()
    await wait_for(lambda: all(t.state == "done" for t in quick_ones))
    # ... all finished: only the last 5 are kept (the old code pruned only at submit, and stopped at a
    # running task: it kept all 51)
    assert first.id not in tm.tasks
    assert list(tm.tasks) == [t.id for t in quick_ones[-5:]]
    assert TaskManager().keep == 1000


async def test_at_most_max_inflight_messages_are_handled_at_once(nats_server: NatsServer) -> None:
    bus = MBus(nats_server.url, "agent-limits", max_inflight=2)
    assert MBus(nats_server.url, "x").max_inflight == 64
    gate = asyncio.Event()
    active, most, handled = 0, 0, []

    async def handler(data: bytes) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await gate.wait()
        handled.append(data)
        active -= 1

    await bus.connect()
    nc: NATS = await nats.connect(nats_server.url)
    try:
        await bus.subscribe(handler)
        await bus.flush()
        for i in range(10):
            await nc.publish(wire.agent_subject("agent-limits"), str(i).encode())
        await nc.flush()
        await wait_for(lambda: active == 2)
        await asyncio.sleep(0.2)
        assert active == 2 and most == 2 and len(bus._inflight) == 2
        gate.set()
        await wait_for(lambda: len(handled) == 10)
        assert most == 2 and sorted(handled) == sorted(str(i).encode() for i in range(10))
    finally:
        await nc.close()
        await bus.close()
