"""The one drain routine, for updates and deletions alike.

The director sends ``drain`` and waits as the answer says (protocol.md §7, BOSH's ``stopper.rb``): a
positive value: sleep that many seconds; a negative one: sleep |N|, then ask ``drain status`` and go on
while the answer is negative. The agent runs each job's drain script on its own (today's agent): with one
script it answers that script's value (the 2013 contract the deck shows); with several, each script loops
on its own dynamic drain inside the agent and the agent answers 0 once all are done."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from boshlab.contracts import ApplySpec

from .nats_rpc import AgentClient, Deadlines

DRAIN_KINDS = ("update", "shutdown")


class DrainError(Exception):
    """The agent's drain answer was not an integer."""


async def drain(agent: AgentClient, kind: str, spec: ApplySpec | None, label: str,
                info: Callable[[str], None]) -> None:
    """``drain update`` (with the new spec) or ``drain shutdown``, then wait as the answer says; all of it
    within the drain deadline (then the agent's drain is cancelled and DrainError names the deadline)."""
    assert kind in DRAIN_KINDS
    info(f"{label}: drain {kind}")
    deadline = agent.deadlines.drain
    try:
        async with asyncio.timeout(deadline):
            value = await (agent.send_message("drain", kind, spec) if kind == "update"
                           else agent.send_message("drain", kind))
            await wait_for_drain(agent, value, label, info)
    except TimeoutError:
        raise DrainError(f"drain did not finish within {deadline:g} seconds "
                         f"({Deadlines.setting('drain')})") from None


async def wait_for_drain(agent: AgentClient, value: Any, label: str, info: Callable[[str], None]) -> None:
    n = _integer(value, "drain returned")
    while n < 0:
        info(f"{label}: dynamic drain, checking again in {-n}s")
        await asyncio.sleep(-n)
        n = _integer(await agent.send_message("drain", "status"), "drain status returned")
    if n > 0:
        info(f"{label}: drain asked to wait {n}s")
        await asyncio.sleep(n)


def _integer(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DrainError(f"{what} {value!r}, expected an integer")
    return value
