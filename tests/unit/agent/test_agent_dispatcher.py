"""The dispatcher: one registry, argument checks, exception replies, sync vs async, get_task, FIFO tasks."""
import asyncio
import json
from typing import Any

import pytest

from agent.action.base import Action, ActionError, Arg
from agent.dispatcher import ACTIONS, Dispatcher, build_registry
from agent.tasks import TaskManager

from .conftest import wait_for


def request(method: str, args: list[Any] | None = None, reply_to: str = "director.p.agent-1.r1",
            protocol: int = 3) -> bytes:
    return json.dumps({"protocol": protocol, "method": method, "arguments": args or [], "reply_to": reply_to}).encode()


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def __call__(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, json.loads(payload)))


@pytest.fixture
def agent(services: Any) -> tuple[Dispatcher, Replies]:
    replies = Replies()
    return Dispatcher(build_registry(services), services.tasks, replies), replies


async def ask(dispatcher: Dispatcher, method: str, args: list[Any] | None = None, **kw: Any) -> Any:
    return json.loads(await dispatcher.dispatch(request(method, args, **kw)))


DECK_SLIDE_10 = {"migrate_disk", "list_disk", "mount_disk", "unmount_disk", "state", "drain", "apply",
                 "compile_package", "fetch_logs", "ssh", "ping", "start", "stop", "prepare_network_change"}


def test_registry_has_the_decks_fourteen_messages_and_task_control(services: Any) -> None:
    names = set(build_registry(services))
    assert len(DECK_SLIDE_10) == 14 and DECK_SLIDE_10 <= names
    assert names - DECK_SLIDE_10 == {"get_state", "get_task", "cancel_task", "info"}
    assert len(ACTIONS) == 17 and len({a.name for a in ACTIONS}) == 17
    for action in ACTIONS:   # one module per message, named after it
        assert action.__module__ == f"agent.action.{action.name}", action


@pytest.mark.parametrize("method,is_async", [
    ("ping", False), ("info", False), ("get_state", False), ("state", False), ("get_task", False),
    ("cancel_task", False), ("start", False), ("ssh", False), ("prepare_network_change", False),
    ("apply", True), ("stop", True), ("drain", True), ("compile_package", True), ("fetch_logs", True),
    ("mount_disk", True), ("unmount_disk", True), ("migrate_disk", True), ("list_disk", True)])
def test_sync_and_async_as_in_bosh(services: Any, method: str, is_async: bool) -> None:
    assert build_registry(services)[method].is_async(3) is is_async


async def test_ping_and_info(agent: tuple[Dispatcher, Replies]) -> None:
    d, _ = agent
    assert await ask(d, "ping") == {"value": "pong"}
    assert await ask(d, "info") == {"value": {"api_version": 1}}


@pytest.mark.parametrize("method", ["nope", "run_errand", "Ping"])
async def test_unknown_message(agent: tuple[Dispatcher, Replies], method: str) -> None:
    d, _ = agent
    assert await ask(d, method) == {"exception": {"message": f"unknown message {method}"}}


async def test_missing_and_wrong_arguments(agent: tuple[Dispatcher, Replies]) -> None:
    d, _ = agent
    assert await ask(d, "apply") == {"exception": {"message":
                                                   "Action Failed apply: Not enough arguments, expected 1, got 0"}}
    assert await ask(d, "apply", ["x"]) == {"exception": {"message":
                                                          "Action Failed apply: argument 1 (apply spec) must be an object, got a string"}}
    assert await ask(d, "get_task", [7]) == {"exception": {"message":
                                                           "Action Failed get_task: argument 1 (agent task id) must be a string, got an integer"}}
    assert (await ask(d, "compile_package", ["a", "b", "c"]))["exception"]["message"] == \
        "Action Failed compile_package: Not enough arguments, expected 5, got 3"


async def test_extra_arguments_are_ignored(agent: tuple[Dispatcher, Replies]) -> None:
    d, _ = agent
    assert await ask(d, "ping", ["extra", 1]) == {"value": "pong"}


async def test_every_request_is_logged_in_the_decks_form(agent: tuple[Dispatcher, Replies],
                                                         agent_log: list[str]) -> None:
    d, _ = agent
    await ask(d, "ping", reply_to="director.x.y.z")
    await ask(d, "nope", ["a", {"b": None}], reply_to="r")
    assert agent_log == ['INFO: Message: {"method"=>"ping", "arguments"=>[], "reply_to"=>"director.x.y.z"}',
                         'INFO: Message: {"method"=>"nope", "arguments"=>["a", {"b"=>nil}], "reply_to"=>"r"}']


