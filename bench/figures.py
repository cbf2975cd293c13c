"""What every bench figure looks like, and the table ``python -m bench`` prints.

A bench script measures the lab beside a raw baseline run in the same process, on the same machine, at the
same time (never a fixed number), and reports each figure as a :class:`Figure`: the lab's value, the
baseline's, their ratio, and the goal the ratio is held to (issue 12's table). ``better`` says which way is
good: ``"lower"`` for times and memory (ratio = lab / baseline), ``"higher"`` for throughput (ratio = lab /
baseline too, the goal is then a floor).

A script offers ``measure(quick: bool) -> list[Figure]`` for ``python -m bench`` and prints the same figures
as JSON with ``--json`` when run on its own."""
from __future__ import annotations

import json
from typing import Literal, NotRequired, TypedDict


class Figure(TypedDict):
    name: str                       # e.g. "agent ping"
    unit: str                       # unit of value and baseline: "ms", "s", "MiB", "MB/s", "% core"
    value: float                    # the lab's
    baseline: float                 # the raw baseline's, measured beside it (0 when the figure has none)
    baseline_name: str              # what the baseline is, in words
    ratio: float                    # value / baseline (0 when baseline is 0)
    goal: float | None              # the ratio to reach (None: recorded only)
    better: Literal["lower", "higher"]
    note: NotRequired[str]          # anything a reader needs (sample size, what was left out)


def figure(name: str, unit: str, value: float, baseline: float, baseline_name: str, goal: float | None,
           better: Literal["lower", "higher"] = "lower", note: str = "") -> Figure:
    f = Figure(name=name, unit=unit, value=round(value, 4), baseline=round(baseline, 4),
               baseline_name=baseline_name, ratio=round(value / baseline, 3) if baseline else 0.0,
               goal=goal, better=better)
    if note:
        f["note"] = note
    return f


def met(f: Figure) -> bool | None:
    """Whether the figure reaches its goal (None: no goal, or no baseline to hold it to)."""
    if f["goal"] is None or not f["baseline"]:
        return None
    return f["ratio"] <= f["goal"] if f["better"] == "lower" else f["ratio"] >= f["goal"]


def table(figures: list[Figure]) -> str:
    """A plain-text table: one row per figure (no colour: it goes to CI logs and issue notes)."""
    head = ("figure", "lab", "baseline", "ratio", "goal", "")
    rows = [head]
    for f in figures:
        goal = "" if f["goal"] is None else ("≤ " if f["better"] == "lower" else "≥ ") + f"{f['goal']:g}×"
        verdict = {True: "ok", False: "MISSED", None: ""}[met(f)]
        rows.append((f["name"], f"{f['value']:g} {f['unit']}",
                     f"{f['baseline']:g} {f['unit']} ({f['baseline_name']})" if f["baseline"] else "-",
                     f"{f['ratio']:g}×" if f["baseline"] else "-", goal, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def dumps(figures: list[Figure]) -> str:
    return json.dumps(figures, indent=2, ensure_ascii=False)
