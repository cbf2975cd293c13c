"""Issue 9: `bosh-lab watch --json`, run as a person runs it (the CLI in its own process against the lab's
director), records a redeploy that changes properties: drain, stop, apply, start of redis/0 in that order,
each paired with its reply, the apply's blob downloads by redis/0, nothing of other deployments."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, Lab

pytestmark = pytest.mark.e2e
DEPLOYMENT = "watch-e2e"
SEQUENCE = ["drain", "stop", "apply", "start"]


def manifest(port: int, password: str) -> str:
    text = (ROOT / "workshop" / "manifests" / "redis-solo-overrides.yml").read_text()
    text = text.replace("name: redis-solo", f"name: {DEPLOYMENT}", 1)
    text = text.replace("port: 7000", f"port: {port}").replace("password: supersecret", f"password: {password}")
    return text.replace("canary_watch_time: 1000-30000", "canary_watch_time: 200-30000") \
               .replace("update_watch_time: 1000-30000", "update_watch_time: 200-30000")


def watch_json(lab: Lab, out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BOSH_LAB_DIRECTOR=lab.api, BOSH_LAB_USER="admin", BOSH_LAB_PASSWORD="admin")
    return subprocess.Popen([sys.executable, "-m", "cli", "watch", "--json", *args], cwd=ROOT, env=env,
                            stdout=out.open("wb"), stderr=subprocess.PIPE)


def stop(p: subprocess.Popen[bytes]) -> str:
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    assert p.returncode == 0, err
    return err.decode()


def _complete(out: Path) -> bool:
    events = []
    for line in out.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass                                     # the line being written
    return (any(e["kind"] == "reply" and e.get("method") == "start" for e in events)
            and any(e["kind"] == "blob" and e.get("src") == "redis/0" for e in events))


@pytest.fixture(scope="module")
def recorded(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    task = lab.deploy(manifest(7001, "first"))
    assert task["state"] == "done", task
    out = tmp_path_factory.mktemp("watch") / "redeploy.jsonl"
    p = watch_json(lab, out, "-d", DEPLOYMENT)
    time.sleep(1.5)                                  # the stream is open before the redeploy starts
    try:
        task = lab.deploy(manifest(7002, "second"))
        assert task["state"] == "done", task
        # The last replies, and the blob lines (the director tails nginx's log), reach the reader soon after the
        # task ends; on a loaded machine later. Wait for the start's reply and a blob GET by redis/0 (or give up
        # after a deadline and let the tests below say what is missing).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _complete(out):
            time.sleep(0.5)
        time.sleep(0.5)
    finally:
        err = stop(p)
    lines = out.read_text().splitlines()
    assert lines, f"watch wrote nothing: {err}"
    yield [json.loads(line) for line in lines]
    lab.request("DELETE", f"/deployments/{DEPLOYMENT}")


def test_watch_shows_drain_stop_apply_start_in_order_each_paired(recorded: list[dict[str, Any]]) -> None:
    replies = [e for e in recorded if e["kind"] == "reply" and e.get("instance") == "redis/0"
               and e.get("method") in SEQUENCE]
    assert [e["method"] for e in replies] == SEQUENCE, [e["method"] for e in replies]
    requests = {e["call"]: e for e in recorded if e["kind"] == "request"}
    for reply in replies:
        assert reply["state"] == "done", reply
        request = requests.get(reply["call"])
        assert request is not None, f"{reply['method']}'s reply has no request in the stream"
        assert request["seq"] < reply["seq"] and request["method"] == reply["method"]
        assert request["subject"].startswith("agent.") and reply["latency_ms"] > 0
    seqs = [e["seq"] for e in recorded]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_get_task_polling_is_folded_into_the_long_running_apply(recorded: list[dict[str, Any]]) -> None:
    apply = next(e for e in recorded if e["kind"] == "reply" and e.get("method") == "apply")
    assert apply["agent_task_id"], apply
    assert any(e["kind"] == "progress" and e["call"] == apply["call"] for e in recorded)
    assert not [e for e in recorded if e.get("method") == "get_task" and e.get("instance") == "redis/0"], \
        "get_task polls of the deploy's own actions show as separate lines"
    assert isinstance(apply.get("polls"), int)
    assert apply["arguments"][0]["deployment"] == DEPLOYMENT, "the reply carries its request's apply spec"


def test_the_apply_downloads_its_blobs_and_watch_names_who(recorded: list[dict[str, Any]]) -> None:
    apply_req = next(e for e in recorded if e["kind"] == "request" and e.get("method") == "apply")
    apply_reply = next(e for e in recorded if e["kind"] == "reply" and e.get("call") == apply_req["call"])
    # The recording began after the first deploy had finished: every GET in it was made for this redeploy. A
    # blob event's ts is nginx's (when the GET was logged); a request's is when the director's tap handled it,
    # which on a loaded machine can be later than the agent's download: compare with a margin.
    margin = 2.0
    gets = [e for e in recorded if e["kind"] == "blob" and e["blob"]["method"] == "GET" and e["src"] == "redis/0"]
    assert gets, "no blob GET by redis/0 during the redeploy"
    for g in gets:
        assert apply_req["ts"] - margin <= g["ts"] <= apply_reply["ts"] + margin, (g, apply_req["ts"], apply_reply["ts"])
    job_blob = apply_req["arguments"][0]["job"]["templates"][0]["blobstore_id"]
    assert job_blob in [g["blob"]["id"] for g in gets], "the new rendered job's blob was not downloaded"
    for g in gets:
        assert g["blob"]["status"] == 200 and g["blob"]["bytes"] > 0 and g["dst"] == "blobstore"
        assert g["deployment"] == DEPLOYMENT


def test_the_deployment_filter_keeps_other_deployments_out(recorded: list[dict[str, Any]]) -> None:
    assert {e.get("deployment") for e in recorded if e["kind"] in ("request", "reply", "blob")} == {DEPLOYMENT}
