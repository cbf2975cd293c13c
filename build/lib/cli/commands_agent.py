"""CLI verbs that reach one instance's VM: ``disks``, ``delete-disk``, ``logs``, ``ssh``, ``agent-message``.
Registered by ``cli/main.py`` (``add_parsers`` and ``COMMANDS``)."""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

from .client import DirectorClient, DirectorClientError
from .commands import Command
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError, cli_error
from .output import out_json, table
from .tasks import start_task


def instance_path(args: argparse.Namespace) -> str:
    group, _, ref = args.instance.partition("/")
    if not group or not ref:
        raise CLIError(f"instance must be GROUP/INDEX or GROUP/ID, got {args.instance!r}", EXIT_USAGE)
    return f"/deployments/{args.deployment}/instances/{group}/{ref}"


# --- disks ---------------------------------------------------------------------------------------------

async def cmd_disks(d: DirectorClient, args: argparse.Namespace) -> int:
    params = {"orphaned": "true"} if args.orphaned else {}
    rows = await d.get_json("/disks", params=params)
    if args.json:
        return out_json(rows)
    for r in rows:
        r["size_mb"] = f"{r['size']} MB"
        stamp = r["orphaned_at"] if r["orphaned"] else r["created_at"]
        r["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"
    cols = [("cid", "Disk CID"), ("size_mb", "Size"), ("deployment", "Deployment"), ("instance", "Instance"),
            ("when", "Orphaned At" if args.orphaned else "Created At")]
    if not args.orphaned:
        cols.append(("orphaned", "Orphaned"))
    print(table(rows, cols))
    return EXIT_OK


async def cmd_delete_disk(d: DirectorClient, args: argparse.Namespace) -> int:
    return await start_task(d, "DELETE", f"/disks/{args.cid}", args)


# --- logs ----------------------------------------------------------------------------------------------

async def cmd_logs(d: DirectorClient, args: argparse.Namespace) -> int:
    path = instance_path(args)
    if args.follow:
        async with aclosing(d.stream(path + "/logs/follow")) as chunks:
            try:
                async for chunk in chunks:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
            except BrokenPipeError:   # piped into head and the like
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    params = {"type": "agent" if args.agent else "job"}
    if args.filters:
        params["filters"] = ",".join(args.filters)
    task_id = await d.start_task("POST", path + "/logs", params=params)
    print(f"Task {task_id}", file=sys.stderr)
    task = await d.follow(task_id)
    if task["state"] != "done":
        raise CLIError(f"task {task_id} {task['state']}: {task.get('result')}", EXIT_FAILED)
    res = json.loads(task["result"])
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    group, _, ref = args.instance.partition("/")
    dest = out_dir / f"{args.deployment}.{group}.{ref}.{params['type']}-{time.strftime('%Y%m%d-%H%M%S')}.tgz"
    sha1 = hashlib.sha1()
    with open(dest, "wb") as f:
        async with aclosing(d.stream(f"/resources/{res['blobstore_id']}", chunk_size=1 << 16)) as chunks:
            async for chunk in chunks:
                sha1.update(chunk)
                await asyncio.to_thread(f.write, chunk)
    if sha1.hexdigest() != res["sha1"]:
        dest.unlink(missing_ok=True)
        raise CLIError(f"the downloaded logs have sha1 {sha1.hexdigest()}, the agent said {res['sha1']}")
    print(dest.resolve())
    return EXIT_OK


# --- ssh -----------------------------------------------------------------------------------------------

async def cmd_ssh(d: DirectorClient, args: argparse.Namespace) -> int:
    """A one-time ed25519 key and user ``bosh_<random>`` (agent ``ssh setup``), the real ssh client with the
    VM's host key pinned, then ``ssh cleanup`` whatever happened."""
    path = instance_path(args) + "/ssh"
    user = f"bosh_{secrets.token_hex(5)}"
    missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        raise CLIError(f"bosh-lab ssh needs OpenSSH's client ({', '.join(missing)} not found): install "
                       "openssh-client, or run the CLI in the director container (workshop/bin/bosh-lab)")
    with tempfile.TemporaryDirectory(prefix="bosh-lab-ssh-") as tmp:
        key = Path(tmp) / "id_ed25519"
        p = await asyncio.to_thread(subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user,
                                                     "-f", str(key)], capture_output=True, text=True)
        if p.returncode != 0:
            raise CLIError(f"ssh-keygen failed: {p.stderr.strip()}")
        public = (Path(tmp) / "id_ed25519.pub").read_text().strip()
        setup = await d.send_json("POST", path, {"command": "setup", "user": user, "public_key": public})
        try:
            known = Path(tmp) / "known_hosts"
            known.write_text(f"{setup['ip']} {setup['host_public_key'].strip()}\n")
            cmd = ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                   "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
            if args.command_ is None and sys.stdin.isatty():
                cmd.append("-t")
            cmd.append(f"{user}@{setup['ip']}")
            if args.command_ is not None:
                cmd.append(args.command_)
            print(f"ssh {user}@{setup['ip']} ({args.instance})", file=sys.stderr)
            rc = (await asyncio.to_thread(subprocess.run, cmd)).returncode
        finally:
            try:
                await d.send_json("POST", path, {"command": "cleanup", "user_regex": f"^{user}$"})
            except DirectorClientError as e:
                print(f"ssh cleanup of {user} failed: {cli_error(e)}", file=sys.stderr)
    return rc


# --- any message ---------------------------------------------------------------------------------------

async def cmd_agent_message(d: DirectorClient, args: argparse.Namespace) -> int:
    arguments = []
    for a in args.arguments:
        try:
            arguments.append(json.loads(a))
        except ValueError:
            arguments.append(a)   # a bare word is a string
    reply = await d.send_json("POST", instance_path(args) + "/agent_message",
                              {"method": args.method, "arguments": arguments})
    print(json.dumps(reply, indent=None if args.json else 2))
    return EXIT_FAILED if "exception" in reply else EXIT_OK


COMMANDS: dict[str, Command] = {
    "disks": cmd_disks, "delete-disk": cmd_delete_disk, "logs": cmd_logs, "ssh": cmd_ssh,
    "agent-message": cmd_agent_message,
}


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    s = add("disks", "list persistent disks (--orphaned: only the orphaned ones)")
    s.add_argument("-o", "--orphaned", action="store_true")
    s = add("delete-disk", "delete an orphaned disk")
    s.add_argument("cid")
    s = add("logs", "download an instance's logs (prints the tarball's path) or follow them (-f)", deployment=True)
    s.add_argument("instance", help="GROUP/INDEX or GROUP/ID")
    s.add_argument("--agent", action="store_true", help="the agent's logs instead of the jobs'")
    s.add_argument("--dir", default=os.getcwd(), help="where to put the tarball (default: here)")
    s.add_argument("--filters", action="append", help="glob under the log dir (repeatable; default **/*)")
    s.add_argument("-f", "--follow", action="store_true", help="tail the job logs live (Ctrl-C to stop)")
    s = add("ssh", "ssh into an instance (a one-time user and key; -c runs one command)", deployment=True)
    s.add_argument("instance", help="GROUP/INDEX or GROUP/ID")
    s.add_argument("-c", "--command", dest="command_", metavar="COMMAND", help="command to run instead of a shell")
    s = add("agent-message", "send any message to an instance's agent and print its reply (debugging)",
            deployment=True)
    s.add_argument("instance", help="GROUP/INDEX or GROUP/ID")
    s.add_argument("method")
    s.add_argument("arguments", nargs="*", help="JSON values (a bare word is a string)")


__all__ = ["COMMANDS", "add_parsers"]
