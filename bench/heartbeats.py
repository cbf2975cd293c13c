"""Director CPU with many agents heartbeating: simulated agents are coroutines in a few processes (not
containers), publishing real-shaped heartbeats on ``hm.agent.heartbeat.<id>`` to the lab's NATS.

    python bench/heartbeats.py [--agents 1000] [--processes 4] [--intervals 30,2] [--seconds 60]

Brings a lab of its own up (workshop off) and down. The baseline is the same director, idle, with no agent.
The director's CPU is its main process's (from /proc on the host: Docker's healthchecks excluded). Reports,
per heartbeat interval: heartbeats/s, director CPU % of one core with and without the agents, the
difference per 1000 agents, and how many agents the director heard."""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, main_process_cpu


def payload(agent: int, deployment: str) -> bytes:
    return json.dumps({
        "deployment": deployment, "job": "app", "index": agent, "job_state": "running",
        "vitals": {"cpu": {"sys": "0.4", "user": "1.7", "wait": "0.0"},
                   "disk": {"system": {"inode_percent": "11", "percent": "38"}},
                   "load": ["0.05", "0.10", "0.08"], "mem": {"kb": "40211", "percent": "2"},
                   "swap": {"kb": "0", "percent": "0"}, "uptime": {"secs": 5021}},
        "node_id": str(uuid.uuid4()), "number_of_processes": 1}).encode()


async def simulate(url: str, agents: int, first: int, interval: float, stop_at: float) -> int:
    import nats
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    sent = 0

    async def agent(i: int) -> None:
        nonlocal sent
        subject = f"hm.agent.heartbeat.{uuid.uuid4()}"
        body = payload(first + i, "simulated")
        await asyncio.sleep(random.uniform(0, interval))          # agents do not beat in step
        while time.time() < stop_at:
            await nc.publish(subject, body)
            sent += 1
            await asyncio.sleep(interval)
    await asyncio.gather(*(agent(i) for i in range(agents)))
    await nc.flush()
    await nc.close()
    return sent


def worker(url: str, agents: int, first: int, interval: float, stop_at: float, q: Any) -> None:
    q.put(asyncio.run(simulate(url, agents, first, interval, stop_at)))


def measure_idle(director: str, seconds: float) -> float:
    cpu0 = main_process_cpu(director)
    time.sleep(seconds)
    return 100 * (main_process_cpu(director) - cpu0) / seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", default="bosh-lab-bench-hb")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--intervals", default="30,2", help="heartbeat intervals to measure, seconds, comma-separated")
    p.add_argument("--seconds", type=float, default=60, help="measuring window")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    lab = BenchLab(a.project)
    results: dict[str, Any] = {"agents": a.agents, "processes": a.processes, "window_s": a.seconds}
    try:
        print("bench: lab up", file=sys.stderr)
        lab.up()
        director = lab.container("director")
        url = lab.nats_url()
        time.sleep(5)
        base = measure_idle(director, a.seconds)
        results["director_cpu_pct_idle_no_agents"] = round(base, 2)
        for interval in (float(x) for x in a.intervals.split(",")):
            heard0 = lab.request("GET", "/info")["health"]["heartbeats_received"]
            warmup = interval + 2
            stop_at = time.time() + warmup + a.seconds + 1
            q: Any = multiprocessing.Queue()
            per = a.agents // a.processes
            procs = [multiprocessing.Process(target=worker, args=(url, per + (1 if k < a.agents % a.processes else 0),
                                                                  k * per, interval, stop_at, q))
                     for k in range(a.processes)]
            for pr in procs:
                pr.start()
            print(f"bench: {a.agents} agents, every {interval:g}s: warm-up {warmup:g}s, then {a.seconds:g}s", file=sys.stderr)
            time.sleep(warmup)
            cpu = measure_idle(director, a.seconds)
            for pr in procs:
                pr.join()
            sent = sum(q.get() for _ in procs)
            info = lab.request("GET", "/info")["health"]
            results[f"interval_{interval:g}s"] = {
                "heartbeats_per_s": round(a.agents / interval, 1),
                "director_cpu_pct": round(cpu, 2),
                "director_cpu_pct_over_idle": round(cpu - base, 2),
                "director_cpu_pct_per_1000_agents": round((cpu - base) * 1000 / a.agents, 2),
                "heartbeats_sent": sent,
                "heartbeats_received_by_director": info["heartbeats_received"] - heard0,
                "agents_known_to_director": info["agents_heard"],
            }
    finally:
        if not a.keep:
            print("bench: lab down", file=sys.stderr)
            lab.down()
        lab.close()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
