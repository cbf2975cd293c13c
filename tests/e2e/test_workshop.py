"""Issue 2 end to end: the deck's redis-solo through boot -> ping -> drain -> stop -> apply -> start, with real
nats-server, nginx DAV, monit and Docker. Tests run in file order and share the one lab."""
from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from .conftest import ROOT, Lab

pytestmark = pytest.mark.e2e

STAMP = r"(\d{4}-\d{2}-\d{2}_\d{2}:\d{2}:\d{2}\.\d{5})"


def messages(log: str) -> list[tuple[datetime, str]]:
    """(svlogd time, method) of every `INFO: Message:` line of an agent log."""
    out = []
    for m in re.finditer(STAMP + r' #\[\d+\] INFO: Message: \{"method"=>"([a-z_]+)"', log):
        out.append((datetime.strptime(m.group(1), "%Y-%m-%d_%H:%M:%S.%f").replace(tzinfo=UTC), m.group(2)))
    return out


def redis_cli(lab: Lab, cid: str, port: int, password: str, *cmd: str) -> str:
    return lab.vm_exec(cid, "/var/vcap/packages/redis/bin/redis-cli", "-p", str(port), "-a", password,
                       "--no-auth-warning", *cmd, check=False).strip()


def redis_started_at(lab: Lab, cid: str) -> list[datetime]:
    """Every time redis-server logged that it started (its first line, ms resolution, UTC)."""
    log = lab.vm_exec(cid, "cat", "/var/vcap/sys/log/redis/redis.log", check=False)
    out = []
    for m in re.finditer(r"(\d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}) # oO0OoO0OoO0Oo Redis is starting", log):
        out.append(datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f").replace(tzinfo=UTC))
    return out


def test_redis_instance_is_running(lab: Lab) -> None:
    inst = lab.instance()
    assert inst["vm_cid"], inst
    deadline = time.monotonic() + 30
    while inst["process_state"] != "running" and time.monotonic() < deadline:
        time.sleep(1)
        inst = lab.instance()
    assert inst["process_state"] == "running"
    assert inst["configuration_hash"] and re.fullmatch(r"[0-9a-f]{40}", inst["configuration_hash"])


def test_redis_answers_with_the_decks_password(lab: Lab) -> None:
    cid = lab.instance()["vm_cid"]
    assert redis_cli(lab, cid, 6379, "r3d!s", "ping") == "PONG"
    assert "NOAUTH" in redis_cli(lab, cid, 6379, "wrong", "ping") or "WRONGPASS" in redis_cli(lab, cid, 6379, "wrong", "ping")


def test_agent_log_shows_boot_and_the_apply_sequence(lab: Lab) -> None:
    cid = lab.instance()["vm_cid"]
    log = lab.agent_log(cid)
    for line in ("INFO: Starting agent", "INFO: Configuring agent...", "INFO: Docker user data: ",
                 "INFO: loaded new infrastructure settings: {", "INFO: Heartbeat sent", "DEBUG: Heartbeat delivered"):
        assert line in log, f"{line!r} not in the agent log"
    assert re.search(STAMP + r' #\[\d+\] INFO: Message: \{"method"=>"ping", "arguments"=>\[\], "reply_to"=>"director\.[0-9a-f-]+\.[0-9a-f-]+\.[0-9a-f-]+"\}', log)
    methods = [m for _, m in messages(log) if m not in ("get_task", "get_state", "ping")]
    assert methods[:4] == ["drain", "stop", "apply", "start"], methods
    first_ping = [m for _, m in messages(log)].index("ping")
    assert first_ping < [m for _, m in messages(log)].index("drain")
    assert '"method"=>"drain", "arguments"=>["update", {' in log


def test_redis_did_not_run_between_apply_and_start(lab: Lab) -> None:
    cid = lab.instance()["vm_cid"]
    msgs = messages(lab.agent_log(cid))
    start_at = next(t for t, m in msgs if m == "start")
    apply_at = next(t for t, m in msgs if m == "apply")
    starts = redis_started_at(lab, cid)
    assert starts, "redis.log has no 'Redis is starting' line"
    assert all(s >= start_at for s in starts), (apply_at, start_at, starts)


def test_director_debug_log_has_sent_and_received(lab: Lab) -> None:
    tasks = lab.get("/tasks?limit=50")
    deploy = next(t for t in tasks if t["description"] == "create deployment" and t["state"] == "done")
    debug = lab.task_output(deploy["id"], "debug")
    sent = re.findall(r"SENT: agent\.[0-9a-f-]+ (\{.*\})", debug)
    methods = [json.loads(s)["method"] for s in sent]
    assert "compile_package" in methods or "package redis/" in debug  # compiled now, or reused from the cache
    order = [m for m in methods if m in ("drain", "stop", "apply", "start")]
    assert order[-4:] == ["drain", "stop", "apply", "start"]
    apply = next(json.loads(s) for s in sent if json.loads(s)["method"] == "apply")
    assert apply["protocol"] == 3
    spec = apply["arguments"][0]
    assert spec["deployment"] == "redis-solo"
    assert spec["job"]["name"] == "redis" and spec["job"]["templates"][0]["name"] == "redis"
    assert spec["packages"]["redis"]["version"].startswith("1.")
    assert spec["properties"] == {"redis": {"port": 6379, "password": "r3d!s"}}
    assert re.fullmatch(r"[0-9a-f]{40}", spec["template_hashes"]["redis"])
    assert "RECEIVED: director." in debug


def test_blobstore_refuses_anonymous_and_agent_delete(lab: Lab) -> None:
    base = f"http://127.0.0.1:{lab.ports['blobstore']}"

    def call(method: str, path: str, user: str | None, data: bytes | None = None) -> int:
        req = urllib.request.Request(base + path, data=data, method=method)
        if user:
            req.add_header("Authorization", "Basic " + b64encode(f"{user}:{user}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status: int = r.status
                return status
        except urllib.error.HTTPError as e:
            return e.code
    path = "/ab/e2e-test-blob"
    assert call("PUT", path, None, b"x") == 401
    assert call("PUT", path, "agent", b"x") in (201, 204)
    assert call("GET", path, None) == 401
    assert call("GET", path, "agent") == 200
    assert call("DELETE", path, "agent") in (401, 403)
    assert call("DELETE", path, "director") == 204


async def test_nats_refuses_anonymous(lab: Lab) -> None:
    url = f"nats://127.0.0.1:{lab.ports['nats']}"
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
    nc = await nats.connect(lab.nats_url(), allow_reconnect=False)
    await nc.close()


async def test_agent_answers_bad_messages_and_lives_on(lab: Lab) -> None:
    inst = lab.instance()
    nc = await nats.connect(lab.nats_url())
    try:
        subject = f"agent.{inst['agent_id']}"

        async def ask(payload: dict[str, Any]) -> dict[str, Any]:
            inbox = f"director.lab-test.{uuid.uuid4()}"   # agents may only reply under director.>
            sub = await nc.subscribe(inbox)
            await nc.publish(subject, json.dumps(dict(payload, reply_to=inbox)).encode())
            msg = await sub.next_msg(timeout=10)
            await sub.unsubscribe()
            reply: dict[str, Any] = json.loads(msg.data)
            return reply
        assert (await ask({"method": "no_such_thing", "arguments": []})) == {"exception": {"message": "unknown message no_such_thing"}}
        bad = await ask({"protocol": 3, "method": "apply", "arguments": []})
        assert "exception" in bad and "argument" in bad["exception"]["message"].lower()
        bad = await ask({"protocol": 3, "method": "apply", "arguments": ["not a spec"]})
        assert "exception" in bad
        await nc.publish(subject, b"{this is not json")
        assert (await ask({"protocol": 3, "method": "ping", "arguments": []})) == {"value": "pong"}
    finally:
        await nc.close()
    cid = inst["vm_cid"]
    assert redis_cli(lab, cid, 6379, "r3d!s", "ping") == "PONG"


def test_redeploy_with_overrides_moves_redis(lab: Lab) -> None:
    cid = lab.instance()["vm_cid"]
    before = len(messages(lab.agent_log(cid)))
    t0 = time.monotonic()
    task = lab.deploy((ROOT / "workshop" / "manifests" / "redis-solo-overrides.yml").read_text())
    took = time.monotonic() - t0
    assert task["state"] == "done", task
    assert lab.instance()["vm_cid"] == cid, "the VM must be updated in place, not recreated"
    assert redis_cli(lab, cid, 7000, "supersecret", "ping") == "PONG"
    assert redis_cli(lab, cid, 6379, "r3d!s", "ping") != "PONG"
    after = messages(lab.agent_log(cid))[before:]
    order = [m for _, m in after if m in ("drain", "stop", "apply", "start")]
    assert order == ["drain", "stop", "apply", "start"], order
    start_at = next(t for t, m in after if m == "start")
    assert max(redis_started_at(lab, cid)) >= start_at
    conf = lab.vm_exec(cid, "cat", "/var/vcap/jobs/redis/config/redis.conf")
    assert "port 7000\n" in conf and "requirepass supersecret\n" in conf
    print(f"override redeploy took {took:.1f}s")


def test_deploying_the_same_manifest_again_touches_nothing(lab: Lab) -> None:
    cid = lab.instance()["vm_cid"]
    before = len(messages(lab.agent_log(cid)))
    task = lab.deploy((ROOT / "workshop" / "manifests" / "redis-solo-overrides.yml").read_text())
    assert task["state"] == "done", task
    after = [m for _, m in messages(lab.agent_log(cid))[before:]]
    assert not {"drain", "stop", "apply", "start"} & set(after), after


def test_missing_property_fails_before_touching_redis(lab: Lab, tmp_path: Path) -> None:
    """A release whose template needs a property with no default: the deploy fails naming it, and the
    running redis keeps answering on its port."""
    src = tmp_path / "release"
    shutil.copytree(ROOT / "workshop" / "release", src)
    (src / "config" / "final.yml").write_text("name: redis-needs-maxmemory\n")
    spec = src / "jobs" / "redis" / "spec"
    spec.write_text(spec.read_text() + "  redis.maxmemory:\n    description: required, no default\n")
    conf = src / "jobs" / "redis" / "templates" / "config" / "redis.conf.erb"
    conf.write_text(conf.read_text() + 'maxmemory <%= p("redis.maxmemory") %>\n')
    blobs = tmp_path / "blobs" / "redis"
    blobs.mkdir(parents=True)
    (blobs / "redis_0.0.orig.tar.gz").write_bytes(b"not used: rendering fails before compilation")
    from boshlab.release import create_release
    create_release(src, tmp_path / "r.tgz", blob_dirs=[tmp_path / "blobs"])
    status, body, _ = lab.request("POST", "/releases", (tmp_path / "r.tgz").read_bytes(), content_type="application/x-compressed")
    assert status == 202, body
    assert lab.wait_task(json.loads(body)["id"])["state"] == "done"
    cid = lab.instance()["vm_cid"]
    before = len(messages(lab.agent_log(cid)))
    manifest = (ROOT / "workshop" / "manifests" / "redis-solo-overrides.yml").read_text()
    manifest = manifest.replace("- name: redis\n  version: latest", "- name: redis-needs-maxmemory\n  version: latest")
    manifest = manifest.replace("release: redis\n", "release: redis-needs-maxmemory\n")
    task = lab.deploy(manifest)
    assert task["state"] == "error"
    assert "redis.maxmemory" in task["result"] and "config/redis.conf.erb" in task["result"], task["result"]
    assert redis_cli(lab, cid, 7000, "supersecret", "ping") == "PONG"
    assert not [m for _, m in messages(lab.agent_log(cid))[before:] if m in ("drain", "stop", "apply", "start")]
