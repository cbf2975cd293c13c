"""ssh: setup makes a real-looking user (home under bosh_ssh, groups, authorized_keys 0600) and answers
BOSH's shape; cleanup removes only bosh_ssh users the regex matches; bad input changes nothing."""
import asyncio
import base64
import os
import stat
import time
from pathlib import Path
from typing import Any, cast

import pytest

from agent.action.ssh import MAX_REGEX_LENGTH, Ssh, default_ip
from agent.settings import NetworkSpec, Settings

from .conftest import HOST_KEY, FakeUsers, call, snapshot


def key(kind: str = 'ssh-ed25519', comment: str = 'me@laptop', body: bytes | None = None) -> str:
    def s(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b
    blob = body if body is not None else s(kind.encode()) + s(os.urandom(32))
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip()


PUBLIC_KEY = key()


async def test_setup_creates_the_user_and_answers_like_bosh(services: Any, users: FakeUsers) -> None:
    reply = await call(services, "ssh", ["setup", {"user": "bosh_a1b2", "public_key": PUBLIC_KEY + "\n"}])
    assert reply == {"value": {"command": "setup", "status": "success", "ip": "172.18.0.5",
                               "host_public_key": HOST_KEY}}
    entry = users.get("bosh_a1b2")
    assert entry is not None
    assert entry.home == services.paths.bosh_ssh / "bosh_a1b2"
    assert users.groups["bosh_a1b2"] == ("vcap", "admin", "bosh_sudoers", "bosh_sshers")
    ssh_dir = entry.home / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "authorized_keys").stat().st_mode) == 0o600
    assert (ssh_dir / "authorized_keys").read_text() == PUBLIC_KEY + "\n"


@pytest.mark.parametrize("params,message", [
    ({}, "ssh setup: params have no user"),
    ({"user": "bosh_x"}, "ssh setup: params have no public_key"),
    ({"user": 5, "public_key": PUBLIC_KEY}, "params.user must be a string, got an integer"),
    ({"user": "", "public_key": PUBLIC_KEY}, "user name '' is not valid"),
    ({"user": "-rf", "public_key": PUBLIC_KEY}, "user name '-rf' is not valid"),
    ({"user": "a b", "public_key": PUBLIC_KEY}, "user name 'a b' is not valid"),
    ({"user": "../x", "public_key": PUBLIC_KEY}, "user name '../x' is not valid"),
    ({"user": "x" * 33, "public_key": PUBLIC_KEY}, "is not valid"),
    ({"user": "12345", "public_key": PUBLIC_KEY}, "must not be all digits"),
    ({"user": "root", "public_key": PUBLIC_KEY}, "ssh setup: user root already exists"),
    ({"user": "vcap", "public_key": PUBLIC_KEY}, "ssh setup: user vcap already exists"),
    ({"user": "bosh_x", "public_key": None}, "params.public_key must be a string, got null"),
    ({"user": "bosh_x", "public_key": ""}, "public_key does not look like an ssh public key"),
    ({"user": "bosh_x", "public_key": "hello"}, "public_key does not look like an ssh public key"),
    ({"user": "bosh_x", "public_key": "ssh-foo AAAA"}, "public_key type 'ssh-foo' is not an ssh key type"),
    ({"user": "bosh_x", "public_key": 'command="sh" ' + PUBLIC_KEY}, "is not an ssh key type"),
    ({"user": "bosh_x", "public_key": "ssh-ed25519 !!!notbase64"}, "public_key data is not base64"),
    ({"user": "bosh_x", "public_key": key("ssh-rsa", body=base64.b64decode(PUBLIC_KEY.split()[1]))},
     "public_key data is not a ssh-rsa key"),
    ({"user": "bosh_x", "public_key": PUBLIC_KEY + "\n" + PUBLIC_KEY}, "public_key must be a single line"),
])
async def test_bad_setup_params_name_the_problem_and_change_nothing(services: Any, users: FakeUsers,
                                                                    params: dict[str, Any],
                                                                  message: str) -> None:
    before = snapshot(services.paths.base)
    reply = await call(services, "ssh", ["setup", params])
    assert reply["exception"]["message"].startswith("Action Failed ssh: ")
    assert message in reply["exception"]["message"]
    assert users.calls == [] and snapshot(services.paths.base) == before


async def test_no_host_key_or_no_ip_fails_before_the_user_is_made(services: Any, users: FakeUsers) -> None:
    users.host_key = None
    reply = await call(services, "ssh", ["setup", {"user": "bosh_x", "public_key": PUBLIC_KEY}])
    assert "Getting host public key: no ssh host public key" in reply["exception"]["message"]
    users.host_key = HOST_KEY
    services.settings.settings["networks"] = {}
    reply = await call(services, "ssh", ["setup", {"user": "bosh_x", "public_key": PUBLIC_KEY}])
    assert "No default ip could be found" in reply["exception"]["message"]
    assert users.calls == []


async def test_useradd_failure(services: Any, users: FakeUsers) -> None:
    users.fail["add"] = "`useradd ...` exited with 6: group 'bosh_sshers' does not exist"
    reply = await call(services, "ssh", ["setup", {"user": "bosh_x", "public_key": PUBLIC_KEY}])
    assert "ssh setup: Creating user bosh_x: `useradd ...` exited with 6" in reply["exception"]["message"]


