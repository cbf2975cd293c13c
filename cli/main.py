"""``bosh-lab``: the lab's CLI for people and scripts. Verbs are named like the bosh CLI's; every listing takes
``--json`` (before or after the verb). It talks only to the director's HTTP API (BOSH_LAB_DIRECTOR, default
http://127.0.0.1:25555), except ``blobstore``, the deck's blobstore client console, which talks to the DAV
blobstore (BOSH_LAB_BLOBSTORE_ENDPOINT, default http://127.0.0.1:25250).

``watch`` follows what crosses NATS and the blobstore (``--replay FILE`` plays a recording back; Ctrl-C
ends it, exit 0; BOSH_LAB_SCREENCAST=1: times relative to the first line). ``blobstore [exists ID | get ID
FILE | put FILE | ls]``: no verb is the interactive console (``bsc.object_exists?("ID")`` and the like).

Exit codes (for scripts):
  0  done                               4  not found (deployment, instance, task, release)
  1  failed (a task's error, an error)  5  conflict (the deployment is locked by another task; task not running)
  2  usage (bad arguments, bad file)    6  cloud-check found problems (--report) / some left unresolved
  3  the director is unreachable        7  the task was cancelled
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from .client import DirectorClient, DirectorClientError
from .commands import ALIASES, COMMANDS, cmd_create_release
from .commands_agent import COMMANDS as AGENT_COMMANDS
from .commands_agent import add_parsers
from .commands_blobstore import COMMANDS as BLOBSTORE_COMMANDS
from .commands_blobstore import add_parsers as add_blobstore_parsers
from .commands_fault import COMMANDS as FAULT_COMMANDS
from .commands_fault import add_parsers as add_fault_parsers
from .commands_watch import COMMANDS as WATCH_COMMANDS
from .commands_watch import add_parsers as add_watch_parsers
from .errors import EXIT_USAGE, CLIError, cli_error
from .output import colour


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
    s.add_argument("--name", help="name of a release made from a directory (default: from config/final.yml)")
    s = add("create-release", "build a release tarball from a release directory, as bosh create-release does")
    s.add_argument("dir", nargs="?", default=".", help="the release directory (default: .)")
    s.add_argument("--tarball", help="where to write the tarball; ((version)) is replaced (default: "
                   "dev_releases/NAME/NAME-VERSION.tgz, or releases/... with --final)")
    s.add_argument("--version", default=None, help="the release's version (default: the next 0+dev.N, or the next "
                   "final version with --final, from dev_releases/NAME/index.yml and releases/NAME/index.yml)")
    s.add_argument("--name", help="the release's name (default: config/final.yml final_name or name, "
                   "else config/dev.yml dev_name)")
    s.add_argument("--force", action="store_true", help="build even when the git repository has uncommitted changes")
    s.add_argument("--final", action="store_true", help="a final release, recorded in releases/NAME/index.yml")
    s.add_argument("--blobs", action="append", help="another directory package files are looked up in")
    s.add_argument("--style", choices=["bosh", "lab"], default="bosh",
                   help="bosh (default): jobs and packages versioned by fingerprint, the build recorded in the "
                   "tree's index, as the bosh CLI; lab: they carry the release version (the deck's 2013 style), "
                   "nothing written into the tree")
    add("releases", "list releases")
    s = add("delete-release", "delete a release (NAME) or one version (NAME/VERSION)")
    s.add_argument("release")
    s.add_argument("--force", action="store_true", help="go on when a blob cannot be deleted")
    s = add("deploy", "deploy a manifest")
    s.add_argument("manifest", help="the deployment manifest (YAML); - reads it from stdin")
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
    add_parsers(add)   # disks, delete-disk, logs, ssh, agent-message
    add_watch_parsers(add)        # watch (GET /watch, --replay)
    add_blobstore_parsers(add)    # blobstore: the DAV blobstore's client console (not the director's API)
    add_fault_parsers(add)        # fault, faults: game-day fault verbs (POST/DELETE /faults)
    return p


async def run(args: argparse.Namespace) -> int:
    args.command = ALIASES.get(args.command, args.command)
    if args.command == "create-release":
        return await cmd_create_release(None, args)
    async with DirectorClient(args.environment, args.user, args.password) as d:
        try:
            verbs = {**COMMANDS, **AGENT_COMMANDS, **WATCH_COMMANDS, **BLOBSTORE_COMMANDS, **FAULT_COMMANDS}
            return await verbs[args.command](d, args)
        except DirectorClientError as e:
            raise cli_error(e) from None


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
