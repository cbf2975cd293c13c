"""Deploy N instances of a light job (the dummy test release) with max_in_flight M, on one machine.

    python bench/deploy_scale.py [--quick] [--json] [--instances 50] [--max-in-flight 10] [--curve [1,10,50,100]]
                                 [--project bench-vm-scale] [--keep]

Brings a lab of its own up (compose project ``bench-vm-scale``, images ``bench-vm/*``, workshop off) and
always down (``docker compose down -v``, which also measures the reaper deleting N VMs). Figures:

* ``N instances, max_in_flight M`` (issue 12: 50 and 10, ``--quick``: 10): wall time of the N-instance
  deploy against its baseline, N × a one-instance deploy measured the same way in the same run (singles are
  deployed before and after it, so a machine that gets busier or quieter shifts both);
* with ``--curve``, the per-instance cost of a deploy for 1, 10, 50 and 100 instances (wall seconds and
  director CPU seconds per instance), each on a fresh deployment; a flat curve is the goal.

Also reported on stderr: the time per stage (creating VMs, updating instances), memory per agent VM
(cgroup), the director's CPU during the deploy and idle with N agents heartbeating.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, container_memory, dummy_manifest, main_process_cpu
from bench.figures import Figure, dumps, figure, table

PROJECT = "bench-vm-scale"
IMAGE_PREFIX = "bench-vm"
CURVE = (1, 10, 50, 100)


def say(msg: str) -> None:
    print(f"bench deploy_scale: {msg}", file=sys.stderr, flush=True)


def stage_span(lab: BenchLab, task_id: int, stage: str) -> float:
    evs = [json.loads(line) for line in lab.task_output(task_id, "event").splitlines() if line.strip()]
    times = [e["time"] for e in evs if e["stage"] == stage]
    return float(max(times) - min(times)) if times else 0.0


def timed_deploy(lab: BenchLab, director: str, text: str) -> tuple[float, float, dict[str, Any]]:
    cpu0, t0 = main_process_cpu(director), time.monotonic()
    task = lab.deploy(text)
    return time.monotonic() - t0, main_process_cpu(director) - cpu0, task


def singles(lab: BenchLab, director: str, tag: str, count: int) -> list[tuple[float, float]]:
    out = []
    for i in range(count):
        name = f"single-{tag}-{i}"
        wall, cpu, _ = timed_deploy(lab, director, dummy_manifest(name, 1, 1))
        out.append((wall, cpu))
        lab.delete_deployment(name)
    return out


def new_lab(project: str, heartbeat_interval: str = "30") -> BenchLab:
    return BenchLab(project, BOSH_LAB_IMAGE_PREFIX=os.environ.get("BOSH_LAB_IMAGE_PREFIX", IMAGE_PREFIX),
                    BOSH_LAB_HEARTBEAT_INTERVAL=heartbeat_interval)


def prepare(lab: BenchLab) -> str:
    say(f"lab {lab.project} up")
    lab.up()
    lab.upload_dummy()
    say("warm-up deploy (compiles the dummy package)")
    lab.deploy(dummy_manifest("warmup", 1, 1))
    lab.delete_deployment("warmup")
    return lab.container("director")


def scale_run(lab: BenchLab, director: str, n: int, max_in_flight: int, single_rounds: int,
              idle_seconds: float, out: dict[str, Any]) -> Figure:
    """Singles, the N-instance deploy, singles again; the figure, and details into ``out``."""
    before = singles(lab, director, "a", single_rounds)
    say(f"single-instance deploys {', '.join(f'{w:.1f}' for w, _ in before)} s; now {n} instances, "
        f"max_in_flight {max_in_flight}")
    wall, cpu, task = timed_deploy(lab, director, dummy_manifest("scale", n, max_in_flight))
    rows = lab.request("GET", "/deployments/scale/instances")
    if len(rows) != n or not all(r["vm_cid"] for r in rows):
        raise SystemExit("not every instance has a VM")
    mems = [container_memory(r["vm_cid"]) for r in rows]
    out.update({
        "n_instance_deploy_s": round(wall, 2),
        "stage_creating_vms_s": stage_span(lab, task["id"], "Creating missing vms"),
        "stage_updating_instances_s": stage_span(lab, task["id"], "Updating instance"),
        "vm_memory_current_mib_median": round(statistics.median(m["current_mib"] for m in mems), 1),
        "vm_memory_peak_mib_median": round(statistics.median(m["peak_mib"] for m in mems), 1),
        "director_cpu_s_n_deploy": round(cpu, 2),
        "director_cpu_s_per_instance": round(cpu / n, 3),
    })
    if idle_seconds > 0:
        time.sleep(2)
        cpu0 = main_process_cpu(director)
        time.sleep(idle_seconds)
        out[f"director_cpu_pct_idle_with_{n}_agents"] = round(100 * (main_process_cpu(director) - cpu0) / idle_seconds, 2)
    lab.delete_deployment("scale")
    after = singles(lab, director, "b", single_rounds)
    both = before + after
    single_wall = statistics.median(w for w, _ in both)
    out.update({"single_instance_deploys_s": [round(w, 2) for w, _ in both],
                "single_instance_deploy_s": round(single_wall, 2),
                "director_cpu_s_single_deploy": round(statistics.median(c for _, c in both), 2)})
    say(f"{n} instances: {wall:.1f} s; single-instance deploys after it "
        f"{', '.join(f'{w:.1f}' for w, _ in after)} s")
    return figure(f"{n} instances, max_in_flight {max_in_flight}", "s", wall, n * single_wall,
                  f"{n} × a one-instance deploy", 0.15,
                  note=f"single-instance deploy {single_wall:.2f} s (median of {len(both)}, before and after); "
                       f"creating VMs {out['stage_creating_vms_s']:.0f} s, updating {out['stage_updating_instances_s']:.0f} s")


def curve(lab: BenchLab, director: str, sizes: tuple[int, ...], max_in_flight: int) -> list[dict[str, Any]]:
    """The cost per instance of a deploy of each size (a fresh deployment each time, deleted after)."""
    points = []
    for n in sizes:
        name = f"curve-{n}"
        wall, cpu, task = timed_deploy(lab, director, dummy_manifest(name, n, max_in_flight))
        point = {"instances": n, "deploy_s": round(wall, 2), "s_per_instance": round(wall / n, 3),
                 "director_cpu_s_per_instance": round(cpu / n, 3),
                 "creating_vms_s": stage_span(lab, task["id"], "Creating missing vms"),
                 "updating_s": stage_span(lab, task["id"], "Updating instance")}
        say(f"curve: {json.dumps(point)}")
        points.append(point)
        t = time.monotonic()
        lab.delete_deployment(name)
        point["delete_s"] = round(time.monotonic() - t, 1)
    return points


def measure(quick: bool, instances: int | None = None, max_in_flight: int = 10, project: str = PROJECT,
            idle_seconds: float = 0.0, details: dict[str, Any] | None = None) -> list[Figure]:
    """``python -m bench``: the N-instance figure (N = 50, quick: 10) beside N × single in one run."""
    n = instances or (10 if quick else 50)
    out = details if details is not None else {}
    out.update({"instances": n, "max_in_flight": max_in_flight, "cpus": len(os.sched_getaffinity(0))})
    lab = new_lab(project)
    try:
        director = prepare(lab)
        return [scale_run(lab, director, n, max_in_flight, 2 if quick else 3, idle_seconds, out)]
    finally:
        say(f"lab {project} down")
        out["compose_down_s"] = round(lab.down(), 1)
        lab.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", default=PROJECT)
    p.add_argument("--instances", type=int, default=None, help="default 50 (--quick: 10)")
    p.add_argument("--max-in-flight", type=int, default=10)
    p.add_argument("--idle-seconds", type=float, default=0, help="measure the director idle with N agents")
    p.add_argument("--curve", nargs="?", const=",".join(map(str, CURVE)), default=None,
                   help="also the per-instance cost for these sizes (default 1,10,50,100)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    a = p.parse_args()
    n = a.instances or (10 if a.quick else 50)
    details: dict[str, Any] = {"instances": n, "max_in_flight": a.max_in_flight, "cpus": len(os.sched_getaffinity(0))}
    lab = new_lab(a.project)
    figures: list[Figure] = []
    try:
        director = prepare(lab)
        figures.append(scale_run(lab, director, n, a.max_in_flight, 2 if a.quick else 3, a.idle_seconds, details))
        if a.curve:
            sizes = tuple(int(x) for x in a.curve.split(","))
            details["curve"] = curve(lab, director, sizes, a.max_in_flight)
    finally:
        if not a.keep:
            say(f"lab {a.project} down (the reaper deletes the VMs)")
            details["compose_down_s"] = round(lab.down(), 1)
            left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.bosh-lab.lab={a.project}"],
                                  capture_output=True, text=True, timeout=60).stdout.split()
            details["containers_left_after_down"] = len(left)
        lab.close()
    print(json.dumps(details, indent=1), file=sys.stderr)
    if "curve" in details:
        print("instances  deploy s  s/instance  director CPU s/instance  creating VMs s  updating s", file=sys.stderr)
        for pt in details["curve"]:
            print(f"{pt['instances']:>9}  {pt['deploy_s']:>8.1f}  {pt['s_per_instance']:>10.3f}  "
                  f"{pt['director_cpu_s_per_instance']:>23.3f}  {pt['creating_vms_s']:>14.0f}  {pt['updating_s']:>10.0f}",
                  file=sys.stderr)
    print(dumps(figures) if a.json else table(figures))


if __name__ == "__main__":
    main()
