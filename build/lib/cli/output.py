"""What the CLI prints: tables, colour (only on a terminal, never with NO_COLOR or TERM=dumb), durations,
the bosh CLI's event lines and vitals columns."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .errors import EXIT_OK


def colour(text: str, code: str, stream: TextIO | None = None) -> str:
    stream = stream or sys.stdout
    if not stream.isatty() or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return text
    return f"\033[{code}m{text}\033[0m"


def hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_event(task_id: int, line: str, started: dict[tuple[str, str], float]) -> str:
    """One event as the bosh CLI prints it: ``Task 4 | 10:20:31 | Updating instance redis: redis/<id> (0)
    (canary) (00:00:31)``."""
    try:
        ev = json.loads(line)
    except ValueError:
        return line
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", 0)))
    key = (ev.get("stage", ""), ev.get("task", ""))
    tags = ev.get("tags") or []
    stage = f"{ev.get('stage')} {', '.join(tags)}" if tags else ev.get("stage")
    head = f"Task {task_id} | {stamp} | {stage}: {ev.get('task')}"
    if ev.get("state") == "started":
        started[key] = ev.get("time", 0)
        return head
    dur = f"({hms(ev.get('time', 0) - started.get(key, ev.get('time', 0)))})"
    if ev.get("state") == "failed":
        return colour(f"{head} {dur}\n   L Error: {ev.get('data', {}).get('error', '')}", "31", sys.stderr)
    return f"{head} {colour(dur, '32', sys.stderr)}"


def task_printer(task_id: int, kind: str = "event") -> Callable[[bytes], None]:
    """Prints a task's output on stderr as it comes (the event log as event lines)."""
    started: dict[tuple[str, str], float] = {}

    def show(data: bytes) -> None:
        for line in data.decode(errors="replace").splitlines():
            print(render_event(task_id, line, started) if kind == "event" else line, file=sys.stderr)
    return show


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[h for _, h in columns]] + [[str(r.get(k, "") if r.get(k) is not None else "-") for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(columns))).rstrip() for c in cells)


def out_json(value: Any) -> int:
    print(json.dumps(value))
    return EXIT_OK


def vitals_row(v: dict[str, Any] | None) -> dict[str, str]:
    """The bosh CLI's vitals columns from a heartbeat's vitals."""
    if not v:
        return {}
    cpu, mem, swap, disk = v.get("cpu") or {}, v.get("mem") or {}, v.get("swap") or {}, v.get("disk") or {}

    def pct(d: dict[str, Any], extra: str = "") -> str:
        return f"{d.get('percent', '?')}%" + extra if d else "-"
    total = sum(float(cpu.get(k, 0) or 0) for k in ("user", "sys", "wait"))
    secs = int((v.get("uptime") or {}).get("secs") or 0)
    return {
        "uptime": f"{secs // 86400}d {secs % 86400 // 3600}h {secs % 3600 // 60}m {secs % 60}s",
        "load": ", ".join(v.get("load") or []),
        "cpu_total": f"{total:.1f}%", "cpu_user": f"{cpu.get('user', '-')}%", "cpu_sys": f"{cpu.get('sys', '-')}%",
        "cpu_wait": f"{cpu.get('wait', '-')}%",
        "memory": pct(mem, f" ({int(mem.get('kb', 0) or 0) / 1024:.1f} MB)" if mem else ""),
        "swap": pct(swap, f" ({int(swap.get('kb', 0) or 0) / 1024:.1f} MB)" if swap else ""),
        "system_disk": pct(disk.get("system") or {}), "ephemeral_disk": pct(disk.get("ephemeral") or {}),
        "persistent_disk": pct(disk.get("persistent") or {}),
    }


VITALS_COLUMNS = [("uptime", "Uptime"), ("load", "Load (1m, 5m, 15m)"), ("cpu_total", "CPU Total"),
                  ("cpu_user", "CPU User"), ("cpu_sys", "CPU Sys"), ("cpu_wait", "CPU Wait"),
                  ("memory", "Memory Usage"), ("swap", "Swap Usage"), ("system_disk", "System Disk Usage"),
                  ("ephemeral_disk", "Ephemeral Disk Usage"), ("persistent_disk", "Persistent Disk Usage")]
