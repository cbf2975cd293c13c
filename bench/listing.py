"""Instance listings for 1,000 instances: the director's CPU per request, beside a raw sqlite read of the same rows.

    python bench/listing.py [--instances 1000] [--deployments 10] [--seconds 2] [--quick] [--json]

No lab and no containers: the director's own API app (``director.api.make_apps`` over ``director.lab.Lab``'s
service layer, store and health monitor) is served by a child process against a temporary sqlite store. The
rows are written through the store's own API (``deployments.save``, ``instances.vm_created``, then
``instances.updated`` with a real-shaped apply spec of ~2 KiB, as a deploy leaves them); the health monitor
holds a real-shaped heartbeat (vitals) for every agent, as after one heartbeat interval. One deployment has
all ``--instances``; ``--deployments`` more share as many again (the listing of all deployments).

The director's CPU is the child's (user + system, every thread: sqlite's too, from /proc), over as many
requests as fit in ``--seconds``, divided by their number. The requests come from this process (urllib).
The baseline is measured here, in the same run: a raw sqlite ``SELECT`` of the listed columns of the same rows
(``json_extract`` for the apply spec's configuration hash) and ``json.dumps`` of them with the same vitals:
what any listing must do at the least. The goal is absolute (issue 12: under 100 ms of director CPU).

Listings are measured warm (the same listing again: what the director parsed is kept) and "first after a
deploy": every apply spec of the deployment rewritten in the store between two listings, so nothing kept
helps. ``?format=full`` (``instances --ps``: one ``get_state`` RPC per instance) is not measured: it needs
agents, and its cost is one agent round trip per instance by design, as BOSH's."""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.figures import Figure, dumps, figure, table  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_MS = 100.0
BIG = "big"
AUTH = "Basic " + base64.b64encode(b"admin:admin").decode()

VITALS = {"cpu": {"sys": "0.4", "user": "1.7", "wait": "0.0"},
          "disk": {"system": {"inode_percent": "11", "percent": "38"},
                   "ephemeral": {"inode_percent": "2", "percent": "5"}},
          "load": ["0.05", "0.10", "0.08"], "mem": {"kb": "40211", "percent": "2"},
          "swap": {"kb": "0", "percent": "0"}, "uptime": {"secs": 5021}}


def manifest(name: str, instances: int) -> str:
    return f"""name: {name}
releases: [{{name: dummy, version: "1"}}]
update: {{canaries: 1, max_in_flight: 10, canary_watch_time: 500-30000, update_watch_time: 500-30000}}
networks: [{{name: default, type: dynamic}}]
instance_groups:
- name: app
  instances: {instances}
  jobs: [{{name: dummy, release: dummy}}]
"""


def apply_spec(deployment: str, index: int, instance_id: str, ip: str) -> dict[str, Any]:
    """What a deploy stores (director/planner.py's spec): a job with templates, packages, networks, properties."""
    def blob(name: str) -> dict[str, str]:
        return {"name": name, "version": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex, "sha1": uuid.uuid4().hex + "abcd1234",
                "blobstore_id": str(uuid.uuid4())}
    return {
        "deployment": deployment, "index": index, "id": instance_id, "name": "app",
        "job": {"name": "app", "templates": [{**blob("dummy"), "name": "dummy"}, {**blob("syslog"), "name": "syslog"}],
                **blob("app")},
        "release": {"name": "dummy", "version": "1"},
        "networks": {"default": {"ip": ip, "netmask": "255.255.0.0", "gateway": "10.0.0.1", "default": ["dns", "gateway"],
                                 "dns": ["10.0.0.2"], "cloud_properties": {}}},
        "resource_pool": {"name": "default", "cloud_properties": {}, "stemcell": {"name": "bosh-lab", "version": "1"}},
        "packages": {n: blob(n) for n in ("ruby", "redis", "libyaml")},
        "persistent_disk": 0, "configuration_hash": uuid.uuid4().hex + "0123abcd",
        "properties": {"dummy": {"port": 8080 + index % 100, "message": "hello " * 20, "workers": 4,
                                 "limits": {"cpu": 2, "memory": "512M"}, "peers": [f"10.0.{i}.1" for i in range(8)]},
                       "syslog": {"address": "10.0.0.9", "port": 514, "transport": "udp"}},
        "template_hashes": {f"bin/ctl.{i}": uuid.uuid4().hex for i in range(4)},
    }


