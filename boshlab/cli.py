"""``bosh-lab``: the lab's CLI for people and scripts. Verbs are named like the bosh CLI's; every listing takes
``--json`` (before or after the verb). It talks only to the director's HTTP API (BOSH_LAB_DIRECTOR, default
http://127.0.0.1:25555).

Exit codes (for scripts):
  0  done                               4  not found (deployment, instance, task, release)
  1  failed (a task's error, an error)  5  conflict (the deployment is locked by another task; task not running)
  2  usage (bad arguments, bad file)    6  cloud-check found problems (--report) / some left unresolved
  3  the director is unreachable        7  the task was cancelled
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from .release import ReleaseError, create_release

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_PROBLEMS, EXIT_CANCELLED = 4, 5, 6, 7
STATUS_EXIT = {404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT, 400: EXIT_USAGE}


def colour(text: str, code: str, stream: Any = None) -> str:
    stream = stream or sys.stdout
    if not stream.isatty() or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return text
    return f"\033[{code}m{text}\033[0m"


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Director:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.session = aiohttp.ClientSession(headers={"Authorization": auth},
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, **kw: Any) -> aiohttp.ClientResponse:
        try:
            r = await self.session.request(method, self.url + path, **kw)
        except aiohttp.ClientConnectionError as e:
            raise CLIError(f"cannot reach the director at {self.url}: {e}. Is the lab up (`docker compose up`)?",
                           EXIT_UNREACHABLE) from None
        if r.status >= 400:
            try:
                body = await r.json(content_type=None)
                msg = body.get("description", body) if isinstance(body, dict) else body
            except (ValueError, aiohttp.ContentTypeError):
                msg = (await r.text()).strip()
            raise CLIError(f"director answered {r.status}: {msg}", STATUS_EXIT.get(r.status, EXIT_FAILED))
        return r

    async def get_json(self, path: str, **kw: Any) -> Any:
        r = await self.request("GET", path, **kw)
        return await r.json()

    async def send_json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = await self.request(method, path, json=body, **kw)
        return await r.json()

    async def follow(self, task_id: int, kind: str = "event", quiet: bool = False) -> dict[str, Any]:
        """Print a task's output as it grows until the task ends; return the task."""
        offset = 0
        started: dict[tuple[str, str], float] = {}
        while True:
            r = await self.request("GET", f"/tasks/{task_id}/output", params={"type": kind, "offset": str(offset)})
            data = await r.read()
            offset = int(r.headers.get("X-Next-Offset", offset + len(data)))
            state = r.headers.get("X-Task-State", "processing")
            if data and not quiet:
                for line in data.decode(errors="replace").splitlines():
                    print(render_event(task_id, line, started) if kind == "event" else line, file=sys.stderr)
            if state not in ("queued", "processing", "cancelling"):
                task: dict[str, Any] = await self.get_json(f"/tasks/{task_id}")
                return task
            await asyncio.sleep(0.3)


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


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[h for _, h in columns]] + [[str(r.get(k, "") if r.get(k) is not None else "-") for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(columns))).rstrip() for c in cells)


