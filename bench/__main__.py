"""One bench command: every figure beside its raw baseline, in one run, as a table of ratios (and JSON).

    python -m bench [--quick] [--only NAME[,NAME]] [--json FILE] [--list]
    bench/run ...                       (the same, with the project's .venv)

Each bench module (``bench/<name>.py``) offers ``measure(quick: bool) -> list[Figure]`` (bench/figures.py).
Modules are imported by name, lazily: one that does not exist yet, or has no ``measure``, is skipped with a
line saying so. Figures that need a running lab share one (bench/_lab.py ``workshop_lab``), brought up on
first use and always torn down at the end.

``--quick`` is CI's mode: fewer rounds, a few minutes in all. The exit code is 0 whatever the figures say
(CI records, noise must not fail it); it is 1 only when a bench crashed (its traceback is printed), 2 on a bad
command line."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._lab import share_labs  # noqa: E402
from bench.figures import Figure, dumps, met, table  # noqa: E402

# In the order they run: the shared-lab figures first (one lab for all of them), then those with labs of their own.
BENCHES = ("ping", "lab_times", "blobs", "compile", "vm_ready", "listing", "deploy_scale", "heartbeats")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load(name: str) -> Callable[[bool], list[Figure]] | str:
    """The module's ``measure``, or why it is skipped."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return f"bench/{name}.py does not exist"
    module = importlib.import_module(f"bench.{name}")
    fn: Any = getattr(module, "measure", None)
    if not callable(fn):
        return f"bench/{name}.py has no measure(quick) yet"
    return fn  # type: ignore[no-any-return]


def run(names: list[str], quick: bool) -> tuple[list[Figure], list[dict[str, Any]]]:
    """Every bench in ``names``: the figures, and one record per bench (ok / skipped / crashed, seconds)."""
    figures: list[Figure] = []
    records: list[dict[str, Any]] = []
    with share_labs():
        for name in names:
            t = time.monotonic()
            try:
                fn = load(name)
                if isinstance(fn, str):
                    log(f"bench: {name}: SKIPPED ({fn})")
                    records.append({"bench": name, "status": "skipped", "why": fn})
                    continue
                log(f"bench: {name}: measuring{' (quick)' if quick else ''} ...")
                got = fn(quick)
                figures.extend(got)
                seconds = round(time.monotonic() - t, 1)
                log(f"bench: {name}: {len(got)} figure(s) in {seconds:g} s")
                records.append({"bench": name, "status": "ok", "seconds": seconds, "figures": len(got)})
            except KeyboardInterrupt:
                raise
            except BaseException as e:   # noqa: BLE001 - SystemExit from a lab helper is a crash of that bench too
                seconds = round(time.monotonic() - t, 1)
                log(f"bench: {name}: CRASHED after {seconds:g} s: {type(e).__name__}: {e}")
                log("".join(traceback.format_exception(e)).rstrip())
                records.append({"bench": name, "status": "crashed", "seconds": seconds,
                                "error": f"{type(e).__name__}: {e}"[-2000:]})
    return figures, records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI mode: fewer rounds, a few minutes; never fails on figures")
    p.add_argument("--only", help="comma-separated bench names (default: all): " + ",".join(BENCHES))
    p.add_argument("--json", metavar="FILE", help="write the figures and each bench's outcome to FILE")
    p.add_argument("--list", action="store_true", help="list the benches and whether each can run")
    a = p.parse_args(argv)
    names = list(BENCHES)
    if a.only:
        names = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES and importlib.util.find_spec(f"bench.{n}") is None]
        if unknown:
            p.error(f"unknown bench(es): {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    if a.list:
        for name in names:
            fn = load(name)
            print(f"{name:14} {'ready' if not isinstance(fn, str) else fn}")
        return 0
    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")    # the labs are torn down on the way out
    signal.signal(signal.SIGTERM, terminated)
    started = time.monotonic()
    figures, records = run(names, a.quick)
    total = round(time.monotonic() - started, 1)
    print(table(figures) if figures else "(no figures)")
    missed = [f["name"] for f in figures if met(f) is False]
    crashed = [r["bench"] for r in records if r["status"] == "crashed"]
    skipped = [r["bench"] for r in records if r["status"] == "skipped"]
    print(f"\n{len(figures)} figure(s) in {total:g} s{' (quick)' if a.quick else ''}; goals missed: "
          f"{', '.join(missed) or 'none'}; skipped: {', '.join(skipped) or 'none'}; crashed: {', '.join(crashed) or 'none'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"quick": a.quick, "seconds": total, "benches": records,
                                            "figures": json.loads(dumps(figures))}, indent=2, ensure_ascii=False))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