async def fill(data_dir: str, instances: int, deployments: int) -> dict[str, list[str]]:
    """The store, through its own API: deployment ``big`` with ``instances`` instances; ``deployments`` more
    sharing as many again; ``one`` with one. Returns the agent ids per deployment."""
    from director.store import NetworkAddress, Store
    store = Store(Path(data_dir) / "director.sqlite3")
    await store.open()
    agents: dict[str, list[str]] = {}
    plan = [(BIG, instances), ("one", 1)] + [(f"dep-{k:02d}", instances // deployments) for k in range(deployments)]
    n = 0
    try:
        for name, count in plan:
            await store.deployments.save(name, manifest(name, count), {"dummy": "1"})
            agents[name] = []
            for index in range(count):
                n += 1
                instance_id, agent_id = str(uuid.uuid4()), str(uuid.uuid4())
                ip = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
                await store.instances.vm_created(instance_id, name, "app", index, agent_id, f"vm-{uuid.uuid4().hex}",
                                                 f"lab-{name}-app-{index}-{agent_id[:8]}", ip,
                                                 {"default": NetworkAddress(ip, "10.0.0.0/8")}, "started")
                await store.instances.updated(instance_id, cast(Any, apply_spec(name, index, instance_id, ip)),
                                              "started")
                agents[name].append(agent_id)
    finally:
        await store.close()
    return agents


# --- the director, in a child process ----------------------------------------------------------------------


class _NoCPI:
    """The listing never reaches the CPI."""
    lab = "bench"
    live_disk_attach = False


def serve(data_dir: str, port: int, heartbeats: list[str], ready: Any) -> None:
    asyncio.run(_serve(data_dir, port, heartbeats, ready))


async def _serve(data_dir: str, port: int, heartbeats: list[str], ready: Any) -> None:
    import logging

    from aiohttp import web

    from director.api import make_apps
    from director.config import Config
    from director.cpi import CPI
    from director.health import Heartbeat
    from director.lab import Lab
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)     # as director/__main__.py
    cfg = Config(api_port=port, data_dir=data_dir, workshop=False, lab_name="bench")
    lab = Lab(cfg, cpi=cast(CPI, _NoCPI()))
    api, _ = make_apps(cfg, lab.operations, lab.process_uuid, lab.store.open, lab.store.close,
                       faults=lab.faults, watch_hub=lab.watch_hub)
    runner = web.AppRunner(api)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    now = time.time()
    for agent_id in heartbeats:          # one heartbeat from every agent, as the health monitor keeps it
        lab.health.heartbeats[agent_id] = Heartbeat(now, {
            "deployment": "x", "job": "app", "index": 0, "job_state": "running", "vitals": VITALS,
            "node_id": agent_id, "number_of_processes": 1})
    ready.put(os.getpid())
    try:
        await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def get(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": AUTH})
    with urllib.request.urlopen(req, timeout=60) as r:
        return cast(bytes, r.read())


def cpu_per_call(pid: int, call: Callable[[], object], seconds: float) -> tuple[float, int]:
    """The child's CPU per call, in ms (calls repeated until ``seconds`` passed, at least 5)."""
    call()
    call()                                  # warm: first-request imports, sqlite's page cache
    cpu0, t0, n = process_cpu(pid), time.monotonic(), 0
    while n < 5 or time.monotonic() - t0 < seconds:
        call()
        n += 1
    return 1000 * (process_cpu(pid) - cpu0) / n, n


def own_cpu_per_call(call: Callable[[], object], seconds: float) -> float:
    call()
    t0, c0, n = time.monotonic(), time.process_time(), 0
    while n < 5 or time.monotonic() - t0 < seconds:
        call()
        n += 1
    return 1000 * (time.process_time() - c0) / n


def raw_listing(db: sqlite3.Connection, deployments: list[str], vitals: bool) -> Callable[[], object]:
    """The baseline: the listed columns of the same rows and ``json.dumps``, with the same vitals."""
    def go() -> object:
        out = []
        for d in deployments:
            rows = db.execute(
                "SELECT id, group_name, idx, agent_id, vm_cid, vm_name, ip, networks, state, vm_created_at, "
                "json_extract(apply_spec, '$.configuration_hash') AS configuration_hash FROM instances "
                "WHERE deployment=? ORDER BY group_name, idx", (d,)).fetchall()
            items = [dict(r) for r in rows]
            if vitals:
                for item in items:
                    item["vitals"] = VITALS
            out.append(json.dumps(items))
        return out
    return go


def start_server(data_dir: str, heartbeats: list[str]) -> tuple[multiprocessing.Process, int, int]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ready: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(target=serve, args=(data_dir, port, heartbeats, ready), daemon=True)
    proc.start()
    pid = int(ready.get(timeout=60))
    deadline = time.monotonic() + 30
    while True:
        try:
            get(port, "/info")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return proc, pid, port


def stop_server(proc: multiprocessing.Process) -> None:
    proc.terminate()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def measure_server(port: int, pid: int, db: sqlite3.Connection, instances: int, others: list[str], vitals: bool,
                   seconds: float, results: dict[str, tuple[float, int]], raw: dict[str, float]) -> None:
    def listing(path: str) -> Callable[[], object]:
        return lambda: get(port, path)
    tag = "vitals" if vitals else "no heartbeats"
    body = json.loads(get(port, f"/deployments/{BIG}/instances"))
    assert len(body) == instances and (body[0]["vitals"] is not None) == vitals, body[:1]
    results[f"big {tag}"] = cpu_per_call(pid, listing(f"/deployments/{BIG}/instances"), seconds)
    raw[f"big {tag}"] = own_cpu_per_call(raw_listing(db, [BIG], vitals), seconds)
    if not vitals:
        return

    flip = [0]

    def after_a_deploy() -> None:
        # Every apply spec of the deployment rewritten (as a deploy does), then listed: nothing parsed before
        # helps. The rewrite is this process's work; only the listing is counted (the director's CPU).
        flip[0] += 1
        db.execute("UPDATE instances SET apply_spec=json_set(apply_spec, '$.persistent_disk', ?) WHERE deployment=?",
                   (flip[0], BIG))
        db.commit()
        get(port, f"/deployments/{BIG}/instances")
    results["big cold"] = cpu_per_call(pid, after_a_deploy, seconds)
    results["one"] = cpu_per_call(pid, listing("/deployments/one/instances"), seconds)
    raw["one"] = own_cpu_per_call(raw_listing(db, ["one"], vitals), seconds)
    results["vms"] = cpu_per_call(pid, listing(f"/deployments/{BIG}/vms"), seconds)

    names = [d["name"] for d in json.loads(get(port, "/deployments")) if d["name"] in others]
    assert len(names) == len(others), names

    def all_deployments() -> None:
        for name in names:
            get(port, f"/deployments/{name}/instances")
    results["all"] = cpu_per_call(pid, all_deployments, seconds)
    raw["all"] = own_cpu_per_call(raw_listing(db, others, vitals), seconds)
    results["deployments"] = cpu_per_call(pid, listing("/deployments"), seconds)


def measure(quick: bool, instances: int = 1000, deployments: int = 10, seconds: float | None = None) -> list[Figure]:
    seconds = seconds if seconds is not None else (0.7 if quick else 2.0)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        agents = asyncio.run(fill(tmp, instances, deployments))
        every = [a for ids in agents.values() for a in ids]
        others = [d for d in agents if d.startswith("dep-")]
        db = sqlite3.connect(Path(tmp) / "director.sqlite3")
        db.row_factory = sqlite3.Row
        results: dict[str, tuple[float, int]] = {}
        raw: dict[str, float] = {}
        try:
            for vitals in (True, False):
                proc, pid, port = start_server(tmp, every if vitals else [])
                try:
                    measure_server(port, pid, db, instances, others, vitals, seconds, results, raw)
                finally:
                    stop_server(proc)
        finally:
            db.close()
    n = f"{instances:,}"
    raw_name = "sqlite SELECT of the listed columns + json.dumps"

    def fig(name: str, key: str, base: str | None = None) -> Figure:
        ms, calls = results[key]
        b = raw.get(base or key, 0.0)
        verdict = "met" if ms < GOAL_MS else "MISSED"
        return figure(name, "ms CPU", ms, b, raw_name, None,
                      note=f"goal: under {GOAL_MS:g} ms of director CPU per listing: {verdict}; {calls} requests")
    figures += [
        fig(f"instances listing, {n} instances, with vitals", "big vitals"),
        fig(f"instances listing, {n} instances, no heartbeats yet", "big no heartbeats"),
        fig(f"instances listing, {n} instances, first after a deploy (every apply spec new)", "big cold",
            "big vitals"),
        fig(f"instances of {deployments} deployments ({n} in all: one listing each)", "all"),
        fig(f"vms listing, {n} instances", "vms", "big vitals"),
        fig("instances listing, 1 instance", "one"),
        fig(f"deployments listing ({deployments + 2} deployments, {2 * instances + 1:,} instances)", "deployments",
            "-"),          # no raw equivalent: recorded only (each manifest parsed as YAML, instances counted)
    ]
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--deployments", type=int, default=10)
    p.add_argument("--seconds", type=float, default=None, help="measuring time per figure (default 2, quick 0.7)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    figures = measure(a.quick, a.instances, a.deployments, a.seconds)
    print(dumps(figures) if a.json else table(figures))


if __name__ == "__main__":
    main()