def task_exit(task: dict[str, Any]) -> int:
    return {"done": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(task["state"], EXIT_FAILED)


async def finish_task(d: Director, task_id: int, args: argparse.Namespace) -> int:
    task = await d.follow(task_id, quiet=args.json)
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


async def start_task(d: Director, method: str, path: str, args: argparse.Namespace, **kw: Any) -> int:
    r = await d.request(method, path, **kw)
    task_id = int((await r.json())["id"])
    if not args.json:
        print(f"Task {task_id}\n", file=sys.stderr)
    return await finish_task(d, task_id, args)


def out_json(value: Any) -> int:
    print(json.dumps(value))
    return EXIT_OK


# --- releases -----------------------------------------------------------------------------------------

async def cmd_upload_release(d: Director, args: argparse.Namespace) -> int:
    path = Path(args.path)
    tmp = None
    if path.is_dir():
        tmp = Path(tempfile.mkstemp(suffix=".tgz")[1])
        try:
            await asyncio.to_thread(create_release, path, tmp, blob_dirs=args.blobs or [], version=args.version)
        except ReleaseError as e:
            raise CLIError(str(e), EXIT_USAGE) from None
        path = tmp
    if not path.is_file():
        raise CLIError(f"{args.path}: no such release tarball or release directory", EXIT_USAGE)
    try:
        with open(path, "rb") as f:
            r = await d.request("POST", "/releases", data=f, headers={"Content-Type": "application/x-compressed"})
            task_id = int((await r.json())["id"])
    finally:
        if tmp:
            tmp.unlink(missing_ok=True)
    return await finish_task(d, task_id, args)


async def cmd_create_release(d: Director | None, args: argparse.Namespace) -> int:
    try:
        m = await asyncio.to_thread(create_release, args.dir, args.tarball, blob_dirs=args.blobs or [], version=args.version)
    except ReleaseError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    if args.json:
        print(json.dumps({"name": m.name, "version": m.version, "tarball": args.tarball}))
    else:
        print(args.tarball)
    return EXIT_OK


async def cmd_releases(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json("/releases")
    if args.json:
        return out_json(rows)
    flat = [{"name": r["name"], "version": v["version"] + ("*" if v["currently_deployed"] else ""),
             "deployments": ", ".join(v.get("deployments", []))} for r in rows for v in r["release_versions"]]
    print(table(flat, [("name", "Name"), ("version", "Version"), ("deployments", "Deployed in")]))
    print("\n(*) Currently deployed", file=sys.stderr)
    return EXIT_OK


async def cmd_delete_release(d: Director, args: argparse.Namespace) -> int:
    name, _, version = args.release.partition("/")
    params = {"force": "true"} if args.force else {}
    if version:
        params["version"] = version
    return await start_task(d, "DELETE", f"/releases/{name}", args, params=params)


# --- deployments --------------------------------------------------------------------------------------

async def cmd_deploy(d: Director, args: argparse.Namespace) -> int:
    try:
        text = Path(args.manifest).read_text()
    except OSError as e:
        raise CLIError(f"cannot read manifest: {e}", EXIT_USAGE) from None
    params = {"skip_drain": "true"} if args.skip_drain else {}
    return await start_task(d, "POST", "/deployments", args, data=text.encode(), headers={"Content-Type": "text/yaml"},
                            params=params)


async def cmd_deployments(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json("/deployments")
    if args.json:
        return out_json(rows)
    for r in rows:
        r["release_list"] = ", ".join(f"{x['name']}/{x['version']}" for x in r["releases"])
        r["locked"] = f"task {r['locked_by_task']}" if r.get("locked_by_task") else "-"
        r["resurrection_s"] = "on" if r.get("resurrection") else "off"
    print(table(rows, [("name", "Name"), ("release_list", "Release(s)"), ("instances", "Instances"), ("vms", "VMs"),
                       ("resurrection_s", "Resurrection"), ("locked", "Lock")]))
    return EXIT_OK


async def cmd_delete_deployment(d: Director, args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else {}
    return await start_task(d, "DELETE", f"/deployments/{args.deployment}", args, params=params)


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


async def cmd_instances(d: Director, args: argparse.Namespace) -> int:
    params = {"format": "full"} if args.ps else {}
    rows = await d.get_json(f"/deployments/{args.deployment}/instances", params=params)
    if args.json:
        return out_json(rows)
    shown: list[dict[str, Any]] = []
    for r in rows:
        r["ip"] = ", ".join(r["ips"])
        r["instance"] = f"{r['group']}/{r['id']}"
        r.update(vitals_row(r.get("vitals")))
        shown.append(r)
        if args.ps:
            for p in r.get("processes") or []:
                shown.append({"instance": "~", "process": p.get("name"), "process_state": p.get("state")})
    cols = [("instance", "Instance")] + ([("process", "Process")] if args.ps else []) + \
        [("process_state", "Process State"), ("ip", "IPs")]
    if args.details:
        cols += [("state", "State"), ("vm_cid", "VM CID"), ("agent_id", "Agent ID"), ("index", "Index")]
    if args.vitals:
        cols += VITALS_COLUMNS
    print(f"Deployment '{args.deployment}'\n", file=sys.stderr)
    print(table(shown, cols))
    print(f"\n{len(rows)} instances", file=sys.stderr)
    return EXIT_OK


async def cmd_vms(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json(f"/deployments/{args.deployment}/vms")
    if args.json:
        return out_json(rows)
    for r in rows:
        r["ip"] = ", ".join(r["ips"])
        r["vm_cid_short"] = (r["vm_cid"] or "")[:12]
        r["created"] = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(r["vm_created_at"])) if r.get("vm_created_at") else "-"
        r.update(vitals_row(r.get("vitals")))
    cols = [("instance", "Instance"), ("process_state", "Process State"), ("ip", "IPs"), ("vm_cid_short", "VM CID"),
            ("vm_type", "VM Type"), ("active", "Active")]
    if args.vitals:
        cols += [("created", "VM Created At")] + VITALS_COLUMNS
    print(f"Deployment '{args.deployment}'\n", file=sys.stderr)
    print(table(rows, cols))
    print(f"\n{len(rows)} vms", file=sys.stderr)
    return EXIT_OK


async def cmd_change_state(d: Director, args: argparse.Namespace) -> int:
    """start / stop / restart / recreate [GROUP[/INDEX|/ID]]."""
    state = {"start": "started", "stop": "stopped", "restart": "restart", "recreate": "recreate"}[args.command]
    group, _, ref = (args.instance or "*").partition("/")
    path = f"/deployments/{args.deployment}/jobs/{group or '*'}" + (f"/{ref}" if ref else "")
    params = {"state": state}
    if getattr(args, "skip_drain", False):
        params["skip_drain"] = "true"
    return await start_task(d, "PUT", path, args, params=params)


async def cmd_cloud_check(d: Director, args: argparse.Namespace) -> int:
    problems = await d.get_json(f"/deployments/{args.deployment}/problems")
    if args.report or (not args.auto and not args.resolution and not sys.stdin.isatty()):
        if args.json:
            print(json.dumps(problems))
        else:
            print(table([{"n": i, **p} for i, p in enumerate(problems, 1)],
                        [("n", "#"), ("type", "Type"), ("description", "Description")]))
            print(f"\n{len(problems)} problems", file=sys.stderr)
        return EXIT_PROBLEMS if problems else EXIT_OK
    if not problems:
        if args.json:
            print(json.dumps({"problems": [], "task": None}))
        else:
            print("0 problems", file=sys.stderr)
        return EXIT_OK
    chosen: dict[str, str] = {}
    for i, p in enumerate(problems, 1):
        names = [r["name"] for r in p["resolutions"]]
        if args.auto:
            pick = "recreate_vm" if "recreate_vm" in names else names[0]
        elif args.resolution:
            pick = next((r for r in args.resolution if r in names), "ignore")
        else:
            print(f"\nProblem {i} of {len(problems)}: {p['description']}", file=sys.stderr)
            for k, r in enumerate(p["resolutions"], 1):
                print(f"  {k}: {r['plan']}", file=sys.stderr)
            answer = input(f"Resolution (1-{len(names)}) [1]: ").strip() or "1"
            try:
                pick = names[int(answer) - 1]
            except (ValueError, IndexError):
                raise CLIError(f"no resolution {answer!r}", EXIT_USAGE) from None
        chosen[p["id"]] = pick
    if all(v == "ignore" for v in chosen.values()):
        return EXIT_PROBLEMS
    return await start_task(d, "PUT", f"/deployments/{args.deployment}/problems", args, json={"resolutions": chosen})


async def cmd_update_resurrection(d: Director, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"enabled": args.state == "on"}
    if args.deployment:
        body["deployment"] = args.deployment
    res = await d.send_json("PUT", "/resurrection", body)
    if args.json:
        return out_json(res)
    print(f"resurrection {'on' if res['enabled'] else 'off'} for "
          f"{'deployment ' + res['deployment'] if res['deployment'] != '*' else 'all deployments'}", file=sys.stderr)
    return EXIT_OK


# --- tasks --------------------------------------------------------------------------------------------

async def cmd_tasks(d: Director, args: argparse.Namespace) -> int:
    params = {"state": "queued,processing,cancelling"} if not args.recent else {"limit": str(args.recent)}
    rows = await d.get_json("/tasks", params=params)
    if args.deployment:
        rows = [r for r in rows if r["deployment"] == args.deployment]
    if args.json:
        return out_json(rows)
    for r in rows:
        r["started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
        r["took"] = hms((r["ended_at"] or time.time()) - r["started_at"])
    print(table(rows, [("id", "ID"), ("state", "State"), ("started", "Started"), ("took", "Duration"),
                       ("description", "Description"), ("deployment", "Deployment"), ("result", "Result")]))
    return EXIT_OK


async def cmd_task(d: Director, args: argparse.Namespace) -> int:
    kind = "debug" if args.debug else "result" if args.result else "event"
    if kind != "event" or args.json:
        # Raw output (event: one JSON object per line); --json with the event log prints it as sent.
        r = await d.request("GET", f"/tasks/{args.id}/output", params={"type": kind})
        sys.stdout.write((await r.read()).decode())
        task = await d.get_json(f"/tasks/{args.id}")
        return task_exit(task) if task["state"] not in ("queued", "processing", "cancelling") else EXIT_OK
    return await finish_task(d, args.id, args)


async def cmd_cancel_task(d: Director, args: argparse.Namespace) -> int:
    res = await d.send_json("DELETE", f"/tasks/{args.id}")
    if args.json:
        return out_json(res)
    print(f"Task {args.id} is being cancelled", file=sys.stderr)
    return EXIT_OK


COMMANDS = {
    "upload-release": cmd_upload_release, "create-release": cmd_create_release, "releases": cmd_releases,
    "delete-release": cmd_delete_release, "deploy": cmd_deploy, "deployments": cmd_deployments,
    "delete-deployment": cmd_delete_deployment, "instances": cmd_instances, "vms": cmd_vms,
    "start": cmd_change_state, "stop": cmd_change_state, "restart": cmd_change_state, "recreate": cmd_change_state,
    "cloud-check": cmd_cloud_check, "update-resurrection": cmd_update_resurrection,
    "tasks": cmd_tasks, "task": cmd_task, "cancel-task": cmd_cancel_task,
}
ALIASES = {"cck": "cloud-check", "dep": "deployments", "is": "instances", "ct": "cancel-task"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:   # argparse's usage errors: exit code 2, like ours
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="bosh-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-e", "--environment", default=os.environ.get("BOSH_LAB_DIRECTOR", "http://127.0.0.1:25555"),
                   help="director URL (env BOSH_LAB_DIRECTOR)")
    p.add_argument("--user", default=os.environ.get("BOSH_LAB_USER", "admin"))
    p.add_argument("--password", default=os.environ.get("BOSH_LAB_PASSWORD", "admin"))
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    dep_default = os.environ.get("BOSH_LAB_DEPLOYMENT") or os.environ.get("BOSH_DEPLOYMENT") or "redis-solo"

    def add(name: str, help: str, deployment: bool = False, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, aliases=list(aliases))
        s.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output on stdout")
        if deployment:
            s.add_argument("-d", "--deployment", default=dep_default,
                           help="deployment name (env BOSH_LAB_DEPLOYMENT, default redis-solo)")
        return s

    s = add("upload-release", "upload a release tarball or release directory")
    s.add_argument("path")
    s.add_argument("--blobs", action="append", help="directory with package blobs (for a release directory)")
    s.add_argument("--version", default="1", help="version of a release made from a directory")
    s = add("create-release", "build a release tarball from a release directory")
    s.add_argument("dir")
    s.add_argument("--tarball", required=True)
    s.add_argument("--version", default="1")
    s.add_argument("--blobs", action="append")
    add("releases", "list releases")
    s = add("delete-release", "delete a release (NAME) or one version (NAME/VERSION)")
    s.add_argument("release")
    s.add_argument("--force", action="store_true", help="go on when a blob cannot be deleted")
    s = add("deploy", "deploy a manifest")
    s.add_argument("manifest")
    s.add_argument("-d", "--deployment", help="ignored: the manifest names the deployment")
    s.add_argument("--skip-drain", action="store_true", help="do not run drain scripts")
    add("deployments", "list deployments", aliases=("dep",))
    s = add("delete-deployment", "delete a deployment: its VMs, disks and networks", deployment=True)
    s.add_argument("--force", action="store_true", help="go on past agents that do not answer")
    s = add("instances", "list a deployment's instances", deployment=True, aliases=("is",))
    s.add_argument("-p", "--ps", action="store_true", help="each instance's processes (asks every agent)")
    s.add_argument("--vitals", action="store_true", help="vitals from the agents' heartbeats")
    s.add_argument("-i", "--details", action="store_true", help="VM CID, agent id, desired state")
    s = add("vms", "list a deployment's VMs", deployment=True)
    s.add_argument("--vitals", action="store_true", help="vitals from the agents' heartbeats")
    for verb, what in (("start", "start jobs"), ("stop", "stop jobs (drain first)"),
                       ("restart", "stop then start jobs"), ("recreate", "make new VMs for instances")):
        s = add(verb, f"{what}: the whole deployment, a group (GROUP) or one instance (GROUP/INDEX or GROUP/ID)",
                deployment=True)
        s.add_argument("instance", nargs="?", help="GROUP, GROUP/INDEX or GROUP/ID (default: every instance)")
        if verb in ("stop", "restart", "recreate"):
            s.add_argument("--skip-drain", action="store_true", help="do not run drain scripts")
    s = add("cloud-check", "find VMs that vanished or whose agent is gone, and fix them", deployment=True,
            aliases=("cck",))
    g = s.add_mutually_exclusive_group()
    g.add_argument("-r", "--report", action="store_true", help="only list the problems (exit 6 if any)")
    g.add_argument("-a", "--auto", action="store_true", help="resolve every problem by recreating its VM")
    g.add_argument("--resolution", action="append", help="resolution to use where it applies (repeatable): "
                   "recreate_vm, reboot_vm, delete_vm, delete_vm_reference, ignore")
    s = add("update-resurrection", "turn resurrection on or off (for all deployments, or one with -d)")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument("-d", "--deployment", default=None)
    s = add("tasks", "list running tasks (or --recent N)")
    s.add_argument("-r", "--recent", type=int, nargs="?", const=30)
    s.add_argument("-d", "--deployment", default=None)
    s = add("task", "show (and follow) a task's event log")
    s.add_argument("id", type=int)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--debug", action="store_true", help="every message sent and received")
    g.add_argument("--result", action="store_true")
    g.add_argument("--event", action="store_true", help="the event log (default)")
    s = add("cancel-task", "cancel a running task", aliases=("ct",))
    s.add_argument("id", type=int)
    from .cli_agent import add_parsers   # disks, delete-disk, logs, ssh, agent-message
    add_parsers(add)
    return p


async def run(args: argparse.Namespace) -> int:
    args.command = ALIASES.get(args.command, args.command)
    if args.command == "create-release":
        return await cmd_create_release(None, args)
    d = Director(args.environment, args.user, args.password)
    from .cli_agent import COMMANDS as AGENT_COMMANDS
    try:
        return await {**COMMANDS, **AGENT_COMMANDS}[args.command](d, args)
    finally:
        await d.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except CLIError as e:
        print(colour(f"Error: {e}", "31", sys.stderr), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
