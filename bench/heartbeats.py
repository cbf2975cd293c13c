"""Director CPU with a large fleet heartbeating: simulated agents are coroutines in a few processes (not
containers), publishing real-shaped heartbeats on ``hm.agent.heartbeat.<agent id>`` to the lab's NATS.

    python bench/heartbeats.py [--agents 10000] [--processes 4] [--interval 30] [--seconds 60]
                               [--modes known,unknown] [--quick] [--json] [--keep]

Brings a lab of its own up (compose project ``bench-fleet-hb``, workshop off) and always down (``down -v``).
The simulated agents publish as the lab's operator (its NATS user may publish anything; an agent VM's own user
may publish only its own subjects, director/nats_auth.py), so no per-agent NATS user is made for them.

Two fleets, one after the other in the same lab:

* ``known``: the agents are the director's: one instance row per agent (deployment ``simulated``, a VM cid, an
  IP) written into the director's store through its own repositories (``docker compose exec director``), so the
  health monitor computes their states, the watch names them (``app/<index>``) and listings show them.
* ``unknown``: agent ids the director has no instance for (another lab's agents on the same NATS).

The director's CPU is its main process's (user + system of the process and its reaped children, from /proc on
the host: Docker's healthchecks excluded). The baseline is the same director, idle, with no agent, measured
in the same lab just before. Reported per fleet: the director's CPU % of one core with the fleet and idle; the
heartbeats the health monitor heard; the heartbeats the watch timeline summarised in the window (``GET /watch``:
a tap that falls behind summarises fewer than were sent). Issue 12's goal: the fleet costs ≤ 15 % of one core."""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import random
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, main_process_cpu
from bench.figures import Figure, dumps, figure, table

GOAL_PCT = 15.0
DEPLOYMENT = "simulated"
NAMESPACE = uuid.UUID("6b1f4c2e-0000-4000-8000-000000000012")

# Runs in the director's container: the fleet's instance rows, through the store's own repositories.
FILL = """
import asyncio, sys, uuid
from director.store import Store
N, NS, DEP = int(sys.argv[1]), uuid.UUID(sys.argv[2]), sys.argv[3]
async def main():
    s = Store("/var/vcap/store/director/director.sqlite3")
    await s.open()
    await s.db.run(lambda c: c.execute("PRAGMA synchronous=OFF"))
    await s.deployments.save(DEP, "name: " + DEP + "\\nreleases: []\\ninstance_groups: []\\n", {})
    for i in range(N):
        agent = str(uuid.uuid5(NS, str(i)))
        await s.instances.vm_created(str(uuid.uuid5(NS, "instance-" + str(i))), DEP, "app", i, agent,
                                     "bench-vm-" + agent[:12], "bench-" + agent[:8],
                                     "10.%d.%d.%d" % (100 + i // 65536, i // 256 % 256, i % 256), {}, "started")
    await s.close()
asyncio.run(main())
"""


def agent_ids(count: int, first: int, known: bool) -> list[str]:
    if known:
        return [str(uuid.uuid5(NAMESPACE, str(first + i))) for i in range(count)]
    return [str(uuid.uuid4()) for _ in range(count)]


def payload(agent: int, deployment: str) -> bytes:
    return json.dumps({
        "deployment": deployment, "job": "app", "index": agent, "job_state": "running",
        "vitals": {"cpu": {"sys": "0.4", "user": "1.7", "wait": "0.0"},
                   "disk": {"system": {"inode_percent": "11", "percent": "38"}},
                   "load": ["0.05", "0.10", "0.08"], "mem": {"kb": "40211", "percent": "2"},
                   "swap": {"kb": "0", "percent": "0"}, "uptime": {"secs": 5021}},
        "node_id": str(uuid.uuid4()), "number_of_processes": 1}).encode()


async def simulate(url: str, agents: int, first: int, interval: float, stop_at: float, known: bool) -> int:
    import nats
    nc = await nats.connect(url, max_reconnect_attempts=-1, connect_timeout=10)
    sent = 0

    async def agent(i: int, agent_id: str) -> None:
        nonlocal sent
        subject = f"hm.agent.heartbeat.{agent_id}"
        body = payload(first + i, DEPLOYMENT)
        await asyncio.sleep(random.uniform(0, interval))          # agents do not beat in step
        while time.time() < stop_at:
            await nc.publish(subject, body)
            sent += 1
            await asyncio.sleep(interval)
    await asyncio.gather(*(agent(i, a) for i, a in enumerate(agent_ids(agents, first, known))))
    await asyncio.wait_for(nc.flush(), 30)
    await asyncio.wait_for(nc.close(), 30)
    return sent


def worker(url: str, agents: int, first: int, interval: float, stop_at: float, known: bool, q: Any) -> None:
    q.put(asyncio.run(simulate(url, agents, first, interval, stop_at, known)))


def cpu_pct(director: str, seconds: float) -> float:
    cpu0, t0 = main_process_cpu(director), time.monotonic()
    time.sleep(seconds)
    return 100 * (main_process_cpu(director) - cpu0) / (time.monotonic() - t0)