async def test_cleanup_removes_matching_bosh_ssh_users_only(services: Any, users: FakeUsers) -> None:
    for name in ("bosh_a", "bosh_b", "keep_me"):
        await call(services, "ssh", ["setup", {"user": name, "public_key": PUBLIC_KEY}])
    await users.add("bosh_elsewhere", services.paths.base / "home", ["vcap"])   # not made by ssh setup
    users.calls.clear()
    reply = await call(services, "ssh", ["cleanup", {"user_regex": "^bosh_|root|vcap"}])
    assert reply == {"value": {"command": "cleanup", "status": "success"}}
    assert users.calls == ["delete bosh_a", "delete bosh_b"]
    assert set(users.users) == {"root", "vcap", "keep_me", "bosh_elsewhere"}
    assert sorted(os.listdir(services.paths.bosh_ssh)) == ["keep_me"]
    assert await call(services, "ssh", ["cleanup", {"user_regex": "nobody"}]) == \
        {"value": {"command": "cleanup", "status": "success"}}


@pytest.mark.parametrize("args,message", [
    (["cleanup", {}], "ssh cleanup: params have no user_regex"),
    (["cleanup", {"user_regex": ["x"]}], "params.user_regex must be a string, got an array"),
    (["cleanup", {"user_regex": "(unclosed"}], "user_regex '(unclosed' is not a valid regular expression"),
    (["cleanup", {"user_regex": "^bosh_" + "x" * 251}], "is 257 characters long, at most 256 are allowed"),
    (["reboot", {}], "Unknown command for SSH method: 'reboot' (expected setup or cleanup)"),
    (["setup"], "Not enough arguments, expected 2, got 1"),
    (["setup", "user=x"], "argument 2 (ssh params) must be an object, got a string"),
])
async def test_bad_cleanup_and_commands(services: Any, users: FakeUsers, args: list[Any], message: str) -> None:
    reply = await call(services, "ssh", args)
    assert message in reply["exception"]["message"]
    assert users.calls == []


@pytest.mark.parametrize("networks,ip", [
    ({"a": {"ip": "10.0.0.2"}, "b": {"ip": "10.0.0.3", "default": ["dns", "gateway"]}}, "10.0.0.3"),
    ({"only": {"ip": "10.0.0.9", "default": []}}, "10.0.0.9"),
    ({"noip": {"type": "dynamic"}, "x": {"ip": "10.1.1.1"}}, "10.1.1.1"),
])
def test_default_ip(networks: dict[str, NetworkSpec], ip: str) -> None:
    assert default_ip(cast(Settings, {"networks": networks})) == ip


async def test_a_plain_prefix_regex_as_bosh_sends_it(services: Any, users: FakeUsers) -> None:
    for name in ("bosh_a1", "bosh_a2", "bosh_b", "xbosh_a"):
        await users.add(name, services.paths.bosh_ssh, ["vcap"])
    users.calls.clear()
    assert await call(services, "ssh", ["cleanup", {"user_regex": "^bosh_a"}]) == \
        {"value": {"command": "cleanup", "status": "success"}}
    assert users.calls == ["delete bosh_a1", "delete bosh_a2"]
    assert await call(services, "ssh", ["cleanup", {"user_regex": "_a$|^bosh_b"}]) == \
        {"value": {"command": "cleanup", "status": "success"}}
    assert users.calls[2:] == ["delete bosh_b", "delete xbosh_a"]


def matcher_children() -> list[int]:
    """Our child processes that are the regex matcher (alive, not zombies)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat_ = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        fields = stat_.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"r.search(n)" in cmd:
            found.append(int(proc.name))
    return found


async def test_a_catastrophic_regex_is_cut_off_and_the_agent_keeps_answering(
        services: Any, users: FakeUsers, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Ssh.match_timeout == 5.0 and MAX_REGEX_LENGTH == 256
    monkeypatch.setattr(Ssh, "match_timeout", 1.0)
    # (a+)+$ against "aaa...a-N" backtracks 2^24 ways per name: seconds each, on the event loop of old
    for i in range(10):
        await users.add("a" * 24 + f"-{i}", services.paths.bosh_ssh, ["vcap"])
    users.calls.clear()
    start = time.monotonic()
    cleanup = asyncio.create_task(call(services, "ssh", ["cleanup", {"user_regex": "(a+)+$"}]))
    await asyncio.sleep(0.3)
    before_ping = time.monotonic()
    assert await call(services, "ping") == {"value": "pong"}
    assert time.monotonic() - before_ping < 0.5          # the loop is free while the regex runs
    reply = await asyncio.wait_for(cleanup, 15)
    assert time.monotonic() - start < 4
    assert reply == {"exception": {"message": "Action Failed ssh: ssh cleanup: matching user_regex '(a+)+$' "
                                              "against 10 users took longer than 1 s"}}
    assert users.calls == []
    assert matcher_children() == []                      # the matcher was killed, not left burning a core
    assert await call(services, "ping") == {"value": "pong"}
