"""``bosh-lab``: the lab's CLI for people. Verbs are named like the bosh CLI's; every listing takes ``--json``.
It talks only to the director's HTTP API (BOSH_LAB_DIRECTOR, default http://127.0.0.1:25555)."""
from __future__ import annotations

import argparse
import asyncio
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


def colour(text: str, code: str) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return text
    return f"\033[{code}m{text}\033[0m"


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Director:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.session = aiohttp.ClientSession(headers={"Authorization": aiohttp.BasicAuth(user, password).encode()},
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
            raise CLIError(f"director answered {r.status}: {msg}")
        return r

    async def get_json(self, path: str) -> Any:
        r = await self.request("GET", path)
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
            if state not in ("queued", "processing"):
                task: dict[str, Any] = await self.get_json(f"/tasks/{task_id}")
                return task
            await asyncio.sleep(0.3)


def render_event(task_id: int, line: str, started: dict[tuple[str, str], float]) -> str:
    try:
        ev = json.loads(line)
    except ValueError:
        return line
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", 0)))
    key = (ev.get("stage", ""), ev.get("task", ""))
    head = f"Task {task_id} | {stamp} | {ev.get('stage')}: {ev.get('task')}"
    if ev.get("state") == "started":
        started[key] = ev.get("time", 0)
        return head
    took = ev.get("time", 0) - started.get(key, ev.get("time", 0))
    dur = f"({took // 3600:02d}:{took % 3600 // 60:02d}:{took % 60:02d})"
    if ev.get("state") == "failed":
        return colour(f"{head} {dur}\n   L Error: {ev.get('data', {}).get('error', '')}", "31")
    return f"{head} {colour(dur, '32')}"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return "(none)"
    cells = [[h for _, h in columns]] + [[str(r.get(k, "") if r.get(k) is not None else "-") for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(columns))).rstrip() for c in cells)


async def finish_task(d: Director, task_id: int, args: argparse.Namespace) -> int:
    task = await d.follow(task_id, quiet=args.json)
    if args.json:
        print(json.dumps(task))
    else:
        mark = colour("Succeeded", "32") if task["state"] == "done" else colour(task["state"].capitalize(), "31")
        print(f"\nTask {task_id} {mark}: {task['result']}", file=sys.stderr)
    return EXIT_OK if task["state"] == "done" else EXIT_FAILED


async def cmd_upload_release(d: Director, args: argparse.Namespace) -> int:
    path = Path(args.path)
    tmp = None
    if path.is_dir():
        tmp = Path(tempfile.mkstemp(suffix=".tgz")[1])
        try:
            await asyncio.to_thread(create_release, path, tmp, blob_dirs=args.blobs or [])
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


async def cmd_deploy(d: Director, args: argparse.Namespace) -> int:
    try:
        text = Path(args.manifest).read_text()
    except OSError as e:
        raise CLIError(f"cannot read manifest: {e}", EXIT_USAGE) from None
    r = await d.request("POST", "/deployments", data=text.encode(), headers={"Content-Type": "text/yaml"})
    return await finish_task(d, int((await r.json())["id"]), args)


async def cmd_deployments(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json("/deployments")
    if args.json:
        print(json.dumps(rows))
    else:
        print(table([{"name": r["name"], "releases": ", ".join(f"{x['name']}/{x['version']}" for x in r["releases"])} for r in rows],
                    [("name", "Name"), ("releases", "Release(s)")]))
    return EXIT_OK


async def cmd_instances(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json(f"/deployments/{args.deployment}/instances")
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            r["ip"] = ", ".join(r["ips"])
        print(table(rows, [("instance", "Instance"), ("process_state", "Process State"), ("ip", "IPs"),
                           ("vm_name", "VM")]))
    return EXIT_OK


async def cmd_releases(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json("/releases")
    if args.json:
        print(json.dumps(rows))
    else:
        flat = [{"name": r["name"], "version": v["version"] + ("*" if v["currently_deployed"] else "")}
                for r in rows for v in r["release_versions"]]
        print(table(flat, [("name", "Name"), ("version", "Version")]))
    return EXIT_OK


async def cmd_tasks(d: Director, args: argparse.Namespace) -> int:
    rows = await d.get_json("/tasks" + ("?state=queued,processing" if not args.recent else f"?limit={args.recent}"))
    if args.json:
        print(json.dumps(rows))
    else:
        print(table(rows, [("id", "ID"), ("state", "State"), ("description", "Description"), ("deployment", "Deployment"),
                           ("result", "Result")]))
    return EXIT_OK


async def cmd_task(d: Director, args: argparse.Namespace) -> int:
    kind = "debug" if args.debug else "result" if args.result else "event"
    if args.json and kind == "event":
        r = await d.request("GET", f"/tasks/{args.id}/output", params={"type": "event"})
        sys.stdout.write((await r.read()).decode())
        return EXIT_OK
    if kind != "event":
        r = await d.request("GET", f"/tasks/{args.id}/output", params={"type": kind})
        sys.stdout.write((await r.read()).decode())
        return EXIT_OK
    return await finish_task(d, args.id, args)


COMMANDS = {
    "upload-release": cmd_upload_release, "create-release": cmd_create_release, "deploy": cmd_deploy,
    "deployments": cmd_deployments, "instances": cmd_instances, "releases": cmd_releases, "tasks": cmd_tasks,
    "task": cmd_task,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bosh-lab", description=__doc__)
    p.add_argument("-e", "--environment", default=os.environ.get("BOSH_LAB_DIRECTOR", "http://127.0.0.1:25555"),
                   help="director URL (env BOSH_LAB_DIRECTOR)")
    p.add_argument("--user", default=os.environ.get("BOSH_LAB_USER", "admin"))
    p.add_argument("--password", default=os.environ.get("BOSH_LAB_PASSWORD", "admin"))
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("upload-release", help="upload a release tarball or release directory")
    s.add_argument("path")
    s.add_argument("--blobs", action="append", help="directory with package blobs (for a release directory)")
    s = sub.add_parser("create-release", help="build a release tarball from a release directory")
    s.add_argument("dir")
    s.add_argument("--tarball", required=True)
    s.add_argument("--version", default="1")
    s.add_argument("--blobs", action="append")
    s = sub.add_parser("deploy", help="deploy a manifest")
    s.add_argument("manifest")
    s.add_argument("-d", "--deployment", help="ignored: the manifest names the deployment")
    sub.add_parser("deployments", help="list deployments")
    s = sub.add_parser("instances", help="list a deployment's instances")
    s.add_argument("-d", "--deployment", default="redis-solo")
    sub.add_parser("releases", help="list releases")
    s = sub.add_parser("tasks", help="list running tasks (or --recent N)")
    s.add_argument("-r", "--recent", type=int, nargs="?", const=30)
    s = sub.add_parser("task", help="show (and follow) a task's event log")
    s.add_argument("id", type=int)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--debug", action="store_true", help="every message sent and received")
    g.add_argument("--result", action="store_true")
    g.add_argument("--event", action="store_true", help="the event log (default)")
    return p


async def run(args: argparse.Namespace) -> int:
    if args.command == "create-release":
        return await cmd_create_release(None, args)
    d = Director(args.environment, args.user, args.password)
    try:
        return await COMMANDS[args.command](d, args)
    finally:
        await d.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except CLIError as e:
        print(colour(f"Error: {e}", "31"), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