async def test_unanswerable_messages_are_dropped_and_the_agent_lives_on(agent: tuple[Dispatcher, Replies]) -> None:
    d, replies = agent
    for bad in (b"not json", b'{"method": "ping"}', b"[1,2]", b'{"method": "ping", "reply_to": ""}', b"\xff\xfe"):
        await d.handle(bad)
    assert replies.sent == []
    await d.handle(b'{"arguments": [], "reply_to": "r"}')  # answerable but no method
    await d.handle(request("ping", reply_to="r2"))
    assert replies.sent == [("r", {"exception": {"message": "message has no method (a non-empty string)"}}),
                            ("r2", {"value": "pong"})]


class Boom(Action):
    name = "boom"

    async def run(self) -> Any:
        raise ZeroDivisionError("division by zero")


class Fails(Action):
    name = "fails"

    async def run(self) -> Any:
        raise ActionError("it went wrong")


class Slow(Action):
    """Async; records start and end so FIFO order can be checked."""
    name = "slow"
    args = (Arg("label", str), Arg("delay", float, required=False))
    log: list[str] = []

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, label: str, delay: float = 0.05) -> str:
        self.log.append(f"start {label}")
        await asyncio.sleep(delay)
        self.log.append(f"end {label}")
        if label == "bad":
            raise ActionError("bad label")
        return f"done {label}"


def custom(services: Any) -> tuple[Dispatcher, Replies]:
    from agent.action.get_task import GetTask
    replies = Replies()
    return Dispatcher(build_registry(services, (Boom, Fails, Slow, GetTask)), services.tasks, replies), replies


async def test_sync_errors_become_action_failed(services: Any) -> None:
    d, _ = custom(services)
    assert await ask(d, "fails") == {"exception": {"message": "Action Failed fails: it went wrong"}}
    assert await ask(d, "boom") == {"exception": {"message": "Action Failed boom: ZeroDivisionError: division by zero"}}
    assert await ask(d, "get_task", ["nope"]) == {"exception": {"message":
                                                                "Action Failed get_task: Task with id nope could not be found"}}


async def test_async_tasks_run_fifo_and_get_task_reports_each_state(services: Any) -> None:
    Slow.log = []
    d, _ = custom(services)
    first = await ask(d, "slow", ["a", 0.1])
    second = await ask(d, "slow", ["bad", 0.01])
    third = await ask(d, "slow", ["c", 0.01])
    for reply in (first, second, third):
        assert reply["value"]["state"] == "running" and set(reply["value"]) == {"agent_task_id", "state"}
    ids = [r["value"]["agent_task_id"] for r in (first, second, third)]
    assert len(set(ids)) == 3
    # queued tasks also answer the running form
    assert await ask(d, "get_task", [ids[2]]) == {"value": {"agent_task_id": ids[2], "state": "running"}}
    await wait_for(lambda: services.tasks.get(ids[2]).state != "running", timeout=5)
    assert Slow.log == ["start a", "end a", "start bad", "end bad", "start c", "end c"]
    assert await ask(d, "get_task", [ids[0]]) == {"value": "done a"}
    assert await ask(d, "get_task", [ids[1]]) == {"exception": {
        "message": f"Action Failed get_task: Task {ids[1]} result: bad label"}}
    assert await ask(d, "get_task", [ids[2]]) == {"value": "done c"}


async def test_cancel_is_only_for_drain(services: Any) -> None:
    replies = Replies()
    d = Dispatcher(build_registry(services), services.tasks, replies)
    services.supervisor.reachable = True
    started = await ask(d, "stop")
    task_id = started["value"]["agent_task_id"]
    reply = await ask(d, "cancel_task", [task_id])
    assert reply["exception"]["message"].endswith("is not supported")
    assert reply["exception"]["message"].startswith("Action Failed cancel_task: canceling task")
    await wait_for(lambda: services.tasks.get(task_id).state != "running")
    assert await ask(d, "get_task", [task_id]) == {"value": "stopped"}


async def test_list_disk_is_async_only_with_protocol_3(services: Any) -> None:
    d = Dispatcher(build_registry(services), services.tasks, Replies())
    assert await ask(d, "list_disk", protocol=2) == {"value": []}
    reply = await ask(d, "list_disk", protocol=3)
    task_id = reply["value"]["agent_task_id"]
    await wait_for(lambda: services.tasks.get(task_id).state != "running")
    assert await ask(d, "get_task", [task_id]) == {"value": []}


async def test_task_manager_forgets_only_finished_tasks() -> None:
    tm = TaskManager(keep=2)

    async def quick() -> int:
        return 1
    tasks = [tm.submit("x", quick) for _ in range(4)]
    await wait_for(lambda: all(t.state == "done" for t in tasks))
    assert list(tm.tasks) == [tasks[2].id, tasks[3].id]     # the last 2 finished ones
    last = tm.submit("x", quick)
    assert list(tm.tasks) == [tasks[2].id, tasks[3].id, last.id]
    await wait_for(lambda: last.state == "done")
    assert list(tm.tasks) == [tasks[3].id, last.id]
