"""Deploy N instances of a light job (the dummy test release) with max_in_flight M, on one machine.

    python bench/deploy_scale.py [--instances 50] [--max-in-flight 10] [--project bosh-lab-bench-scale] [--keep]

Brings a lab of its own up (images built, workshop off) and down (`docker compose down -v`, which also
measures the reaper deleting N VMs). Reports, as JSON:

* wall time of the N-instance deploy, against the baseline of N x a single-instance deploy measured the same
  way (``parallel_speedup`` = N x single / N-instance: what parallel VM creation and max_in_flight buy);
* the time per stage (creating VMs, updating instances) from the task's event log;
* peak and current memory per agent VM (cgroup; peak includes page cache);
* the director's CPU (its main process, from /proc: Docker's healthchecks excluded) during the deploy, and
  idle with N agents heartbeating.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, container_memory, dummy_manifest, main_process_cpu


def stage_span(lab: BenchLab, task_id: int, stage: str) -> float:
    evs = [json.loads(line) for line in lab.task_output(task_id, "event").splitlines() if line.strip()]
    times = [e["time"] for e in evs if e["stage"] == stage]
    return float(max(times) - min(times)) if times else 0.0


def timed_deploy(lab: BenchLab, director: str, text: str) -> tuple[float, float, dict[str, Any]]:
    cpu0, t0 = main_process_cpu(director), time.monotonic()
    task = lab.deploy(text)
    return time.monotonic() - t0, main_process_cpu(director) - cpu0, task


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", default="bosh-lab-bench-scale")
    p.add_argument("--instances", type=int, default=50)
    p.add_argument("--max-in-flight", type=int, default=10)
    p.add_argument("--heartbeat-interval", default="30")
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    a = p.parse_args()
    n = a.instances
    lab = BenchLab(a.project, BOSH_LAB_HEARTBEAT_INTERVAL=a.heartbeat_interval)
    out: dict[str, Any] = {"instances": n, "max_in_flight": a.max_in_flight, "heartbeat_interval_s": float(a.heartbeat_interval),
                           "cpus": len(__import__("os").sched_getaffinity(0))}
    try:
        print("bench: lab up", file=sys.stderr)
        lab.up()
        director = lab.container("director")
        lab.upload_dummy()
        print("bench: warm-up deploy (compiles the dummy package)", file=sys.stderr)
        lab.deploy(dummy_manifest("warmup", 1, 1))
        lab.delete_deployment("warmup")
        singles = []
        for i in range(3):
            wall, cpu, _ = timed_deploy(lab, director, dummy_manifest(f"single-{i}", 1, 1))
            singles.append((wall, cpu))
            lab.delete_deployment(f"single-{i}")
        single_wall = statistics.median(w for w, _ in singles)
        single_cpu = statistics.median(c for _, c in singles)
        print(f"bench: single-instance deploy {single_wall:.1f}s; now {n} instances, max_in_flight {a.max_in_flight}",
              file=sys.stderr)
        wall, cpu, task = timed_deploy(lab, director, dummy_manifest("scale", n, a.max_in_flight))
        rows = lab.request("GET", "/deployments/scale/instances")
        assert len(rows) == n and all(r["vm_cid"] for r in rows), "not every instance has a VM"
        mems = [container_memory(r["vm_cid"]) for r in rows]
        peaks = [m["peak_mib"] for m in mems]
        currents = [m["current_mib"] for m in mems]
        out.update({
            "single_instance_deploy_s": round(single_wall, 1),
            "n_instance_deploy_s": round(wall, 1),
            "baseline_n_x_single_s": round(n * single_wall, 1),
            "n_deploy_vs_n_x_single_ratio": round(wall / (n * single_wall), 3),
            "parallel_speedup": round(n * single_wall / wall, 1),
            "stage_creating_vms_s": stage_span(lab, task["id"], "Creating missing vms"),
            "stage_updating_instances_s": stage_span(lab, task["id"], "Updating instance"),
            "vm_memory_peak_mib_median": round(statistics.median(peaks), 1),
            "vm_memory_peak_mib_max": round(max(peaks), 1),
            "vm_memory_current_mib_median": round(statistics.median(currents), 1),
            "director_cpu_s_single_deploy": round(single_cpu, 2),
            "director_cpu_s_n_deploy": round(cpu, 2),
            "director_cpu_s_per_instance": round(cpu / n, 3),
            "director_cpu_pct_of_one_core_during_n_deploy": round(100 * cpu / wall, 1),
        })
        time.sleep(5)
        cpu0 = main_process_cpu(director)
        time.sleep(a.idle_seconds)
        out[f"director_cpu_pct_idle_with_{n}_agents"] = round(100 * (main_process_cpu(director) - cpu0) / a.idle_seconds, 2)
        states = [r["process_state"] for r in lab.request("GET", "/deployments/scale/instances")]
        out["running_after_idle"] = states.count("running")
    finally:
        if not a.keep:
            print(f"bench: lab down (the reaper deletes the {n} VMs)", file=sys.stderr)
            out["compose_down_with_vms_s"] = round(lab.down(), 1)
            left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.bosh-lab.lab={a.project}"],
                                  capture_output=True, text=True).stdout.split()
            out["containers_left_after_down"] = len(left)
        lab.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
