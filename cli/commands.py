"""The CLI's verbs for releases, deployments and tasks (the verbs that reach one VM are in
``commands_agent``). Each takes the director client and the parsed arguments and returns the exit code."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from boshlab.release import ReleaseError, build_release, create_release

from .client import ACTIVE_TASK_STATES, DirectorClient
from .errors import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, CLIError
from .output import VITALS_COLUMNS, hms, out_json, table, vitals_row
from .tasks import finish_task, start_task, task_exit

Command = Callable[[DirectorClient, argparse.Namespace], Awaitable[int]]


# --- releases -----------------------------------------------------------------------------------------

async def cmd_upload_release(d: DirectorClient, args: argparse.Namespace) -> int:
    path = Path(args.path)
    tmp = None
    if path.is_dir():
        tmp = Path(tempfile.mkstemp(suffix=".tgz")[1])
        try:
            await asyncio.to_thread(create_release, path, tmp, blob_dirs=args.blobs or [], version=args.version,
                                    name=args.name)
        except ReleaseError as e:
            raise CLIError(str(e), EXIT_USAGE) from None
        path = tmp
    if not path.is_file():
        raise CLIError(f"{args.path}: no such release tarball or release directory", EXIT_USAGE)
    try:
        task_id = int((await d.upload("/releases", path, content_type="application/x-compressed"))["id"])
    finally:
        if tmp:
            tmp.unlink(missing_ok=True)
    return await finish_task(d, task_id, args)


async def cmd_create_release(d: DirectorClient | None, args: argparse.Namespace) -> int:
    """Build a release tarball from a release tree (no director needed). stdout: the tarball's path, or with
    --json the release.MF summary; stderr: the jobs and packages."""
    try:
        built = await asyncio.to_thread(build_release, args.dir, args.tarball, blob_dirs=args.blobs or [],
                                        version=args.version, name=args.name, force=args.force, final=args.final,
                                        style=args.style)
    except ReleaseError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    m = built.manifest
    if args.json:
        return out_json({
            "name": m.name, "version": m.version, "commit_hash": m.commit_hash,
            "uncommitted_changes": m.uncommitted_changes, "tarball": str(built.tarball),
            "jobs": [j.to_dict(False) for j in m.jobs], "packages": [p.to_dict(True) for p in m.packages],
            "license": {"version": m.license.version, "fingerprint": m.license.fingerprint,
                        "sha1": m.license.sha1} if m.license else None,
        })
    print(f"Name         {m.name}\nVersion      {m.version}\nCommit Hash  {m.commit_hash}"
          f"{'+' if m.uncommitted_changes else ''}\n", file=sys.stderr)
    cols = [("name", "Name"), ("version", "Version"), ("sha1", "SHA1")]
    print(table([j.to_dict(False) for j in m.jobs], [("name", "Job"), *cols[1:]]), file=sys.stderr)
    print(file=sys.stderr)
    print(table([p.to_dict(True) for p in m.packages], [("name", "Package"), *cols[1:]]), file=sys.stderr)
    print(f"\n{len(m.jobs)} jobs, {len(m.packages)} packages{', a license' if m.license else ''}", file=sys.stderr)
    print(built.tarball)
    return EXIT_OK


async def cmd_releases(d: DirectorClient, args: argparse.Namespace) -> int:
    rows = await d.get_json("/releases")
    if args.json:
        return out_json(rows)
    flat = [{"name": r["name"], "version": v["version"] + ("*" if v["currently_deployed"] else ""),
             "deployments": ", ".join(v.get("deployments", []))} for r in rows for v in r["release_versions"]]
    print(table(flat, [("name", "Name"), ("version", "Version"), ("deployments", "Deployed in")]))
    print("\n(*) Currently deployed", file=sys.stderr)
    return EXIT_OK


async def cmd_delete_release(d: DirectorClient, args: argparse.Namespace) -> int:
    name, _, version = args.release.partition("/")
    params = {"force": "true"} if args.force else {}
    if version:
        params["version"] = version
    return await start_task(d, "DELETE", f"/releases/{name}", args, params=params)


# --- deployments --------------------------------------------------------------------------------------

async def cmd_deploy(d: DirectorClient, args: argparse.Namespace) -> int:
    try:   # "-": the manifest on stdin (from the host, through workshop/bin/bosh-lab)
        text = sys.stdin.read() if args.manifest == "-" else Path(args.manifest).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read manifest: {e}", EXIT_USAGE) from None
    params = {"skip_drain": "true"} if args.skip_drain else {}
    return await start_task(d, "POST", "/deployments", args, data=text.encode(), content_type="text/yaml",
                            params=params)


async def cmd_deployments(d: DirectorClient, args: argparse.Namespace) -> int:
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


async def cmd_delete_deployment(d: DirectorClient, args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else {}
    return await start_task(d, "DELETE", f"/deployments/{args.deployment}", args, params=params)


async def cmd_instances(d: DirectorClient, args: argparse.Namespace) -> int:
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


async def cmd_vms(d: DirectorClient, args: argparse.Namespace) -> int:
    rows = await d.get_json(f"/deployments/{args.deployment}/vms")
    if args.json:
        return out_json(rows)
    for r in rows:
        r["ip"] = ", ".join(r["ips"])
        r["vm_cid_short"] = (r["vm_cid"] or "")[:12]
        created = r.get("vm_created_at")
        r["created"] = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(created)) if created else "-"
        r.update(vitals_row(r.get("vitals")))
    cols = [("instance", "Instance"), ("process_state", "Process State"), ("ip", "IPs"), ("vm_cid_short", "VM CID"),
            ("vm_type", "VM Type"), ("active", "Active")]
    if args.vitals:
        cols += [("created", "VM Created At")] + VITALS_COLUMNS
    print(f"Deployment '{args.deployment}'\n", file=sys.stderr)
    print(table(rows, cols))
    print(f"\n{len(rows)} vms", file=sys.stderr)
    return EXIT_OK


async def cmd_change_state(d: DirectorClient, args: argparse.Namespace) -> int:
    """start / stop / restart / recreate [GROUP[/INDEX|/ID]]."""
    state = {"start": "started", "stop": "stopped", "restart": "restart", "recreate": "recreate"}[args.command]
    group, _, ref = (args.instance or "*").partition("/")
    path = f"/deployments/{args.deployment}/jobs/{group or '*'}" + (f"/{ref}" if ref else "")
    params = {"state": state}
    if getattr(args, "skip_drain", False):
        params["skip_drain"] = "true"
    return await start_task(d, "PUT", path, args, params=params)


async def cmd_cloud_check(d: DirectorClient, args: argparse.Namespace) -> int:
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
            answer = (await asyncio.to_thread(input, f"Resolution (1-{len(names)}) [1]: ")).strip() or "1"
            try:
                pick = names[int(answer) - 1]
            except (ValueError, IndexError):
                raise CLIError(f"no resolution {answer!r}", EXIT_USAGE) from None
        chosen[p["id"]] = pick
    if all(v == "ignore" for v in chosen.values()):
        return EXIT_PROBLEMS
    return await start_task(d, "PUT", f"/deployments/{args.deployment}/problems", args, json={"resolutions": chosen})


async def cmd_update_resurrection(d: DirectorClient, args: argparse.Namespace) -> int:
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

async def cmd_tasks(d: DirectorClient, args: argparse.Namespace) -> int:
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


async def cmd_task(d: DirectorClient, args: argparse.Namespace) -> int:
    kind = "debug" if args.debug else "result" if args.result else "event"
    if kind != "event" or args.json:
        # Raw output (event: one JSON object per line); --json with the event log prints it as sent.
        out = await d.task_output(args.id, kind)
        sys.stdout.write(out.data.decode())
        task = await d.task(args.id)
        return task_exit(task) if task["state"] not in ACTIVE_TASK_STATES else EXIT_OK
    return await finish_task(d, args.id, args)


async def cmd_cancel_task(d: DirectorClient, args: argparse.Namespace) -> int:
    res = await d.send_json("DELETE", f"/tasks/{args.id}")
    if args.json:
        return out_json(res)
    print(f"Task {args.id} is being cancelled", file=sys.stderr)
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "upload-release": cmd_upload_release, "create-release": cmd_create_release, "releases": cmd_releases,
    "delete-release": cmd_delete_release, "deploy": cmd_deploy, "deployments": cmd_deployments,
    "delete-deployment": cmd_delete_deployment, "instances": cmd_instances, "vms": cmd_vms,
    "start": cmd_change_state, "stop": cmd_change_state, "restart": cmd_change_state, "recreate": cmd_change_state,
    "cloud-check": cmd_cloud_check, "update-resurrection": cmd_update_resurrection,
    "tasks": cmd_tasks, "task": cmd_task, "cancel-task": cmd_cancel_task,
}
ALIASES = {"cck": "cloud-check", "dep": "deployments", "is": "instances", "ct": "cancel-task"}

