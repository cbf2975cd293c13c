"""migrate_disk against ``cp -a``, and fetch_logs against ``tar czf``, on a running lab.

    python bench/disk_logs.py [--project bosh-lab] [--api URL] [--mb 200] [--files 2000]

Against a lab that is up (``docker compose up``; ``--project`` is its compose project, the API port is asked
of compose unless ``--api`` is given). It uploads the light dummy release if needed, deploys ``bench-disks``
(one instance, ``persistent_disk: 100``), fills the disk with ``--mb`` MB in ``--files`` files, resizes the
disk (100 -> 200: ``migrate_disk``), then runs ``cp -a`` of the same data on the same kind of filesystem (the
new disk) as the baseline. Then it writes ``--mb`` MB of text logs under ``/var/vcap/sys/log/bench`` and
times a ``fetch_logs`` task (the agent tars, gzips and uploads; the director's task waits) against
``tar czf`` of the same directory in the VM. The deployment (and its disk) is deleted at the end. Prints
JSON: seconds and ``ratio`` (lab / baseline) for both.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab

STAMP = re.compile(r"^D, \[(\S+) #")


def manifest(disk: int) -> str:
    return f"""name: bench-disks
releases: [{{name: dummy, version: latest}}]
update: {{canaries: 1, max_in_flight: 1, canary_watch_time: 500-30000, update_watch_time: 500-30000}}
networks: [{{name: default, type: dynamic}}]
instance_groups:
- name: app
  instances: 1
  persistent_disk: {disk}
  jobs: [{{name: dummy, release: dummy}}]
"""


def vm_sh(cid: str, script: str) -> float:
    """Run a shell script in the VM; its wall time, measured inside (no docker exec overhead)."""
    p = subprocess.run(["docker", "exec", cid, "bash", "-c", f"s=$(date +%s%N); {script}; e=$(date +%s%N); "
                        "echo $(( (e - s) / 1000 ))"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"in VM {cid[:12]}: {script}: {p.stderr}")
    return int(p.stdout.strip().splitlines()[-1]) / 1e6


def debug_between(lab: BenchLab, task_id: int, start: str, end: str) -> float:
    """Seconds between the first debug line containing ``start`` and the last containing ``end``."""
    text = lab.task_output(task_id, "debug")
    first = last = None
    for line in text.splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp()
        if first is None and start in line:
            first = t
        if end in line:
            last = t
    if first is None or last is None:
        raise SystemExit(f"task {task_id}: no '{start}' / '{end}' in the debug log")
    return last - first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "bosh-lab"))
    ap.add_argument("--api", default=None, help="director URL (default: asked of docker compose)")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    lab = BenchLab(args.project)
    lab.api = args.api or "http://127.0.0.1:" + lab.port("director", 25555)
    if not any(r["name"] == "dummy" for r in lab.request("GET", "/releases")):
        lab.upload_dummy()
    out: dict[str, Any] = {"mb": args.mb, "files": args.files}
    try:
        lab.deploy(manifest(100))
        cid = lab.request("GET", "/deployments/bench-disks/instances")[0]["vm_cid"]
        per = max(1, args.mb * 1024 // args.files)   # KB per file
        vm_sh(cid, f"mkdir -p /var/vcap/store/data && cd /var/vcap/store/data && for i in $(seq {args.files}); do "
                   f"head -c {per}K /dev/urandom > f$i; done; sync")
        task = lab.deploy(manifest(200))
        cid = lab.request("GET", "/deployments/bench-disks/instances")[0]["vm_cid"]
        migrate = debug_between(lab, int(task["id"]), ": migrate_disk ", ": unmount_disk ")
        vm_sh(cid, "sync")
        cp = vm_sh(cid, "cp -a /var/vcap/store/data /var/vcap/store/data-copy")   # no sync: migrate_disk does none
        vm_sh(cid, "rm -rf /var/vcap/store/data-copy")
        out["migrate_disk_s"], out["cp_a_s"] = round(migrate, 2), round(cp, 2)
        out["migrate_ratio"] = round(migrate / cp, 2)

        vm_sh(cid, f"mkdir -p /var/vcap/sys/log/bench && cd /var/vcap/sys/log/bench && for i in $(seq 20); do "
                   f"base64 -w 120 /dev/urandom | head -c {args.mb * 1024 // 20}K > app$i.log; done; sync")
        t0 = time.monotonic()
        t = lab.task_ok(lab.request("POST", "/deployments/bench-disks/instances/app/0/logs?type=job"))
        wall = time.monotonic() - t0
        fetch = debug_between(lab, int(t["id"]), '"method": "fetch_logs"', "RECEIVED")
        tar = vm_sh(cid, "tar czf /tmp/bench-logs.tgz -C /var/vcap/sys/log .")
        vm_sh(cid, "rm -f /tmp/bench-logs.tgz")
        out["fetch_logs_s"], out["fetch_logs_task_wall_s"], out["tar_czf_s"] = round(fetch, 2), round(wall, 2), round(tar, 2)
        out["fetch_logs_ratio"] = round(fetch / tar, 2)
        out["note"] = ("migrate_disk: from SENT migrate_disk to SENT unmount_disk (includes get_task polling); "
                       "fetch_logs: SENT fetch_logs to the last reply (includes the upload to the blobstore); "
                       "baselines timed inside the VM")
    finally:
        try:
            lab.delete_deployment("bench-disks")
        except Exception as e:  # noqa: BLE001 - report, the numbers above still count
            print(f"deleting bench-disks: {e}", file=sys.stderr)
        lab.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
