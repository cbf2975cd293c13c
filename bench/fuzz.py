"""The fuzz tests (issue 8) in bench mode: >= 100,000 agent messages, >= 10,000 manifests, thousands of API requests.

    python bench/fuzz.py [--profile bench|ci] [--out bench/results/fuzz.json]

Runs tests/unit/test_fuzz_agent.py and tests/unit/test_fuzz_director.py one after the other, each in its own
``pytest`` with ``HYPOTHESIS_PROFILE=<profile>``; the tests count what they ran into ``$FUZZ_COUNTS_DIR``. Prints
the counts and wall times and writes them as JSON. Any unhandled exception or 500 fails the run. Needs no Docker.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"agent": "tests/unit/test_fuzz_agent.py", "director": "tests/unit/test_fuzz_director.py"}


def run(target: str, profile: str, counts_dir: Path) -> dict[str, Any]:
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile, FUZZ_COUNTS_DIR=str(counts_dir))
    python = ROOT / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable), "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "no:logging", "--durations=0", TARGETS[target]]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    counts_file = counts_dir / f"{target}.json"
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    return {"file": TARGETS[target], "returncode": proc.returncode, "wall_s": round(wall, 1),
            "summary": tail[0] if tail else "", "counts": counts,
            "durations": [line.strip() for line in proc.stdout.splitlines() if " call " in line]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="bench", choices=["bench", "ci"])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    a = p.parse_args()
    results: dict[str, Any] = {"profile": a.profile, "cpus": os.cpu_count()}
    total = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-counts-") as tmp:
        for target in TARGETS:
            r = run(target, a.profile, Path(tmp))
            results[target] = r
            print(f"{target:9} {r['wall_s']:8.1f} s  rc={r['returncode']}  {r['summary']}")
            print(f"          counts: {json.dumps(r['counts'])}")
    results["wall_s"] = round(time.monotonic() - total, 1)
    agent, director = results["agent"]["counts"], results["director"]["counts"]
    results["totals"] = {"agent_messages": agent.get("messages", 0), "agent_replies": agent.get("replies", 0),
                         "manifests": director.get("manifests", 0), "api_requests": director.get("api_requests", 0)}
    print(f"total     {results['wall_s']:8.1f} s  {json.dumps(results['totals'])}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {a.out}")
    return 0 if all(results[t]["returncode"] == 0 for t in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
