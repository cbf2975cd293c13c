"""What per-agent NATS users cost (issue 8): the time ``NatsAuth.add`` takes before a new VM's agent may connect
(write the users file, nats-server reloads it), and a request/reply round trip through the agent's permissioned
user against the same round trip through an unrestricted user, alternated on one real nats-server.

    python bench/nats_auth_cost.py [--adds 20] [--rounds 2000]

Needs Debian's nats-server (tests/run installs it); no Docker."""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boshlab.httpauth import with_userinfo
from director.nats_auth import NatsAuth, render

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def round_trips(url_agent: str, url_free: str, agent_id: str, rounds: int) -> tuple[list[float], list[float]]:
    """Alternate: a request to agent.<id> answered by a responder connected as the agent (its replies go to
    director.>), and the same through a responder connected as an unrestricted user."""
    director = await nats.connect(url_free)
    agent = await nats.connect(url_agent)
    free = await nats.connect(url_free)

    def echo(conn: Client) -> Callable[[Msg], Awaitable[None]]:
        async def answer(msg: Msg) -> None:
            await conn.publish(json.loads(msg.data)["reply_to"], b'{"value":"pong"}')
        return answer
    await agent.subscribe(f"agent.{agent_id}", cb=echo(agent))
    await free.subscribe("agent.free", cb=echo(free))
    inbox = await director.subscribe("director.bench.>")
    await asyncio.gather(agent.flush(), free.flush(), director.flush())
    restricted: list[float] = []
    unrestricted: list[float] = []
    for i in range(rounds):
        for subject, out in ((f"agent.{agent_id}", restricted), ("agent.free", unrestricted)):
            reply = f"director.bench.{i}"
            t = time.perf_counter()
            await director.publish(subject, json.dumps({"method": "ping", "arguments": [], "reply_to": reply}).encode())
            await inbox.next_msg(timeout=5)
            out.append(time.perf_counter() - t)
    for c in (agent, free, director):
        await c.close()
    return restricted, unrestricted


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adds", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2000)
    a = p.parse_args()
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    with tempfile.TemporaryDirectory() as tmp:
        auth_dir = Path(tmp)
        (auth_dir / "director.password").write_text("d")
        (auth_dir / "operator.user").write_text("free")
        (auth_dir / "operator.password").write_text("f")
        (auth_dir / "auth.conf").write_text(render("d", ("free", "f"), {}))
        port, http = free_port(), free_port()
        (auth_dir / "nats.conf").write_text(f'listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n'
                                            f'pid_file: "{auth_dir / "pid"}"\ninclude "auth.conf"\n')
        quiet = asyncio.subprocess.DEVNULL
        server = await asyncio.create_subprocess_exec(exe, "-c", str(auth_dir / "nats.conf"), stdout=quiet, stderr=quiet)
        watcher = await asyncio.create_subprocess_exec("sh", str(ROOT / "nats" / "reload-on-change"),
                                                       str(auth_dir / "auth.conf"), str(auth_dir / "pid"),
                                                       stdout=quiet, stderr=quiet)
        try:
            await asyncio.sleep(0.5)
            auth = NatsAuth(str(auth_dir), f"http://127.0.0.1:{http}")
            adds = []
            for i in range(a.adds):
                t = time.perf_counter()
                await auth.add(f"agent-{i}")
                adds.append(time.perf_counter() - t)
            base = f"nats://127.0.0.1:{port}"
            restricted, unrestricted = await round_trips(with_userinfo(base, "agent-0", auth.agents["agent-0"]),
                                                         with_userinfo(base, "free", "f"), "agent-0", a.rounds)
        finally:
            watcher.kill()
            server.terminate()
            await server.wait()
            await watcher.wait()
    mr, mu = statistics.median(restricted), statistics.median(unrestricted)
    print(json.dumps({
        "add_user_median_s": round(statistics.median(adds), 3), "add_user_max_s": round(max(adds), 3),
        "rounds": a.rounds, "rtt_agent_user_median_ms": round(mr * 1000, 3),
        "rtt_unrestricted_median_ms": round(mu * 1000, 3), "ratio_median": round(mr / mu, 3)}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
