"""Agent `ping` round trip vs a bare nats-py request/echo on the same NATS, alternated in one run.

    python bench/ping.py [--project bosh-lab] [--rounds 500] [--json FILE]

With ``--project`` it uses that running lab (redis-solo deployed), else a lab of its own. The baseline is an
echo responder on the same server, reached from the same client, answering the same bytes: the ratio is what
the agent (JSON decode, dispatch, log line, reply) adds. Figure: ``agent ping`` (median, goal ≤ 1.1×)."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import nats
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, workshop_lab
from bench.figures import Figure, dumps, figure, table

PONG = b'{"value":"pong"}'


async def rounds(nats_url: str, agent: str, n: int) -> tuple[list[float], list[float]]:
    """``n`` alternated round trips: (bare echo, agent ping), seconds each."""
    nc = await nats.connect(nats_url, connect_timeout=10)   # the operator's user
    try:
        echo_subject = f"bench.echo.{uuid.uuid4()}"

        async def echo(msg: Msg) -> None:
            await nc.publish(msg.reply, PONG)
        await nc.subscribe(echo_subject, cb=echo)
        inbox = f"director.{uuid.uuid4()}"
        sub = await nc.subscribe(inbox + ".>")
        base: list[float] = []
        agent_rtt: list[float] = []
        for i in range(n + 10):     # the first 10 of each warm up (connections, caches) and are not counted
            reply_to = f"{inbox}.{agent}.{uuid.uuid4()}"
            request = json.dumps({"protocol": 3, "method": "ping", "arguments": [], "reply_to": reply_to}).encode()
            t = time.perf_counter()
            await nc.request(echo_subject, request, timeout=5)
            b = time.perf_counter() - t
            t = time.perf_counter()
            await nc.publish(f"agent.{agent}", request)
            msg = await sub.next_msg(timeout=5)
            a = time.perf_counter() - t
            if json.loads(msg.data) != {"value": "pong"}:
                raise SystemExit(f"agent answered ping with {msg.data[:200]!r}")
            if i >= 10:
                base.append(b)
                agent_rtt.append(a)
        return base, agent_rtt
    finally:
        await nc.close()


def measure_lab(lab: BenchLab, n: int) -> list[Figure]:
    rows = lab.instances("redis-solo")
    agent = str(next(r["agent_id"] for r in rows if r["agent_id"]))
    base, agent_rtt = asyncio.run(rounds(lab.nats_url(), agent, n))
    mb, ma = statistics.median(base) * 1e3, statistics.median(agent_rtt) * 1e3
    p95b = sorted(base)[int(len(base) * .95)] * 1e3
    p95a = sorted(agent_rtt)[int(len(agent_rtt) * .95)] * 1e3
    return [figure("agent ping", "ms", ma, mb, "nats-py request/echo", 1.1,
                   note=f"median of {n} alternated round trips; p95 {p95a:.3f} ms vs {p95b:.3f} ms")]


def measure(quick: bool) -> list[Figure]:
    with workshop_lab() as lab:
        return measure_lab(lab, 200 if quick else 1000)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", help="a running lab's compose project (default: a lab of its own)")
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    if a.project:
        lab = BenchLab(a.project)
        lab.api = "http://127.0.0.1:" + lab.port("director", 25555)
        figures = measure_lab(lab, a.rounds)
        lab.close()
    else:
        with workshop_lab() as lab:
            figures = measure_lab(lab, a.rounds)
    print(table(figures))
    if a.json:
        Path(a.json).write_text(dumps(figures))


if __name__ == "__main__":
    main()
