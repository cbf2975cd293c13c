"""Starting a task and following it to its end, as the bosh CLI shows it (events on stderr, then Started,
Finished, Duration and the state); the exit code from the task's state."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .client import DirectorClient
from .errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from .output import colour, hms, task_printer


def task_exit(task: dict[str, Any]) -> int:
    return {"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(task["state"], EXIT_FAILED)


async def finish_task(d: DirectorClient, task_id: int, args: argparse.Namespace) -> int:
    task = await d.follow(task_id, on_output=None if args.json else task_printer(task_id))
    if args.json:
        print(json.dumps(task))
    else:
        fmt = "%a %b %d %H:%M:%S UTC %Y"
        ended = task.get("ended_at") or time.time()
        print(f"\nTask {task_id} Started  {time.strftime(fmt, time.gmtime(task['started_at']))}", file=sys.stderr)
        print(f"Task {task_id} Finished {time.strftime(fmt, time.gmtime(ended))}", file=sys.stderr)
        print(f"Task {task_id} Duration {hms(ended - task['started_at'])}", file=sys.stderr)
        mark = colour(task["state"], "32" if task["state"] == "done" else "31", sys.stderr)
        print(f"Task {task_id} {mark}" + (f": {task['result']}" if task.get("result") else ""), file=sys.stderr)
    return task_exit(task)


async def start_task(d: DirectorClient, method: str, path: str, args: argparse.Namespace, **kw: Any) -> int:
    """``kw``: what :meth:`DirectorClient.start_task` takes (json, data, content_type, params)."""
    task_id = await d.start_task(method, path, **kw)
    if not args.json:
        print(f"Task {task_id}\n", file=sys.stderr)
    return await finish_task(d, task_id, args)
