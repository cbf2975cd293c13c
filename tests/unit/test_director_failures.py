"""Failures named, never opaque: the director reads an agent's log while it waits for ``ping`` and names the
cause within seconds. The logs here are produced by the REAL agent code (settings service against a real
HTTP registry, mbus against a real nats-server), so a change of the agent's wording breaks these tests."""
from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from agent.log import setup_logging
from agent.mbus import MBus
from agent.paths import Paths
from agent.settings import SettingsError, SettingsService
from director.cpi import CPI, VMStatus
from director.diagnose import diagnose_agent_log
from director.nats_rpc import Agents, NatsRpc, RpcTimeout
from director.store import Registry
from director.tasks import Task, TaskFailed
from director.vms import AgentEnv, VMs
from tests.unit.conftest import NatsServer, free_port


@pytest.fixture
def agent_log() -> io.StringIO:
    buf = io.StringIO()
    setup_logging(buf)
    return buf


@pytest.fixture
def nats_port(nats_server: NatsServer) -> int:
    return nats_server.port


async def connect_for(mbus: MBus, seconds: float) -> None:
    try:
        await asyncio.wait_for(mbus.connect(), seconds)
    except TimeoutError:
        pass


async def test_wrong_nats_credentials_are_named(nats_port: int, agent_log: io.StringIO,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep)
    await connect_for(MBus(f"nats://nats:wrong@127.0.0.1:{nats_port}", "a1", connect_timeout=1), 4)
    found = diagnose_agent_log(agent_log.getvalue())
    assert found is not None and found.kind == "nats_credentials", agent_log.getvalue()
    assert "wrong NATS credentials" in str(found)


async def test_unreachable_nats_is_named(agent_log: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep)
    await connect_for(MBus(f"nats://nats:nats@127.0.0.1:{free_port()}", "a1", connect_timeout=1), 4)
    found = diagnose_agent_log(agent_log.getvalue())
    assert found is not None and found.kind == "nats_unreachable", agent_log.getvalue()


_real_sleep = asyncio.sleep


async def _fast_sleep(delay: float, *a: Any) -> Any:
    return await _real_sleep(min(delay, 0.05), *a)


@pytest.mark.parametrize("status, kind", [(404, "settings_not_found"), (401, "registry_credentials")])
async def test_registry_answers_are_named(tmp_path: Path, agent_log: io.StringIO, status: int, kind: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "nope"}, status=status)
    app = web.Application()
    app.router.add_get("/instances/{id}/settings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        paths = Paths(tmp_path / "vcap")
        paths.ensure_layout()
        paths.user_data.write_text(json.dumps({"registry": {"endpoint": f"http://u:p@127.0.0.1:{port}"},
                                               "instance_id": "vm-1"}))
        with pytest.raises(SettingsError):
            await SettingsService(paths, attempts=3, retry_delay=0.01).fetch()
    finally:
        await runner.cleanup()
    found = diagnose_agent_log(agent_log.getvalue())
    assert found is not None and found.kind == kind, agent_log.getvalue()


def test_one_failure_is_not_yet_a_diagnosis_and_a_connected_agent_is_fine() -> None:
    one = "#[1] WARN: NATS connection failed (NoServersError: nats: no servers available for connection), retrying in 2 s\n"
    assert diagnose_agent_log(one) is None
    assert diagnose_agent_log(one * 2).kind == "nats_unreachable"  # type: ignore[union-attr]
    assert diagnose_agent_log(one * 2 + "#[1] INFO: Connected to NATS at nats://nats:***@nats:4222\n") is None
    restarted = one * 3 + "#[2] INFO: Starting agent bosh-lab 0.1...\n" + one
    assert diagnose_agent_log(restarted) is None, "only the agent's current run counts"


class FakeCPI:
    """Just what VMs.wait_until_ready asks of a CPI: the VM's status and a look at its agent's log."""

    def __init__(self, log: str, running: bool = True, exit_code: int | None = None) -> None:
        self.log, self.running, self.exit_code = log, running, exit_code
        self.execs: list[list[str]] = []

    async def vm_status(self, cid: str, tail: int = 20) -> VMStatus:
        return VMStatus(True, self.running, self.exit_code, "running" if self.running else "exited",
                        "" if self.running else "stemcell-init: runsvdir died\n")

    async def exec(self, cid: str, cmd: list[str]) -> tuple[int, str]:
        self.execs.append(cmd)
        return 0, self.log


class SilentRpc:
    """A NATS connection on which no agent ever answers."""
    connected = True
    redacted_url = "nats://nats:***@nats:4222"

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float, debug: Any = None) -> Any:
        await asyncio.sleep(min(timeout, 0.05))
        raise RpcTimeout("no answer")


ENV = AgentEnv("http://admin:admin@director:25889", "nats://nats:nats@nats:4222",
               {"provider": "dav", "options": {"endpoint": "http://blobstore:25250", "user": "agent",
                                               "password": "agent"}}, 30.0, wait_timeout=60)


def vms_for(cpi: FakeCPI, task: Task, rpc: SilentRpc | None = None) -> VMs:
    agents = Agents(cast(NatsRpc, rpc or SilentRpc()), timeout=1, poll_interval=0.1)
    return VMs(cast(CPI, cpi), cast(Registry, None), agents, ENV, task)


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    t = Task(1, "test", tmp_path / "t")
    yield t
    t.close()


async def test_wait_until_ready_names_the_cause_within_seconds(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("director.vms.DIAGNOSE_AFTER", 0.2)
    log = "#[7] WARN: Fetching settings from the registry failed (attempt 1/60): registry answered 404 for http://x\n" * 2
    cpi = FakeCPI(log)
    t0 = time.monotonic()
    with pytest.raises(TaskFailed, match="settings are not in the registry") as e:
        await vms_for(cpi, task).wait_until_ready("agent-1", "cid-1", "vm-1")
    assert time.monotonic() - t0 < 5
    assert "The agent's log ends with" in str(e.value)
    assert cpi.execs and cpi.execs[0][-1] == "/var/vcap/bosh/log/current"


async def test_wait_until_ready_names_an_exited_vm(task: Task) -> None:
    with pytest.raises(TaskFailed, match="exited with code 3 before its agent answered ping") as e:
        await vms_for(FakeCPI("", running=False, exit_code=3), task).wait_until_ready("a", "c", "vm")
    assert "runsvdir died" in str(e.value)


async def test_wait_until_ready_names_the_directors_own_nats(task: Task) -> None:
    rpc = SilentRpc()
    rpc.connected = False
    with pytest.raises(TaskFailed, match="the director has no NATS connection"):
        await vms_for(FakeCPI(""), task, rpc).wait_until_ready("a", "c", "vm")


def test_timeouts_are_not_named_too_soon() -> None:
    """A busy director (it is the registry) or a slow NATS times out now and then: not a cause yet."""
    line = "#[1] WARN: Fetching settings from the registry failed (attempt 1/60): TimeoutError: TimeoutError\n"
    assert diagnose_agent_log(line * 2) is None
    assert diagnose_agent_log(line * 6).kind == "registry_unreachable"  # type: ignore[union-attr]
    refused = "#[1] WARN: Fetching settings from the registry failed (attempt 1/60): ClientConnectorError: refused\n"
    assert diagnose_agent_log(refused * 2).kind == "registry_unreachable"  # type: ignore[union-attr]
