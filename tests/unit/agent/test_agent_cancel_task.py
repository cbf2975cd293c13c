"""cancel_task / get_task / info: drain really stops and get_task says canceled; other tasks cannot be
canceled; unknown ids are errors; a queued drain is canceled before it starts."""
import asyncio
import os
from pathlib import Path
from typing import Any

from agent.action.base import Action
from agent.paths import Paths

from .conftest import call, wait_for
from .test_agent_drain import CURRENT, install_drain


async def test_cancel_a_running_drain(services: Any, vcap: Paths, tmp_path: Path) -> None:
    import json

    from agent.dispatcher import Dispatcher, build_registry

    services.specs.save(CURRENT)
    pidfile = tmp_path / "pid"
    install_drain(vcap, f"echo $$ > {pidfile}\nsleep 600\necho 0\n")
    replies: list[Any] = []

    async def reply(subject: str, payload: bytes) -> None:
        replies.append(json.loads(payload))

    d = Dispatcher(build_registry(services), services.tasks, reply)

    async def ask(method: str, args: list[Any]) -> Any:
        return json.loads(await d.dispatch(json.dumps(
            {"protocol": 3, "method": method, "arguments": args, "reply_to": "r"}).encode()))

    started = await ask("drain", ["shutdown", {}])
    task_id = started["value"]["agent_task_id"]
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    assert await ask("get_task", [task_id]) == {"value": {"agent_task_id": task_id, "state": "running"}}
    assert await ask("cancel_task", [task_id]) == {"value": "canceled"}
    await wait_for(lambda: services.tasks.get(task_id).state != "running", timeout=15)
    assert await ask("get_task", [task_id]) == {"exception": {
        "message": f"Action Failed get_task: Task {task_id} result: task canceled"}}
    try:
        os.kill(pid, 0)
        raise AssertionError("the drain script still runs")
    except ProcessLookupError:
        pass
    assert await ask("ping", []) == {"value": "pong"}
    assert await ask("cancel_task", [task_id]) == {"value": "canceled"}   # again: nothing left to stop


class Sleeper(Action):
    name = "sleeper"

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self) -> str:
        await asyncio.sleep(0.3)
        return "slept"


async def test_a_queued_drain_is_canceled_before_it_runs(services: Any, vcap: Paths, tmp_path: Path) -> None:
    from agent.action.drain import Drain
    services.specs.save(CURRENT)
    ran = tmp_path / "ran"
    install_drain(vcap, f"touch {ran}\necho 0\n")
    first = services.tasks.submit("sleeper", Sleeper(services).run)
    drain = services.tasks.submit("drain", lambda: Drain(services).run("shutdown"), cancelable=True)
    services.tasks.cancel(drain.id)
    await wait_for(lambda: drain.state != "running" and first.state != "running")
    assert (first.state, first.result) == ("done", "slept")
    assert (drain.state, drain.error) == ("failed", "task canceled")
    assert not ran.exists()


async def test_other_tasks_cannot_be_canceled_and_unknown_ids_are_errors(services: Any) -> None:
    reply = await call(services, "cancel_task", ["nope"])
    assert reply == {"exception": {"message": "Action Failed cancel_task: Task with id nope could not be found"}}
    task = services.tasks.submit("sleeper", Sleeper(services).run)
    reply = await call(services, "cancel_task", [task.id])
    assert reply == {"exception": {"message":
                                   f"Action Failed cancel_task: canceling task {task.id} (sleeper) is not supported"}}
    await wait_for(lambda: task.state == "done")
    assert await call(services, "get_task", [task.id]) == {"value": "slept"}
    assert await call(services, "info") == {"value": {"api_version": 1}}
