"""How fast a VM is ready, and how small it is (issue 12: "VMs ready fast", "small VMs").

    python bench/vm_ready.py [--quick] [--json] [--rounds N] [--project bench-vm-ready] [--running]

Brings a lab of its own up (compose project ``bench-vm-ready``, images ``bench-vm/*``) and always down again
(``down -v``); ``--running`` measures an already running lab of that project instead and leaves it up.
Figures, each measured beside its raw baseline in the same run:

* ``create_vm → ping``: a one-instance deploy of the dummy release; the director's own span for the VM
  (its debug log: "Creating missing vms: <instance> (started)" to "agent ... answered ping": NATS user,
  ``create_vm``, settings into the registry, ``ping`` until the agent answers). Baseline: ``docker run -i`` of the same
  stemcell image (same init, capabilities and security options as the Docker CPI's VMs) until a trivial
  process (``cat``) answers a line. The two alternate, round after round, so a busy machine slows both.
* ``VM working set``: the cgroup's memory less inactive page cache (what ``docker stats`` shows) of an idle
  VM running the dummy job (agent, monit, runit, svlogd, sshd), against issue 12's budget of 30 MiB. The
  per-process breakdown (PSS, anonymous memory) goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._lab import BenchLab, container_memory, dummy_manifest
from bench.figures import Figure, dumps, figure, table

PROJECT = "bench-vm-ready"
IMAGE_PREFIX = "bench-vm"
BUDGET_MIB = 30.0
_STAMP = re.compile(r"\[(\d{4}-\d\d-\d\dT[\d:.]+) #\d+\]")


def say(msg: str) -> None:
    print(f"bench vm_ready: {msg}", file=sys.stderr, flush=True)


def docker_run_until_answer(image: str, name: str, timeout: float = 120.0) -> float:
    """Seconds from ``docker run`` until ``cat`` in the new container echoes a line back; the container is
    removed afterwards (not timed)."""
    args = ["docker", "run", "-i", "--rm", "--name", name, "--init", "--cap-add", "SYS_ADMIN",
            "--security-opt", "apparmor=unconfined", "--entrypoint", "/bin/cat", image]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"ready\n")
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        if not ready:
            raise SystemExit(f"docker run {image}: no answer within {timeout:g} s")
        line = p.stdout.readline()
        elapsed = time.monotonic() - t0
        if line.strip() != b"ready":
            raise SystemExit(f"docker run {image}: answered {line!r}")
        p.stdin.close()
        p.wait(timeout=60)
        return elapsed
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _stamp(line: str) -> float:
    m = _STAMP.search(line)
    if m is None:
        raise ValueError(line)
    return datetime.fromisoformat(m.group(1)).timestamp()


def create_to_ping(lab: BenchLab, task_id: int) -> tuple[float, float]:
    """For the one VM of a deploy, from the director's debug log: seconds from "Creating missing vms: X
    (started)" (its NATS user, then ``create_vm``) to "agent ... answered ping", and of that, the seconds
    until ``create_vm`` returned ("created VM")."""
    lines = lab.task_output(task_id, "debug").splitlines()
    started = [_stamp(ln) for ln in lines if "Creating missing vms:" in ln and ln.endswith("(started)")]
    created = [_stamp(ln) for ln in lines if "DirectorJobRunner: created VM " in ln]
    answered = [_stamp(ln) for ln in lines if re.search(r"DirectorJobRunner: agent \S+ on \S+ answered ping", ln)]
    if len(started) != 1 or len(created) != 1 or len(answered) != 1:
        raise SystemExit(f"task {task_id}: expected one VM created and pinged, the debug log shows "
                         f"{len(started)} started, {len(created)} created, {len(answered)} answered")
    return answered[0] - started[0], created[0] - started[0]


_PROCS = r"""for p in /proc/[0-9]*; do
  pid=${p#/proc/}; [ "$pid" = "$$" ] && continue
  comm=$(cat "$p/comm" 2>/dev/null) || continue
  pss=$(awk '/^Pss:/{print $2}' "$p/smaps_rollup" 2>/dev/null)
  anon=$(awk '/^Anonymous:/{print $2}' "$p/smaps_rollup" 2>/dev/null)
  [ -n "$pss" ] && echo "$pid $comm $pss $anon"
done"""


def process_breakdown(cid: str) -> list[tuple[str, int, int]]:
    """(command, PSS KiB, anonymous KiB) of every process in the VM (the reading shell left out)."""
    out = subprocess.run(["docker", "exec", cid, "sh", "-c", _PROCS], capture_output=True, text=True,
                         timeout=60).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] not in ("awk", "cat"):
            rows.append((parts[1], int(parts[2]), int(parts[3])))
    return rows


def summarise(rows: list[tuple[str, int, int]]) -> str:
    groups: dict[str, list[int]] = {}
    for comm, pss, anon in rows:
        g = groups.setdefault(comm, [0, 0, 0])
        g[0] += 1
        g[1] += pss
        g[2] += anon
    lines = [f"  {'process':<16} {'n':>2} {'PSS MiB':>8} {'anon MiB':>9}"]
    for comm, (n, pss, anon) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {comm:<16} {n:>2} {pss / 1024:>8.1f} {anon / 1024:>9.1f}")
    total_pss, total_anon = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines.append(f"  {'total':<16} {len(rows):>2} {total_pss / 1024:>8.1f} {total_anon / 1024:>9.1f}")
    return "\n".join(lines)


def measure(quick: bool, rounds: int | None = None, project: str = PROJECT, running: bool = False) -> list[Figure]:
    n = rounds or (3 if quick else 7)
    lab = BenchLab(project, BOSH_LAB_IMAGE_PREFIX=os.environ.get("BOSH_LAB_IMAGE_PREFIX", IMAGE_PREFIX))
    image = f"{lab.env['BOSH_LAB_IMAGE_PREFIX']}/stemcell:latest"
    try:
        if running:
            lab.api = "http://127.0.0.1:" + lab.port("director", 25555)
        else:
            say(f"lab {project} up")
            lab.up()
        deployments = {d["name"] for d in lab.request("GET", "/deployments")}
        if "vmready-idle" not in deployments:
            lab.upload_dummy()
            say("the idle VM (its deploy compiles the dummy package)")
            lab.deploy(dummy_manifest("vmready-idle", 1, 1))
        docker_run_until_answer(image, f"{project}-warmup")      # the image's layers in the page cache
        lab_s: list[float] = []
        create_s: list[float] = []
        base_s: list[float] = []
        for i in range(n):
            for which in (("base", "lab") if i % 2 == 0 else ("lab", "base")):
                if which == "base":
                    base_s.append(docker_run_until_answer(image, f"{project}-base-{i}"))
                else:
                    task = lab.deploy(dummy_manifest(f"vmready-{i}", 1, 1))
                    to_ping, to_created = create_to_ping(lab, int(task["id"]))
                    lab_s.append(to_ping)
                    create_s.append(to_created)
                    lab.delete_deployment(f"vmready-{i}")
            say(f"round {i + 1}/{n}: create_vm→ping {lab_s[-1]:.2f} s (create_vm returned after "
                f"{create_s[-1]:.2f} s), docker run→answer {base_s[-1]:.2f} s")
        rows = lab.request("GET", "/deployments/vmready-idle/instances")
        cid = str(rows[0]["vm_cid"])
        mem = container_memory(cid)
        breakdown = process_breakdown(cid)
        say(f"idle VM {cid[:12]}: working set {mem['current_mib']:.1f} MiB (cgroup, peak {mem['peak_mib']:.1f} MiB "
            f"with page cache); per process:\n{summarise(breakdown)}")
        agent = [r for r in breakdown if r[0] in ("python", "python3")]
        lab_m, base_m = statistics.median(lab_s), statistics.median(base_s)
        return [
            figure("create_vm → ping", "s", lab_m, base_m, "docker run of the stemcell image until cat answers", 2.0,
                   note=f"median of {n} alternated rounds; lab {min(lab_s):.2f}-{max(lab_s):.2f} s "
                        f"(create_vm itself {statistics.median(create_s):.2f} s), "
                        f"docker run {min(base_s):.2f}-{max(base_s):.2f} s"),
            figure("VM working set (idle, light job)", "MiB", mem["current_mib"], BUDGET_MIB,
                   "issue 12's budget per VM", 1.0,
                   note=f"cgroup usage less inactive page cache; agent PSS "
                        f"{sum(r[1] for r in agent) / 1024:.1f} MiB (anon {sum(r[2] for r in agent) / 1024:.1f}); "
                        f"all processes PSS {sum(r[1] for r in breakdown) / 1024:.1f} MiB"),
        ]
    finally:
        if not running:
            say(f"lab {project} down")
            lab.down()
        lab.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    p.add_argument("--json", action="store_true", help="the figures as JSON")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--project", default=PROJECT)
    p.add_argument("--running", action="store_true", help="use the running lab of --project; leave it up")
    a = p.parse_args()
    figures = measure(a.quick, a.rounds, a.project, a.running)
    print(dumps(figures) if a.json else table(figures))
    if not a.json:
        print(json.dumps([f.get("note", "") for f in figures], indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
