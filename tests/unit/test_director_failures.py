"""Failures named, never opaque: the director reads an agent's log while it waits for ``ping`` and names the
cause within seconds. The logs here are produced by the REAL agent code (settings service against a real
HTTP registry, mbus against a real nats-server), so a change of the agent's wording breaks these tests."""
from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from agent.log import setup_logging
from agent.mbus import MBus
from agent.paths import Paths
from agent.settings import SettingsError, SettingsService
from director.cpi import VMStatus
from director.deployer import Deployer
from director.diagnose import diagnose_agent_log
from director.nats_rpc import RpcTimeout
from director.tasks import Task, TaskFailed
from tests.unit.conftest import NatsServer, free_port


@pytest.fixture
def agent_log():
    buf = io.StringIO()
    setup_logging(buf)
    return buf


@pytest.fixture
def nats_port(nats_server: NatsServer) -> int:
    return nats_server.port


async def connect_for(mbus: MBus, seconds: float) -> None:
    try:
        await asyncio.wait_for(mbus.connect(), seconds)
    except asyncio.TimeoutError:
        pass


async def test_wrong_nats_credentials_are_named(nats_port, agent_log, monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep)
    await connect_for(MBus(f"nats://nats:wrong@127.0.0.1:{nats_port}", "a1", connect_timeout=1), 4)
    found = diagnose_agent_log(agent_log.getvalue())
    assert found is not None and found.kind == "nats_credentials", agent_log.getvalue()
    assert "wrong NATS credentials" in str(found)


async def test_unreachable_nats_is_named(agent_log, monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep)
    await connect_for(MBus(f"nats://nats:nats@127.0.0.1:{free_port()}", "a1", connect_timeout=1), 4)
    found = diagnose_agent_log(agent_log.getvalue())
    assert found is not None and found.kind == "nats_unreachable", agent_log.getvalue()


_real_sleep = asyncio.sleep


async def _fast_sleep(delay: float, *a: Any) -> Any:
    return await _real_sleep(min(delay, 0.05), *a)


@pytest.mark.parametrize("status, kind", [(404, "settings_not_found"), (401, "registry_credentials")])
async def test_registry_answers_are_named(tmp_path, agent_log, status, kind):
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


def test_one_failure_is_not_yet_a_diagnosis_and_a_connected_agent_is_fine():
    one = "#[1] WARN: NATS connection failed (NoServersError: nats: no servers available for connection), retrying in 2 s\n"
    assert diagnose_agent_log(one) is None
    assert diagnose_agent_log(one * 2).kind == "nats_unreachable"  # type: ignore[union-attr]
    assert diagnose_agent_log(one * 2 + "#[1] INFO: Connected to NATS at nats://nats:***@nats:4222\n") is None
    restarted = one * 3 + "#[2] INFO: Starting agent bosh-lab 0.1...\n" + one
    assert diagnose_agent_log(restarted) is None, "only the agent's current run counts"


class FakeCPI:
    def __init__(self, log: str, running: bool = True, exit_code: int | None = None) -> None:
        self.log, self.running, self.exit_code = log, running, exit_code

    async def vm_status(self, cid: str) -> VMStatus:
        return VMStatus(True, self.running, self.exit_code, "running" if self.running else "exited",
                        "" if self.running else "stemcell-init: runsvdir died\n")

    async def exec_in(self, cid: str, cmd: list[str]) -> tuple[int, str]:
        return 0, self.log


class SilentRpc:
    connected = True
    redacted_url = "nats://nats:***@nats:4222"

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float, debug: Any = None) -> Any:
        await asyncio.sleep(min(timeout, 0.05))
        raise RpcTimeout("no answer")


def fake_director(cpi: FakeCPI, rpc: Any = None) -> Any:
    cfg = SimpleNamespace(rpc_timeout=1, poll_interval=0.1, agent_wait_timeout=60)
    return SimpleNamespace(config=cfg, rpc=rpc or SilentRpc(), cpi=cpi)


@pytest.fixture
def task(tmp_path):
    t = Task(1, "test", tmp_path / "t")
    yield t
    t.close()


async def test_wait_until_ready_names_the_cause_within_seconds(task, monkeypatch):
    monkeypatch.setattr("director.deployer.DIAGNOSE_AFTER", 0.2)
    log = "#[7] WARN: Fetching settings from the registry failed (attempt 1/60): registry answered 404 for http://x\n" * 2
    t0 = time.monotonic()
    with pytest.raises(TaskFailed, match="settings are not in the registry") as e:
        await Deployer(fake_director(FakeCPI(log)), task).wait_until_ready("agent-1", "cid-1", "vm-1")
    assert time.monotonic() - t0 < 5
    assert "The agent's log ends with" in str(e.value)


async def test_wait_until_ready_names_an_exited_vm(task):
    with pytest.raises(TaskFailed, match="exited with code 3 before its agent answered ping") as e:
        await Deployer(fake_director(FakeCPI("", running=False, exit_code=3)), task).wait_until_ready("a", "c", "vm")
    assert "runsvdir died" in str(e.value)


async def test_wait_until_ready_names_the_directors_own_nats(task):
    rpc = SilentRpc()
    rpc.connected = False
    with pytest.raises(TaskFailed, match="the director has no NATS connection"):
        await Deployer(fake_director(FakeCPI(""), rpc), task).wait_until_ready("a", "c", "vm")


def test_timeouts_are_not_named_too_soon():
    """A busy director (it is the registry) or a slow NATS times out now and then: not a cause yet."""
    line = "#[1] WARN: Fetching settings from the registry failed (attempt 1/60): TimeoutError: TimeoutError\n"
    assert diagnose_agent_log(line * 2) is None
    assert diagnose_agent_log(line * 6).kind == "registry_unreachable"  # type: ignore[union-attr]
    refused = "#[1] WARN: Fetching settings from the registry failed (attempt 1/60): ClientConnectorError: refused\n"
    assert diagnose_agent_log(refused * 2).kind == "registry_unreachable"  # type: ignore[union-attr]
