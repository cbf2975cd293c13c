"""Agent `ping` round trip vs a bare nats-py request/echo on the same NATS, alternated in one run.

    python bench/ping.py [--project bosh-lab] [--rounds 500]

Needs a running lab (`docker compose up`). The baseline is an echo responder on the same server, reached
from the same client: the ratio is what the agent (JSON decode, dispatch, log line, reply) adds."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.client import DirectorClient


def compose_port(project: str, service: str, port: int) -> int:
    out = subprocess.run(["docker", "compose", "-p", project, "port", service, str(port)], capture_output=True,
                         text=True, check=True).stdout.strip()
    return int(out.rsplit(":", 1)[1])


def operator_password(project: str) -> str:
    """The operator's NATS password, made at the lab's first start (the nats-auth volume)."""
    return subprocess.run(["docker", "compose", "-p", project, "exec", "-T", "nats", "cat",
                           "/var/vcap/nats-auth/operator.password"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


async def agent_id(api: str, deployment: str) -> str:
    async with DirectorClient(api) as d:
        rows = await d.get_json(f"/deployments/{deployment}/instances")
    return str(next(r["agent_id"] for r in rows if r["agent_id"]))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", default="bosh-lab")
    p.add_argument("--deployment", default="redis-solo")
    p.add_argument("--rounds", type=int, default=500)
    a = p.parse_args()
    nats_port = compose_port(a.project, "nats", 4222)
    api = f"http://127.0.0.1:{compose_port(a.project, 'director', 25555)}"
    agent = await agent_id(api, a.deployment)
    password = operator_password(a.project)
    nc = await nats.connect(f"nats://nats:{password}@127.0.0.1:{nats_port}")   # the operator's user
    echo_subject = f"bench.echo.{uuid.uuid4()}"

    async def echo(msg) -> None:  # type: ignore[no-untyped-def]
        await nc.publish(msg.reply, b'{"value":"pong"}')
    await nc.subscribe(echo_subject, cb=echo)
    inbox = f"director.{uuid.uuid4()}"
    sub = await nc.subscribe(inbox + ".>")
    base, agent_rtt = [], []
    for _ in range(a.rounds):
        t = time.perf_counter()
        await nc.request(echo_subject, b'{"protocol":3,"method":"ping","arguments":[]}', timeout=5)
        base.append(time.perf_counter() - t)
        reply_to = f"{inbox}.{agent}.{uuid.uuid4()}"
        t = time.perf_counter()
        request = {"protocol": 3, "method": "ping", "arguments": [], "reply_to": reply_to}
        await nc.publish(f"agent.{agent}", json.dumps(request).encode())
        msg = await sub.next_msg(timeout=5)
        agent_rtt.append(time.perf_counter() - t)
        assert json.loads(msg.data) == {"value": "pong"}
    await nc.close()
    mb, ma = statistics.median(base) * 1e3, statistics.median(agent_rtt) * 1e3
    pb = sorted(base)[int(len(base) * .95)] * 1e3
    pa = sorted(agent_rtt)[int(len(agent_rtt) * .95)] * 1e3
    print(json.dumps({"rounds": a.rounds, "bare_nats_median_ms": round(mb, 3), "agent_ping_median_ms": round(ma, 3),
                      "ratio_median": round(ma / mb, 2), "bare_nats_p95_ms": round(pb, 3), "agent_ping_p95_ms": round(pa, 3),
                      "ratio_p95": round(pa / pb, 2)}))


if __name__ == "__main__":
    asyncio.run(main())
