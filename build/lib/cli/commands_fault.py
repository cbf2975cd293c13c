"""Game-day fault verbs (docs/faults.md "Fault verbs"), registered by ``cli/main.py``:

    bosh-lab fault KIND [INSTANCE] [-d D] [--job J] [--seconds N]   inject a fault; prints how to undo it
    bosh-lab fault undo ID | bosh-lab fault undo --all                undo one fault, or every active one
    bosh-lab faults [--all]                                           the active faults (--all: undone ones too)

KIND: fail-job, slow-drain, kill-agent, pause-blobstore, cut-nats, delete-vm. Each shows in ``bosh-lab watch``."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from .client import DirectorClient
from .commands import Command
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError
from .output import out_json, table

KINDS = ("fail-job", "slow-drain", "kill-agent", "pause-blobstore", "cut-nats", "delete-vm")
NEEDS_INSTANCE = ("fail-job", "slow-drain", "kill-agent", "cut-nats", "delete-vm")


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    s = add("fault", f"inject a game-day fault ({', '.join(KINDS)}) or undo one (fault undo ID | --all)",
            deployment=True)
    s.add_argument("kind", choices=[*KINDS, "undo"], metavar="KIND", help=f"{', '.join(KINDS)}, or undo")
    s.add_argument("target", nargs="?", metavar="INSTANCE|ID",
                   help="GROUP/INDEX or GROUP/ID (instance faults); the fault's id (undo)")
    s.add_argument("--job", help="fail-job: the job to fail (default: the instance's first job)")
    s.add_argument("--seconds", type=float, help="slow-drain: seconds each drain takes more")
    s.add_argument("--all", action="store_true", help="undo: every active fault")
    s = add("faults", "list the active faults (--all: undone ones too)")
    s.add_argument("--all", action="store_true")


def _when(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


async def cmd_fault(d: DirectorClient, args: argparse.Namespace) -> int:
    if args.kind == "undo":
        return await _undo(d, args)
    if args.all:
        raise CLIError("--all goes with `fault undo`", EXIT_USAGE)
    if args.kind in NEEDS_INSTANCE and not args.target:
        raise CLIError(f"{args.kind} needs an instance: bosh-lab fault {args.kind} GROUP/INDEX [-d DEPLOYMENT]",
                       EXIT_USAGE)
    if args.kind == "slow-drain" and args.seconds is None:
        raise CLIError("slow-drain needs --seconds N", EXIT_USAGE)
    body: dict[str, Any] = {"kind": args.kind}
    if args.kind in NEEDS_INSTANCE:
        body.update(deployment=args.deployment, instance=args.target)
    if args.job:
        body["job"] = args.job
    if args.seconds is not None:
        body["seconds"] = args.seconds
    fault = await d.send_json("POST", "/faults", body)
    if args.json:
        return out_json(fault)
    print(f"Fault {fault['id']}: {fault['message']}")
    print(f"Undo it with: bosh-lab fault undo {fault['id']}   (all of them: bosh-lab fault undo --all)")
    return EXIT_OK


async def _undo(d: DirectorClient, args: argparse.Namespace) -> int:
    if args.all == bool(args.target):
        raise CLIError("fault undo needs a fault id or --all (bosh-lab faults lists them)", EXIT_USAGE)
    if args.all:
        done = await d.send_json("DELETE", "/faults")
        if args.json:
            return out_json(done)
        if not done:
            print("No active faults.")
        failed = 0
        for f in done:
            if f.get("error"):
                failed += 1
                print(f"Fault {f['id']} ({f['kind']}): NOT undone: {f['error']}", file=sys.stderr)
            else:
                await _report(d, f)
        return EXIT_FAILED if failed else EXIT_OK
    f = await d.send_json("DELETE", f"/faults/{args.target}")
    if args.json:
        return out_json(f)
    return await _report(d, f)


async def _report(d: DirectorClient, f: dict[str, Any]) -> int:
    print(f"Fault {f['id']}: {f.get('undo_message') or 'undone'}")
    task_id = f.get("task")
    if task_id is None:
        return EXIT_OK
    print(f"Task {task_id}", file=sys.stderr)
    task = await d.follow(int(task_id))
    if task["state"] != "done":
        raise CLIError(f"task {task_id} {task['state']}: {task.get('result')}", EXIT_FAILED)
    return EXIT_OK


async def cmd_faults(d: DirectorClient, args: argparse.Namespace) -> int:
    rows = await d.get_json("/faults", params={"all": "true"} if args.all else None)
    if args.json:
        return out_json(rows)
    if not rows:
        print("No active faults." if not args.all else "No faults.")
        return EXIT_OK
    for r in rows:
        r["where"] = r["instance"] or r["target"]
        r["since"] = _when(r["created_at"])
        r["undone"] = _when(r["undone_at"])
    cols = [("id", "ID"), ("kind", "Kind"), ("deployment", "Deployment"), ("where", "Target"), ("since", "Since")]
    if args.all:
        cols += [("state", "State"), ("undone", "Undone")]
    print(table(rows, cols))
    print("Undo one: bosh-lab fault undo ID   all: bosh-lab fault undo --all")
    return EXIT_OK


COMMANDS: dict[str, Command] = {"fault": cmd_fault, "faults": cmd_faults}

__all__ = ["COMMANDS", "add_parsers"]
