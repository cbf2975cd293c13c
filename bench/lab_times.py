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
import urllib.request
from base64 import b64encode
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd: str, env: dict[str, str]) -> str:
    return subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout


def api_get(base: str, path: str) -> object:
    req = urllib.request.Request(base + path)
    req.add_header("Authorization", "Basic " + b64encode(b"admin:admin").decode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_running(base: str, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = api_get(base, "/deployments/redis-solo/instances")
            if rows and all(r["process_state"] == "running" for r in rows):  # type: ignore[union-attr]
                return
        except Exception:
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
            wait_running(base)
            results[run] = round(time.monotonic() - t, 1)
            if run.startswith("first"):
                t = time.monotonic()
                sh(sys.executable, "-m", "boshlab.cli", "-e", base, "deploy", "workshop/manifests/redis-solo-overrides.yml", env=env)
                results["override_redeploy_s"] = round(time.monotonic() - t, 1)
                cid = api_get(base, "/deployments/redis-solo/instances")[0]["vm_cid"]  # type: ignore[index]
                t = time.monotonic()
                sh("docker", "exec", cid, "/var/vcap/jobs/redis/bin/redis_ctl", "stop", env=env)
                sh("docker", "exec", cid, "/var/vcap/jobs/redis/bin/redis_ctl", "start", env=env)
                results["raw_restart_s"] = round(time.monotonic() - t, 1)
                results["redeploy_vs_raw_restart_ratio"] = round(results["override_redeploy_s"] / max(results["raw_restart_s"], 0.01), 1)
            sh("docker", "compose", "down", env=env)
    finally:
        subprocess.run(["docker", "compose", "down", "-v", "--remove-orphans"], cwd=ROOT, env=env, capture_output=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
