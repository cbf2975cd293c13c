"""``bosh-lab blobstore``: the deck's blobstore client console (slide 29), on the lab's DAV blobstore.

The deck runs ``blobstore_client_console -p dav -c blobstore.yml``, then ``bsc.object_exists?("ID")`` and
``File.open("redis-package.tgz", "w") { |f| bsc.get_file("ID", f) }``. Here::

    bosh-lab blobstore exists ID          # true / false (exit 0 / 1)
    bosh-lab blobstore get ID FILE        # streams the blob into FILE (never all in memory); FILE - is stdout
    bosh-lab blobstore put FILE           # a new blob, its id a uuid as the director makes them
    bosh-lab blobstore ls                 # every blob (the director's credentials only)
    bosh-lab blobstore [-c blobstore.yml] # no verb: the console, with the verbs and the deck's Ruby forms

It talks to the blobstore directly (``boshlab.dav``), not to the director: credentials ``--as agent``
(BLOBSTORE_AGENT_USER / BLOBSTORE_AGENT_PASSWORD, default agent/agent, the default) or ``--as director``
(BLOBSTORE_DIRECTOR_USER / BLOBSTORE_DIRECTOR_PASSWORD, default director/director), or those of ``-c FILE``;
the endpoint from ``--blobstore``, the file, BOSH_LAB_BLOBSTORE_ENDPOINT or http://127.0.0.1:25250. In the
director container (``docker compose exec director bosh-lab blobstore``) the environment names all of these.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from boshlab import safeyaml
from boshlab.dav import BlobEntry, BlobNotFound, BlobstoreDenied, BlobstoreError, DavClient, DavConfig, blob_path

from .client import DirectorClient
from .commands import Command
from .errors import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CLIError
from .output import colour, out_json, table

DEFAULT_ENDPOINT = "http://127.0.0.1:25250"
ROLES = {"agent": ("BLOBSTORE_AGENT_USER", "BLOBSTORE_AGENT_PASSWORD", "agent"),
         "director": ("BLOBSTORE_DIRECTOR_USER", "BLOBSTORE_DIRECTOR_PASSWORD", "director")}
VERBS = {"exists": 1, "get": 2, "put": 1, "ls": 0}
WELCOME = "Welcome to bosh-lab blobstore client console"
HELP = """\
  exists ID                 does the blob exist? (true / false)
  get ID FILE               download the blob into FILE (- : stdout)
  put FILE                  upload FILE as a new blob; prints its id
  ls                        list every blob (needs the director's credentials: --as director)
  bsc.object_exists?("ID")                                   the deck's Ruby forms
  bsc.get_file("ID", "FILE")
  File.open("FILE", "w") { |f| bsc.get_file("ID", f) }
  bsc.create("FILE")
  help                      this text
  exit                      leave (or Ctrl-D)"""

Config = dict[str, Any]


# --- configuration ---------------------------------------------------------------------------------------

def load_config_file(path: str) -> Config:
    """A blobstore.yml as the deck's (``endpoint``, ``user``, ``password``), at the top level or under
    ``options`` (``provider: dav`` / ``options:``, the bosh blobstore client's layout)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CLIError(f"{path}: {e.strerror or e}", EXIT_USAGE) from None
    try:
        doc = safeyaml.load(text, what=path)
    except safeyaml.YamlError as e:
        raise CLIError(str(e), EXIT_USAGE) from None
    if isinstance(doc, dict) and isinstance(doc.get("blobstore"), dict):
        doc = doc["blobstore"]
    if isinstance(doc, dict) and isinstance(doc.get("options"), dict):
        provider = doc.get("provider", "dav")
        if provider != "dav":
            raise CLIError(f"{path}: provider {provider!r}: only dav is supported", EXIT_USAGE)
        doc = doc["options"]
    if not isinstance(doc, dict):
        raise CLIError(f"{path}: expected a mapping with endpoint, user and password", EXIT_USAGE)
    return {k: doc[k] for k in ("endpoint", "user", "password") if doc.get(k) is not None}


def dav_config(args: argparse.Namespace) -> DavConfig:
    """Endpoint: --blobstore, -c FILE, BOSH_LAB_BLOBSTORE_ENDPOINT, the default. Credentials: --as ROLE
    (from the environment), else those of -c FILE, else the agent's."""
    conf = load_config_file(args.config) if args.config else {}
    endpoint = str(args.blobstore or conf.get("endpoint") or os.environ.get("BOSH_LAB_BLOBSTORE_ENDPOINT")
                   or DEFAULT_ENDPOINT)
    if args.role is None and "user" in conf:
        user, password = str(conf["user"]), str(conf.get("password", ""))
    else:
        user_var, password_var, default = ROLES[args.role or "agent"]
        user = os.environ.get(user_var) or default
        password = os.environ.get(password_var) or default
    try:
        return DavConfig.from_options({"endpoint": endpoint, "user": user, "password": password})
    except BlobstoreError as e:
        raise CLIError(str(e), EXIT_USAGE) from None


# --- errors ------------------------------------------------------------------------------------------------

def blob_error(e: Exception, cfg: DavConfig, listing: bool = False) -> CLIError:
    """The message and exit code of a blobstore error."""
    if isinstance(e, BlobNotFound):
        return CLIError(str(e), EXIT_NOT_FOUND)
    if isinstance(e, BlobstoreDenied):
        if listing:
            return CLIError(f"listing blobs needs the director's credentials (--as director); the blobstore "
                            f"refused user {cfg.user!r} ({e.status})", EXIT_FAILED)
        return CLIError(f"the blobstore refused user {cfg.user!r}: {e}", EXIT_FAILED)
    cause = e.__cause__
    if isinstance(cause, aiohttp.ClientConnectionError | TimeoutError | OSError):
        return CLIError(f"cannot reach the blobstore at {cfg.endpoint}: {e}", EXIT_UNREACHABLE)
    if isinstance(e, ValueError):
        return CLIError(str(e), EXIT_USAGE)
    return CLIError(str(e), EXIT_FAILED)


@contextlib.contextmanager
def translated(cfg: DavConfig, listing: bool = False) -> Iterator[None]:
    try:
        yield
    except (BlobstoreError, ValueError) as e:
        raise blob_error(e, cfg, listing) from None


# --- the operations ----------------------------------------------------------------------------------------

async def op_exists(dav: DavClient, blob_id: str) -> bool:
    with translated(dav.config):
        blob_path(blob_id)
        return await dav.exists(blob_id)


async def op_get(dav: DavClient, blob_id: str, dest: str) -> dict[str, Any]:
    if dest == "-":
        return await _get_to_stdout(dav, blob_id)
    parent = Path(dest).resolve().parent
    if not parent.is_dir():
        raise CLIError(f"{dest}: no such directory {parent}", EXIT_USAGE)
    with translated(dav.config):
        blob_path(blob_id)
        sha1 = await dav.get_file(blob_id, dest)
    return {"id": blob_id, "file": dest, "size": Path(dest).stat().st_size, "sha1": sha1}


async def _get_to_stdout(dav: DavClient, blob_id: str) -> dict[str, Any]:
    """``get ID -``: the blob on stdout, as it comes (so a blob reaches the host through ``docker compose
    exec``), never whole in memory; the writes go to a thread (a pipe may block)."""
    digest, size = hashlib.sha1(), 0
    out = sys.stdout.buffer
    with translated(dav.config):
        blob_path(blob_id)
        async for _, chunk in dav.stream(blob_id):
            if chunk:
                digest.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(out.write, chunk)
    await asyncio.to_thread(out.flush)
    return {"id": blob_id, "file": "-", "size": size, "sha1": digest.hexdigest()}


async def op_put(dav: DavClient, src: str) -> dict[str, Any]:
    if not Path(src).is_file():
        raise CLIError(f"{src}: no such file", EXIT_USAGE)
    with translated(dav.config):
        blob_id, sha1 = await dav.put_file(src)
    return {"id": blob_id, "file": src, "size": Path(src).stat().st_size, "sha1": sha1}


async def op_ls(dav: DavClient) -> list[BlobEntry]:
    with translated(dav.config, listing=True):
        return await dav.list_blobs()


def size_text(n: int | None) -> str:
    return "-" if n is None else str(n)


def show_ls(blobs: list[BlobEntry], as_json: bool) -> None:
    if as_json:
        out_json([{"id": b.id, "path": b.path, "size": b.size, "mtime": b.mtime} for b in blobs])
        return
    print(table([{"id": b.id, "size": size_text(b.size), "mtime": b.mtime or "-"} for b in blobs],
                [("id", "Blob ID"), ("size", "Size"), ("mtime", "Modified")]))
    print(f"\n{len(blobs)} blob{'s' if len(blobs) != 1 else ''}")


async def run_verb(dav: DavClient, verb: str, operands: list[str], as_json: bool) -> int:
    """One verb; its exit code (exists: 0 true, 1 false)."""
    if verb not in VERBS:
        raise CLIError(f"unknown blobstore verb {verb!r} (exists, get, put, ls)", EXIT_USAGE)
    if len(operands) != VERBS[verb]:
        usage = {"exists": "exists ID", "get": "get ID FILE", "put": "put FILE", "ls": "ls"}[verb]
        raise CLIError(f"usage: {usage}", EXIT_USAGE)
    if verb == "exists":
        found = await op_exists(dav, operands[0])
        if as_json:
            out_json({"id": operands[0], "exists": found})
        else:
            print("true" if found else "false")
        return EXIT_OK if found else EXIT_FAILED
    if verb == "get":
        got = await op_get(dav, operands[0], operands[1])
        if operands[1] == "-":    # stdout holds the blob: the summary goes to stderr
            print(f"{got['size']} bytes, sha1 {got['sha1']}", file=sys.stderr)
        elif as_json:
            out_json(got)
        else:
            print(f"{got['file']}: {got['size']} bytes, sha1 {got['sha1']}")
        return EXIT_OK
    if verb == "put":
        put = await op_put(dav, operands[0])
        if as_json:
            out_json(put)
        else:
            print(put["id"])
        return EXIT_OK
    show_ls(await op_ls(dav), as_json)
    return EXIT_OK


# --- the console ---------------------------------------------------------------------------------------

_S = r"""(["'])(.+?)\{n}"""      # a Ruby string literal; {n}: the group number of its quote


def _str(n: int) -> str:
    return _S.replace("{n}", str(n))


RUBY_EXISTS = re.compile(r"bsc\.(?:object_)?exists\?\(\s*" + _str(1) + r"\s*\)")
RUBY_GET = re.compile(r"bsc\.get_file\(\s*" + _str(1) + r"\s*,\s*" + _str(3) + r"\s*\)")
RUBY_FILE_OPEN = re.compile(r"File\.open\(\s*" + _str(1) + r"\s*,\s*([\"'])wb?\3\s*\)\s*(?:\{|do)\s*\|\s*(\w+)\s*\|"
                            r"\s*bsc\.get_file\(\s*" + _str(5) + r"\s*,\s*\4\s*\)\s*;?\s*(?:\}|end)")
RUBY_CREATE = re.compile(r"bsc\.create\(\s*(?:" + _str(1) + r"|File\.open\(\s*" + _str(3) + r"\s*\))\s*\)")


async def console_line(dav: DavClient, line: str, as_json: bool) -> None:
    """One console line: a verb or one of the deck's Ruby forms (irb-style ``=> value`` answers)."""
    if m := RUBY_EXISTS.fullmatch(line):
        print(f"=> {'true' if await op_exists(dav, m.group(2)) else 'false'}")
        return
    if m := RUBY_GET.fullmatch(line):
        got = await op_get(dav, m.group(2), m.group(4))
        print(f"wrote {got['file']}: {got['size']} bytes, sha1 {got['sha1']}\n=> nil")
        return
    if m := RUBY_FILE_OPEN.fullmatch(line):
        got = await op_get(dav, m.group(6), m.group(2))
        print(f"wrote {got['file']}: {got['size']} bytes, sha1 {got['sha1']}\n=> nil")
        return
    if m := RUBY_CREATE.fullmatch(line):
        put = await op_put(dav, m.group(2) or m.group(4))
        print(f'=> "{put["id"]}"')
        return
    if line.startswith(("bsc.", "File.")):
        raise CLIError(f"not understood: {line} (type help)", EXIT_USAGE)
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CLIError(f"{e}: {line}", EXIT_USAGE) from None
    await run_verb(dav, words[0], words[1:], as_json)


def read_line(prompt: str) -> str | None:
    """``input()``; None at end of input. Ctrl-C drops the line being typed (a new prompt), as irb does:
    while waiting here, SIGINT raises KeyboardInterrupt (asyncio's handler would only cancel the task, and
    only once input() returned)."""
    previous: Any = None
    with contextlib.suppress(ValueError):      # not the main thread: keep the handler as it is
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return input(prompt)
    except EOFError:
        return None
    except KeyboardInterrupt:
        print("^C")
        return ""
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


async def console(dav: DavClient, as_json: bool, read: Callable[[str], str | None] = read_line) -> int:
    print(WELCOME)
    print(f"You can use 'bsc' to access the blobstore client ({dav.config.endpoint} as {dav.config.user}); "
          "type help")
    while True:
        line = read("bsc> ")
        if line is None:
            print()
            return EXIT_OK
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("exit", "quit", "exit()", "quit()"):
            return EXIT_OK
        if line in ("help", "?", "help()"):
            print(HELP)
            continue
        try:
            await console_line(dav, line, as_json)
        except CLIError as e:
            print(colour(f"Error: {e}", "31"))
        sys.stdout.flush()


# --- the verb ------------------------------------------------------------------------------------------------

async def cmd_blobstore(d: DirectorClient, args: argparse.Namespace) -> int:
    cfg = dav_config(args)
    async with DavClient(cfg) as dav:
        if args.verb is None:
            if args.operands:
                raise CLIError("usage: bosh-lab blobstore [VERB [ARG...]]", EXIT_USAGE)
            return await console(dav, args.json)
        return await run_verb(dav, args.verb, args.operands, args.json)


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    s = add("blobstore", "the blobstore client console of the deck (slide 29): exists, get, put, ls")
    s.description = __doc__
    s.formatter_class = argparse.RawDescriptionHelpFormatter
    s.add_argument("verb", nargs="?", metavar="VERB", help="exists ID | get ID FILE | put FILE | ls "
                   "(none: the interactive console)")
    s.add_argument("operands", nargs="*", metavar="ARG")
    s.add_argument("--as", dest="role", choices=sorted(ROLES), default=None,
                   help="whose credentials: agent (BLOBSTORE_AGENT_USER/_PASSWORD, default agent/agent) or "
                        "director (BLOBSTORE_DIRECTOR_USER/_PASSWORD, default director/director); "
                        "default: -c FILE's, else the agent's")
    s.add_argument("-c", "--config", metavar="FILE", help="a blobstore.yml: endpoint, user, password "
                   "(top level or under options:)")
    s.add_argument("-p", "--provider", choices=["dav"], default="dav", help="the deck's -p dav (the only one)")
    s.add_argument("--blobstore", metavar="URL", default=None,
                   help=f"blobstore endpoint (env BOSH_LAB_BLOBSTORE_ENDPOINT, default {DEFAULT_ENDPOINT})")


COMMANDS: dict[str, Command] = {"blobstore": cmd_blobstore}
