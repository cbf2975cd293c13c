"""``ssh(command, params)`` (sync), what ``bosh ssh`` asks of the agent (BOSH's agent ``ssh.go``):

* ``ssh("setup", {"user": "bosh_x", "public_key": "ssh-ed25519 AAAA... comment"})`` creates the user (home
  ``/var/vcap/bosh_ssh/<user>`` 0700, shell bash, groups vcap, admin, bosh_sudoers (sudo without a password)
  and bosh_sshers (the only group the stemcell's sshd lets in)), writes the key to ``~/.ssh/authorized_keys``
  (0600) and answers ``{"command": "setup", "status": "success", "ip": <the default network's IP>,
  "host_public_key": <the VM's ssh host key>}``;
* ``ssh("cleanup", {"user_regex": "^bosh_x"})`` removes every user the regex matches (searched, like Go's
  MatchString) whose home is under ``/var/vcap/bosh_ssh`` (root and vcap never), with its processes and home,
  and answers ``{"command": "cleanup", "status": "success"}``. (BOSH selects on the ``bosh_`` name prefix;
  the lab on the home dir ``ssh setup`` made.)

The user regex is the director's (from ``bosh ssh``: BOSH sends ``^bosh_<id>``), but a regex can be
catastrophic (``(a+)+$``) and Python's ``re`` holds the GIL while it matches, so a thread would not keep the
event loop free. So: at most ``MAX_REGEX_LENGTH`` (256) characters, compiled here (errors answer at once);
a plain prefix (``^`` then letters, digits, ``_``, ``-``) is matched here with ``startswith``; any other
regex is matched in a child Python process, killed after ``Ssh.match_timeout`` (5 s), which answers
``ssh cleanup: matching user_regex '<regex>' against N users took longer than 5 s`` and deletes nothing.

User names: letters, digits, ``_`` and ``-`` (not first), at most 32, not all digits. The public key must
be one ``<type> <base64> [comment]`` line whose data really is a key of that type. Every check happens
before anything changes; a failure after the user was made removes it again.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import sys
from typing import Any

from ..log import log
from ..settings import Settings
from ..users import UserError
from .base import Action, ActionError, Arg, json_type

GROUPS = ("vcap", "admin", "bosh_sudoers", "bosh_sshers")
PROTECTED = frozenset({"root", "vcap"})
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,31}")
_PREFIX = re.compile(r"\^([A-Za-z0-9_-]*)")
MAX_REGEX_LENGTH = 256
# The child: {"regex", "names"} on stdin -> the matching names (a JSON array) on stdout.
_MATCHER = ("import json, re, sys\n"
            "a = json.load(sys.stdin)\n"
            "r = re.compile(a['regex'])\n"
            "json.dump([n for n in a['names'] if r.search(n)], sys.stdout)\n")


def check_user_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ActionError(f"ssh setup: params.user must be a string, got {json_type(name)}")
    if not _USER.fullmatch(name):
        raise ActionError(f"ssh setup: user name {name!r} is not valid (letters, digits, '_' and '-', not "
                          f"starting with '-', at most 32)")
    if name.isdigit():
        raise ActionError(f"ssh setup: user name {name!r} must not be all digits")
    return name


def check_public_key(key: Any) -> str:
    """One ``<type> <base64> [comment]`` line whose base64 data is an ssh key of that type."""
    if not isinstance(key, str):
        raise ActionError(f"ssh setup: params.public_key must be a string, got {json_type(key)}")
    text = key.strip()
    if any(c in text for c in "\r\n\0"):
        raise ActionError("ssh setup: public_key must be a single line")
    parts = text.split()
    if len(parts) < 2:
        raise ActionError("ssh setup: public_key does not look like an ssh public key "
                          "(expected '<type> <base64 data> [comment]')")
    kind, data = parts[0], parts[1]
    if kind not in KEY_TYPES:
        raise ActionError(f"ssh setup: public_key type {kind[:40]!r} is not an ssh key type "
                          f"({', '.join(KEY_TYPES[:3])}, ...)")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ActionError("ssh setup: public_key data is not base64") from None
    n = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + n or blob[4:4 + n] != kind.encode():
        raise ActionError(f"ssh setup: public_key data is not a {kind} key")
    return text


async def match_users(pattern: str, names: list[str], timeout: float) -> list[str]:
    """The ``names`` ``pattern`` finds (re.search), within ``timeout`` seconds. The pattern must compile."""
    prefix = _PREFIX.fullmatch(pattern)
    if prefix is not None:
        return [n for n in names if n.startswith(prefix.group(1))]
    if not names:
        return []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", _MATCHER, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(json.dumps({"regex": pattern, "names": names}).encode())
    except TimeoutError:
        raise ActionError(f"ssh cleanup: matching user_regex {pattern!r} against {len(names)} users took longer "
                          f"than {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise ActionError(f"ssh cleanup: matching user_regex {pattern!r} failed: "
                          f"{err.decode(errors='replace')[-300:]}")
    matched = set(json.loads(out))
    return [n for n in names if n in matched]


def default_ip(settings: Settings) -> str:
    """The IP of the network that is the default gateway, else of the only (or first) network with an IP."""
    nets = settings.get("networks") or {}
    with_ip = [n for n in nets.values() if isinstance(n, dict) and isinstance(n.get("ip"), str) and n["ip"]]
    for n in with_ip:
        if "gateway" in (n.get("default") or []):
            return str(n["ip"])
    if with_ip:
        return str(with_ip[0]["ip"])
    raise ActionError("ssh setup: No default ip could be found in the settings' networks")


class Ssh(Action):
    name = "ssh"
    args = (Arg("ssh command", str), Arg("ssh params", dict))
    match_timeout = 5.0   # seconds for matching the cleanup regex against the users

    async def run(self, command: str, params: dict[str, Any]) -> dict[str, str]:
        if command == "setup":
            return await self.setup(params)
        if command == "cleanup":
            return await self.cleanup(params)
        raise ActionError(f"Unknown command for SSH method: {command[:40]!r} (expected setup or cleanup)")

    async def setup(self, params: dict[str, Any]) -> dict[str, str]:
        svc = self.services
        if "user" not in params:
            raise ActionError("ssh setup: params have no user")
        if "public_key" not in params:
            raise ActionError("ssh setup: params have no public_key")
        user, key = check_user_name(params["user"]), check_public_key(params["public_key"])
        if user in PROTECTED or svc.users.get(user) is not None:
            raise ActionError(f"ssh setup: user {user} already exists")
        ip = default_ip(svc.settings.settings)
        try:
            await svc.users.ensure_sshd()
        except UserError as e:
            raise ActionError(f"ssh setup: Starting sshd: {e}") from None
        try:
            host_key = svc.users.host_public_key()
        except UserError as e:
            raise ActionError(f"ssh setup: Getting host public key: {e}") from None
        try:
            entry = await svc.users.add(user, svc.paths.bosh_ssh, GROUPS)
        except UserError as e:
            raise ActionError(f"ssh setup: Creating user {user}: {e}") from None
        try:
            ssh_dir = entry.home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            keys = ssh_dir / "authorized_keys"
            with open(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(key + "\n")
            for p in (ssh_dir, keys):
                os.chown(p, entry.uid, entry.gid)
        except OSError as e:
            await svc.users.delete(user)
            raise ActionError(f"ssh setup: Setting ssh public key for {user}: {e}") from None
        log.info("ssh setup: user %s (groups %s), home %s", user, ",".join(GROUPS), entry.home)
        return {"command": "setup", "status": "success", "ip": ip, "host_public_key": host_key}

    async def cleanup(self, params: dict[str, Any]) -> dict[str, str]:
        svc = self.services
        pattern = params.get("user_regex")
        if pattern is None:
            raise ActionError("ssh cleanup: params have no user_regex")
        if not isinstance(pattern, str):
            raise ActionError(f"ssh cleanup: params.user_regex must be a string, got {json_type(pattern)}")
        if len(pattern) > MAX_REGEX_LENGTH:
            raise ActionError(f"ssh cleanup: user_regex {pattern[:40]!r}... is {len(pattern)} characters long, "
                              f"at most {MAX_REGEX_LENGTH} are allowed")
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as e:
            raise ActionError(f"ssh cleanup: user_regex {pattern!r} is not a valid regular expression: {e}") from None
        base = svc.paths.bosh_ssh
        candidates = [u.name for u in svc.users.all()
                      if u.home.parent == base and u.name not in PROTECTED and u.uid != 0]
        doomed = await match_users(pattern, candidates, self.match_timeout)
        for name in doomed:
            try:
                await svc.users.delete(name)
            except UserError as e:
                raise ActionError(f"ssh cleanup: Deleting user {name}: {e}") from None
            log.info("ssh cleanup: deleted user %s", name)
        if not doomed:
            log.info("ssh cleanup: no user under %s matches %r", base, pattern)
        return {"command": "cleanup", "status": "success"}