def watch_summarised(lab: BenchLab, t0: float, t1: float) -> tuple[int, int]:
    """Heartbeats the watch's summaries counted between t0 and t1 (by the summaries' times), and the number of
    instances the last summary named."""
    req = urllib.request.Request(lab.api.rstrip("/") + "/watch?kind=heartbeats&history=10000&follow=0", headers={
        "Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()})
    with urllib.request.urlopen(req, timeout=120) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    counted = sum(int(e["heartbeats"]["count"]) for e in events if t0 <= float(e["ts"]) <= t1)
    named = len(events[-1]["heartbeats"]["instances"]) if events else 0
    return counted, named


def fill_known(lab: BenchLab, agents: int) -> float:
    t = time.monotonic()
    lab.compose("exec", "-T", "director", "/opt/bosh-lab/venv/bin/python", "-c", FILL, str(agents), str(NAMESPACE),
                DEPLOYMENT, timeout=600)
    return time.monotonic() - t


def run_fleet(lab: BenchLab, director: str, url: str, agents: int, processes: int, interval: float, seconds: float,
              known: bool) -> dict[str, Any]:
    heard0 = lab.request("GET", "/info")["health"]["heartbeats_received"]
    warmup = interval + 2
    stop_at = time.time() + warmup + seconds + 1
    q: Any = multiprocessing.Queue()
    per = agents // processes
    procs = [multiprocessing.Process(target=worker, args=(url, per + (1 if k < agents % processes else 0),
                                                          k * per + min(k, agents % processes), interval, stop_at,
                                                          known, q), daemon=True)
             for k in range(processes)]
    for pr in procs:
        pr.start()
    try:
        print(f"bench: {agents} {'known' if known else 'unknown'} agents, every {interval:g}s: warm-up {warmup:g}s, "
              f"then {seconds:g}s", file=sys.stderr)
        time.sleep(warmup)
        t0 = time.time()
        cpu = cpu_pct(director, seconds)
        t1 = time.time()
        sent = sum(int(q.get(timeout=warmup + seconds + 120)) for _ in procs)
    finally:
        for pr in procs:
            pr.join(30)
            if pr.is_alive():
                pr.kill()
    time.sleep(2)
    info = lab.request("GET", "/info")["health"]
    summarised, named = watch_summarised(lab, t0, t1)
    return {"director_cpu_pct": round(cpu, 2), "heartbeats_per_s": round(agents / interval, 1),
            "heartbeats_sent": sent, "heartbeats_received_by_director": info["heartbeats_received"] - heard0,
            "agents_known_to_health_monitor": info["agents_heard"],
            "heartbeats_summarised_by_watch_in_window": summarised,
            "heartbeats_expected_in_window": round(agents / interval * (t1 - t0)),
            "instances_in_last_watch_summary": named}


def measure(quick: bool, agents: int | None = None, processes: int = 4, interval: float = 30.0,
            seconds: float | None = None, modes: tuple[str, ...] = ("known", "unknown"), keep: bool = False,
            project: str = "bench-fleet-hb", raw: dict[str, Any] | None = None) -> list[Figure]:
    agents = agents or (2000 if quick else 10000)
    seconds = seconds or (20.0 if quick else 60.0)
    if quick:
        modes = modes[:1]
    lab = BenchLab(project)
    results: dict[str, Any] = raw if raw is not None else {}
    results.update({"agents": agents, "processes": processes, "interval_s": interval, "window_s": seconds})
    figures: list[Figure] = []
    try:
        print(f"bench: lab {project} up", file=sys.stderr)
        lab.up()
        director = lab.container("director")
        url = lab.nats_url()
        time.sleep(5)
        idle = cpu_pct(director, seconds)
        results["director_cpu_pct_idle_no_agents"] = round(idle, 2)
        for mode in modes:
            known = mode == "known"
            if known:
                results["fill_s"] = round(fill_known(lab, agents), 1)
            r = run_fleet(lab, director, url, agents, processes, interval, seconds, known)
            results[mode] = r
            over = r["director_cpu_pct"] - idle
            verdict = "met" if over <= GOAL_PCT else "MISSED"
            who = "the director's instances" if known else "unknown to the director"
            figures.append(figure(
                f"heartbeats: {agents:,} agents ({who}) every {interval:g} s, director CPU", "% core",
                r["director_cpu_pct"], idle, "the same director idle, no agents", None,
                note=f"cost over idle {over:.2f} % of one core (goal ≤ {GOAL_PCT:g} %: {verdict}); "
                     f"{r['heartbeats_per_s']:g} heartbeats/s; health monitor heard "
                     f"{r['heartbeats_received_by_director']}/{r['heartbeats_sent']} sent"))
            figures.append(figure(
                f"watch: heartbeats summarised in the window ({agents:,} {mode} agents)", "heartbeats",
                r["heartbeats_summarised_by_watch_in_window"], r["heartbeats_expected_in_window"],
                "heartbeats sent in the window (agents / interval × window)", None, better="higher",
                note=f"the last summary named {r['instances_in_last_watch_summary']} instances"))
    finally:
        if not keep:
            print("bench: lab down", file=sys.stderr)
            lab.down()
        lab.close()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", default="bench-fleet-hb")
    p.add_argument("--agents", type=int, default=None, help="default 10000 (quick: 2000)")
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--interval", type=float, default=30.0, help="heartbeat interval, seconds")
    p.add_argument("--seconds", type=float, default=None, help="measuring window (default 60, quick 20)")
    p.add_argument("--modes", default="known,unknown", help="fleets to measure: known, unknown (comma-separated)")
    p.add_argument("--quick", action="store_true", help="2,000 agents, 20 s, the known fleet only")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    a = p.parse_args()
    raw: dict[str, Any] = {}
    figures = measure(a.quick, a.agents, a.processes, a.interval, a.seconds,
                      tuple(m.strip() for m in a.modes.split(",") if m.strip()), a.keep, a.project, raw)
    print(json.dumps(raw, indent=1), file=sys.stderr)
    print(dumps(figures) if a.json else table(figures))


if __name__ == "__main__":
    main()
