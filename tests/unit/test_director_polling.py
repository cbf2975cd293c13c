"""The director learns that an agent task ended soon after it ends: get_task after 10 ms, then after a fifth of
the time taken so far, at most every poll interval (BOSH: every second)."""
from __future__ import annotations

import time
from typing import Any, cast

import pytest

from director.nats_rpc import FIRST_POLL, AgentClient, NatsRpc, poll_delay


def test_poll_delay_grows_with_the_time_taken_and_stops_at_the_interval() -> None:
    assert poll_delay(0.0, 1.0) == FIRST_POLL
    assert poll_delay(0.02, 1.0) == FIRST_POLL
    assert poll_delay(1.0, 1.0) == pytest.approx(0.2)
    assert poll_delay(2.5, 1.0) == pytest.approx(0.5)
    assert poll_delay(60.0, 1.0) == 1.0
    assert poll_delay(60.0, 0.05) == 0.05          # a test director's short interval still caps it
    assert poll_delay(0.0, 0.005) == 0.005


class TaskRpc:
    """An agent whose long-running action ends ``duration`` seconds after it was sent."""
    connected = True
    redacted_url = "nats://nats:***@nats:4222"

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.started = 0.0
        self.polls: list[float] = []

    async def request(self, agent_id: str, method: str, args: list[Any], timeout: float, debug: Any = None) -> Any:
        now = time.monotonic()
        if method != "get_task":
            self.started = now
            return {"agent_task_id": "t1", "state": "running"}
        self.polls.append(now - self.started)
        return {"agent_task_id": "t1", "state": "running"} if now - self.started < self.duration else "applied"


@pytest.mark.parametrize("duration", [0.0, 0.3, 1.5])
async def test_the_director_hears_of_the_end_within_a_fifth_of_its_duration(duration: float) -> None:
    rpc = TaskRpc(duration)
    agent = AgentClient(cast(NatsRpc, rpc), "agent-1", poll_interval=1.0)
    t = time.monotonic()
    assert await agent.send_message("apply", {}) == "applied"
    late = (time.monotonic() - t) - duration
    assert late <= 0.2 * duration + 0.15, (late, rpc.polls)      # BOSH's fixed second: up to 1 s late
    assert len(rpc.polls) <= 30
