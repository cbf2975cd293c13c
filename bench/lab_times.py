"""Time from `docker compose up` (images already built) to redis/0 running, and of the override redeploy.

    python bench/lab_times.py [--project bosh-lab-bench]

Brings a lab of its own up and down (volumes removed). Both runs of `up` are reported: the first compiles
redis, the second (after `down` without -v) reuses the compiled package. The baseline for the redeploy is
a plain `docker exec VM redis_ctl stop && redis_ctl start` of the same job (the raw work a redeploy does)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.client import SyncDirectorClient  # noqa: E402


def sh(*cmd: str, env: dict[str, str]) -> str:
    return subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout


def wait_running(director: SyncDirectorClient, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = director.get_json("/deployments/redis-solo/instances")
            if rows and all(r["process_state"] == "running" for r in rows):
                return
        except Exception:  # noqa: BLE001 - the director may still be starting: try again until the deadline
            pass
        time.sleep(0.5)
    raise SystemExit("redis/0 did not reach running")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", default="bosh-lab-bench")
    a = p.parse_args()
    env = dict(os.environ, COMPOSE_PROJECT_NAME=a.project, BOSH_LAB_API_PUBLISH="127.0.0.1:",
               BOSH_LAB_NATS_PUBLISH="127.0.0.1:", BOSH_LAB_BLOBSTORE_PUBLISH="127.0.0.1:", BOSH_LAB_HEARTBEAT_INTERVAL="2")
    results: dict[str, float] = {}
    try:
        sh("docker", "compose", "build", env=env)
        for run in ("first_up_s (compiles redis)", "second_up_s (compiled package reused)"):
            t = time.monotonic()
            sh("docker", "compose", "up", "-d", "--wait", env=env)
            base = "http://127.0.0.1:" + sh("docker", "compose", "port", "director", "25555", env=env).strip().rsplit(":", 1)[1]
            with SyncDirectorClient(base, timeout=30) as director:
                wait_running(director)
                results[run] = round(time.monotonic() - t, 1)
                if run.startswith("first"):
                    t = time.monotonic()
                    sh(sys.executable, "-m", "cli", "-e", base, "deploy", "workshop/manifests/redis-solo-overrides.yml", env=env)
                    results["override_redeploy_s"] = round(time.monotonic() - t, 1)
                    cid = director.get_json("/deployments/redis-solo/instances")[0]["vm_cid"]
                    t = time.monotonic()
                    sh("docker", "exec", cid, "/var/vcap/jobs/redis/bin/redis_ctl", "stop", env=env)
                    sh("docker", "exec", cid, "/var/vcap/jobs/redis/bin/redis_ctl", "start", env=env)
                    results["raw_restart_s"] = round(time.monotonic() - t, 1)
                    ratio = results["override_redeploy_s"] / max(results["raw_restart_s"], 0.01)
                    results["redeploy_vs_raw_restart_ratio"] = round(ratio, 1)
            sh("docker", "compose", "down", env=env)
    finally:
        subprocess.run(["docker", "compose", "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, capture_output=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
