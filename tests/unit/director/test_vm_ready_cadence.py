"""Issue 12, VMs ready fast: the director pings a new VM every 50-250 ms (a lost ping costs little), looks
at the VM's state at most once a second, and creates at most 4 VMs per CPU at once."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from director.deploy import creation_limit
from director.tasks import Task
from director.vms import PING_EVERY
from tests.unit.test_director_failures import FakeCPI, SilentRpc, task, vms_for

__all__ = ["task"]   # the fixture, shared


class LateAgent(SilentRpc):
    """No answer until ``after`` seconds have passed, then ``pong``."""

    def __init__(self, after: float) -> None:
        self.ready_at = time.monotonic() + after
        self.pings = 0

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float, debug: Any = None) -> Any:
        self.pings += 1
        if time.monotonic() >= self.ready_at:
            return "pong"
        await asyncio.sleep(min(timeout, max(0.0, self.ready_at - time.monotonic()) + timeout))
        return await super().request(agent_id, method, args, 0)


class CountingCPI(FakeCPI):
    def __init__(self) -> None:
        super().__init__("")
        self.status_calls = 0

    async def vm_status(self, cid: str, tail: int = 20) -> Any:
        self.status_calls += 1
        return await super().vm_status(cid, tail)


async def test_an_agent_that_comes_up_is_answered_soon_and_docker_is_asked_rarely(task: Task) -> None:
    rpc, cpi = LateAgent(1.5), CountingCPI()
    t0 = time.monotonic()
    await vms_for(cpi, task, rpc).wait_until_ready("a", "c", "vm")
    took = time.monotonic() - t0
    assert 1.5 <= took < 1.5 + PING_EVERY + 0.3
    assert rpc.pings >= 5
    assert cpi.status_calls <= 2


def test_vms_created_at_once_fit_the_machine() -> None:
    assert creation_limit(16, cpus=2) == 8
    assert creation_limit(4, cpus=2) == 4
    assert creation_limit(16, cpus=8) == 16
    assert creation_limit(0, cpus=2) == 1
    assert 1 <= creation_limit(16) <= 16


async def test_a_slow_boot_is_looked_into_less_and_less_often(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("director.vms.DIAGNOSE_AFTER", 0.1)
    monkeypatch.setattr("director.vms.VM_STATUS_EVERY", 0.05)
    monkeypatch.setattr("director.vms.LOOK_EVERY", 0.2)
    monkeypatch.setattr("director.vms.LOOK_GROWTH", 2.0)
    rpc, cpi = LateAgent(3.0), CountingCPI()
    await vms_for(cpi, task, rpc).wait_until_ready("a", "c", "vm")
    assert 2 <= len(cpi.execs) <= 6      # every 0.2 s it would have been about 14
