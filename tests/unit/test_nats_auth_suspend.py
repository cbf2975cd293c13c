"""``cut-nats`` (director/faults.py) as NatsAuth does it, against a real nats-server reloaded by the nats image's
own watcher: a suspended agent is disconnected and refused, a sync (VM created or deleted) keeps it out, and
resuming lets it back in."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from tests.unit.test_nats_auth import AuthServer, connect, server  # noqa: F401 - the fixture


async def refused(url: str) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)


async def test_a_suspended_agent_is_cut_off_until_resumed_and_syncs_keep_it_out(server: AuthServer) -> None:  # noqa: F811
    password = await server.auth.add("cut")
    other = await server.auth.add("other")
    conn = await connect(server.url("cut", password))
    await server.auth.suspend("cut")
    deadline = time.monotonic() + 5
    while conn.is_connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not conn.is_connected, "nats-server keeps the suspended agent's connection"
    await refused(server.url("cut", password))

    await server.auth.sync({"cut": password, "other": other})      # a VM created elsewhere: nats-sync
    await server.auth.add("new")
    await refused(server.url("cut", password))
    c = await connect(server.url("other", other))
    await c.close()

    await server.auth.resume("cut")
    back = await connect(server.url("cut", password))
    await back.close()
    await server.auth.resume("cut")     # twice: nothing to do
