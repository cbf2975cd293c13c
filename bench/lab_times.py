"""The overrides redeploy of the workshop's redis-solo (drain → stop → apply → start → running), less the
manifest's ``canary_watch_time`` minimum (a wait the user asked for), beside a script in the same VM doing the
same raw work: ``monit stop redis``, write the new redis.conf, ``monit start redis``, wait until redis answers.

    python bench/lab_times.py [--rounds 6] [--json FILE]

Rounds alternate: a redeploy to the overrides manifest (port 7000) or back to redis-solo.yml (port 6379), then
the raw script switching the config the other way, so contention from the rest of the machine hits both. The
lab's time is the client's, from ``POST /deployments`` to the task ending (polled every 10 ms); the raw
script's is taken inside the VM (no ``docker exec`` in it). Where the lab's time goes is taken from the task's
debug log (its timestamps) and printed with ``--breakdown``. Figure: ``overrides redeploy`` (goal ≤ 2×)."""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._lab import BenchLab, on_workshop_lab, workshop_lab  # noqa: E402
from bench.figures import Figure, dumps, figure, table  # noqa: E402

MANIFESTS = {"overrides": ROOT / "workshop/manifests/redis-solo-overrides.yml",
             "default": ROOT / "workshop/manifests/redis-solo.yml"}
CONFIG = "/var/vcap/jobs/redis/config/redis.conf"

# The raw work, timed inside the VM: stop through monit (BOSH's /var/vcap/bosh/bin/monit), write the new config,
# start through monit, wait until redis answers PONG with the new port and password. $1: port, $2: password;
# the new config on stdin.
RAW = r'''
set -euo pipefail
new=$(cat)
cli=/var/vcap/packages/redis/bin/redis-cli
t0=$(date +%s%N)
/var/vcap/bosh/bin/monit stop redis
for _ in $(seq 1 3000); do pgrep -x redis-server >/dev/null || break; sleep 0.01; done
printf '%s\n' "$new" > CONFIG
/var/vcap/bosh/bin/monit start redis
ok=
for _ in $(seq 1 3000); do
  if [ "$(REDISCLI_AUTH="$2" $cli -p "$1" ping 2>/dev/null)" = PONG ]; then ok=1; break; fi
  sleep 0.01
done
t1=$(date +%s%N)
[ -n "$ok" ] || { echo "redis did not answer on port $1" >&2; exit 1; }
echo $(( (t1 - t0) / 1000 ))
'''.replace("CONFIG", CONFIG)


def watch_min_s(manifest: str) -> float:
    """The manifest's canary_watch_time minimum, in seconds."""
    raw = str(yaml.safe_load(manifest).get("update", {}).get("canary_watch_time", "1000-30000"))
    return int(raw.split("-")[0].strip()) / 1000


def props(manifest: str) -> tuple[int, str]:
    redis = yaml.safe_load(manifest)["properties"]["redis"]
    return int(redis["port"]), str(redis["password"])


def redeploy(lab: BenchLab, manifest: str) -> tuple[float, int]:
    """Seconds from POST to the task's end, and the task id."""
    t = time.perf_counter()
    task = lab.request("POST", "/deployments", manifest.encode(), "text/yaml")
    done = lab.task_ok(task, interval=0.01)
    return time.perf_counter() - t, int(done["id"])


def raw(lab: BenchLab, cid: str, config: str, port: int, password: str) -> float:
    out = lab.vm_exec(cid, RAW, timeout=120, stdin=config, args=(str(port), password)).strip()
    return int(out.splitlines()[-1]) / 1e6


STAMP = re.compile(r"^D, \[(\S+) #\d+\] \[task:\d+\] DEBUG -- DirectorJobRunner: (.*)$")


def breakdown(lab: BenchLab, task_id: int) -> list[tuple[float, str]]:
    """The task's debug log as (seconds since its first line, line): where the time went."""
    out: list[tuple[float, str]] = []
    first = None
    for line in lab.task_output(task_id, "debug").splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp()
        first = t if first is None else first
        out.append((t - first, m.group(2)[:160]))
    return out


def measure_lab(lab: BenchLab, rounds: int, show: bool = False) -> list[Figure]:
    texts = {k: p.read_text() for k, p in MANIFESTS.items()}
    rows = lab.instances("redis-solo")
    cid = str(rows[0]["vm_cid"])
    redeploy(lab, texts["default"])     # untimed: the director's state and the VM's config are both "default"
    deployed = "default"
    lab_times: list[float] = []
    raw_times: list[float] = []
    watch = watch_min_s(texts["overrides"])
    last_task = 0
    for _ in range(rounds):
        target = "default" if deployed == "overrides" else "overrides"
        seconds, last_task = redeploy(lab, texts[target])
        lab_times.append(seconds - watch)
        deployed = target
        # The raw script switches the VM's config the other way: what the next redeploy deploys.
        following = "default" if target == "overrides" else "overrides"
        config = lab.vm_exec(cid, f"cat {CONFIG}", timeout=30)
        port, password = props(texts[target])
        new_port, new_password = props(texts[following])
        config = config.replace(f"port {port}\n", f"port {new_port}\n").replace(
            f"requirepass {password}\n", f"requirepass {new_password}\n")
        if f"port {new_port}\n" not in config:
            raise SystemExit(f"cannot find 'port {port}' in the VM's {CONFIG}")
        raw_times.append(raw(lab, cid, config, new_port, new_password))
    if show:
        for t, line in breakdown(lab, last_task):
            print(f"  {t:7.3f}  {line}", file=sys.stderr)
    lab_s, raw_s = statistics.median(lab_times), statistics.median(raw_times)
    return [figure("overrides redeploy", "s", lab_s, raw_s, "monit stop, new config, monit start, redis answers",
                   2.0, note=f"median of {rounds}; redeploy less canary_watch_time min {watch:g} s; "
                             f"lab {', '.join(f'{x:.2f}' for x in lab_times)}; "
                             f"raw {', '.join(f'{x:.2f}' for x in raw_times)}")]


def measure(quick: bool) -> list[Figure]:
    with workshop_lab() as lab:
        return measure_lab(lab, 2 if quick else 6)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--project", help="a running lab's compose project (default: a lab of its own)")
    p.add_argument("--breakdown", action="store_true", help="print the last redeploy's debug log with times")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    figures: list[Figure] = on_workshop_lab(a.project, lambda lab: measure_lab(lab, a.rounds, a.breakdown))
    print(table(figures))
    if a.json:
        Path(a.json).write_text(dumps(figures))


if __name__ == "__main__":
    main()
