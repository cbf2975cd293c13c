"""Compiles at the machine's speed: the agent's ``compile_package`` of the workshop's redis vs the raw
packaging script (``tar xzf`` of redis's source, ``make -j$(nproc)``, ``make install``) on the same source, in
the same image, in the same VM.

    python bench/compile.py [--rounds 2] [--json FILE]

The source blob is the one the workshop's start-up deploy compiled (its ``compile_package`` request, read from
the deploy task's debug log). The lab's time is ``compile_package`` sent through the director
(``POST .../agent_message``: the director's adaptive ``get_task`` polling included), from the request to the
answer: download, unpack, ``bash -x packaging``, tar+gzip, upload. The baseline runs the package's packaging
script by hand in a scratch directory of the same VM, timed inside the VM. Rounds alternate which goes first.

Full mode compiles on a VM of its own (a one-instance deployment of the tests' dummy release, deleted after).
``--quick`` (CI) compiles nothing more: it records the workshop deploy's own compile (from the debug log's
timestamps: compile_package sent → its result received), without a baseline: one run at another moment would
not be side by side (the machine's load changes), and two more compiles would take minutes.
Figure: ``compile_package redis`` (goal ≤ 1.05×)."""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._lab import BenchLab, dummy_manifest, on_workshop_lab, workshop_lab  # noqa: E402
from bench.figures import Figure, dumps, figure, table  # noqa: E402

DEPLOYMENT = "bench-compile"
SCRATCH = "/var/vcap/data/tmp/bench-compile"
LINE = re.compile(r"^D, \[(\S+) #\d+\] \[task:\d+\] DEBUG -- DirectorJobRunner: (SENT|RECEIVED): (\S+) (.*)$")

# Fetch and unpack the package's source (untimed), then time its packaging script, as the agent runs it
# (bash -x packaging in the compile dir, BOSH_COMPILE_TARGET / BOSH_INSTALL_TARGET set). argv: the blob's path.
RAW = r'''
set -euo pipefail
d=SCRATCH; rm -rf $d; mkdir -p $d/src $d/install
read -r creds endpoint < <(/var/vcap/bosh/venv/bin/python -c 'import json
o = json.load(open("/var/vcap/bosh/settings.json"))["blobstore"]["options"]
print(o["user"] + ":" + o["password"], o["endpoint"])')
curl -sS --fail -u "$creds" -o $d/source.tgz "$endpoint$1"
tar xzf $d/source.tgz -C $d/src
cd $d/src
t0=$(date +%s%N)
BOSH_COMPILE_TARGET=$d/src BOSH_INSTALL_TARGET=$d/install BOSH_PACKAGE_NAME=redis BOSH_PACKAGE_VERSION=bench \
  bash -x packaging >$d/stdout.log 2>$d/stderr.log || { tail -20 $d/stderr.log >&2; exit 1; }
t1=$(date +%s%N)
cd /; rm -rf $d
echo $(( (t1 - t0) / 1000 ))
'''.replace("SCRATCH", SCRATCH)


def stamp(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def workshop_compile(lab: BenchLab) -> tuple[list[Any], float]:
    """The workshop deploy's compile_package arguments, and how long it took as the director saw it."""
    for task in lab.request("GET", "/tasks?limit=200"):
        debug = lab.task_output(int(task["id"]), "debug")
        sent_at = None
        args: list[Any] = []
        for line in debug.splitlines():
            m = LINE.match(line)
            if not m:
                continue
            kind, payload = m.group(2), m.group(4)
            if kind == "SENT" and '"compile_package"' in payload:
                msg = json.loads(payload)
                if msg.get("method") == "compile_package" and msg["arguments"][2] == "redis":
                    sent_at, args = stamp(m.group(1)), msg["arguments"]
            elif kind == "RECEIVED" and sent_at is not None and '"blobstore_id"' in payload:
                return args, stamp(m.group(1)) - sent_at
    raise SystemExit("no compile_package of redis in the director's tasks (was the workshop deployed?)")


def raw_make(lab: BenchLab, cid: str, args: list[Any]) -> float:
    from boshlab.dav import blob_path
    out = lab.vm_exec(cid, f"cat > /tmp/bench-raw-make.sh && bash /tmp/bench-raw-make.sh {blob_path(str(args[0]))}",
                      timeout=1800,
                      stdin=RAW)
    return int(out.strip().splitlines()[-1]) / 1e6


def agent_compile(lab: BenchLab, args: list[Any]) -> float:
    t = time.perf_counter()
    r = lab.director.fetch("POST", f"/deployments/{DEPLOYMENT}/instances/app/0/agent_message",
                           json={"method": "compile_package", "arguments": args}, timeout=1800).json()
    seconds = time.perf_counter() - t
    if "value" not in r:
        raise SystemExit(f"compile_package failed: {r}")
    return seconds


def measure_lab(lab: BenchLab, rounds: int, quick: bool) -> list[Figure]:
    args, workshop_s = workshop_compile(lab)
    if quick:   # no compile of its own: a raw make at another moment than the lab's would not be side by side
        return [figure("compile_package redis", "s", workshop_s, 0.0, "bash packaging (make -j) in the VM", 1.05,
                       note="quick: the workshop deploy's compile, recorded only (the full mode has the ratio)")]
    lab.upload_dummy()
    lab.deploy(dummy_manifest(DEPLOYMENT, 1, 1))
    try:
        cid = str(lab.instances(DEPLOYMENT)[0]["vm_cid"])
        lab_times: list[float] = []
        raw_times: list[float] = []
        for i in range(rounds):
            if i % 2 == 0:
                lab_times.append(agent_compile(lab, args))
                raw_times.append(raw_make(lab, cid, args))
            else:
                raw_times.append(raw_make(lab, cid, args))
                lab_times.append(agent_compile(lab, args))
    finally:
        lab.delete_deployment(DEPLOYMENT)
    lab_s, raw_s = statistics.median(lab_times), statistics.median(raw_times)
    return [figure("compile_package redis", "s", lab_s, raw_s, "bash packaging (make -j) in the VM", 1.05,
                   note=f"median of {rounds}; lab {', '.join(f'{x:.1f}' for x in lab_times)}; raw "
                        f"{', '.join(f'{x:.1f}' for x in raw_times)}; the workshop's compile: {workshop_s:.1f} s")]


def measure(quick: bool) -> list[Figure]:
    with workshop_lab() as lab:
        return measure_lab(lab, 2, quick)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="the workshop's compile beside one baseline run")
    p.add_argument("--project", help="a running lab's compose project (default: a lab of its own)")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    figures: list[Figure] = on_workshop_lab(a.project, lambda lab: measure_lab(lab, a.rounds, a.quick))
    print(table(figures))
    if a.json:
        Path(a.json).write_text(dumps(figures))


if __name__ == "__main__":
    main()
