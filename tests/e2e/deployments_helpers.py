"""Helpers for the deployment tests: manifests of the light dummy release, task logs as data, the CLI."""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from .conftest import ROOT, Lab, run

T = TypeVar("T")
FAST_UPDATE = {"canaries": 1, "max_in_flight": 2, "canary_watch_time": "500-10000", "update_watch_time": "500-10000"}


def group(name: str, instances: int = 1, message: str = "hello", jobs: tuple[str, ...] = ("dummy",),
          **extra: Any) -> dict[str, Any]:
    return {"name": name, "instances": instances, "jobs": [{"name": j, "release": "dummy"} for j in jobs],
            "networks": [{"name": "default"}], "properties": {"dummy": {"message": message}}, **extra}


def manifest(name: str, groups: list[dict[str, Any]], update: dict[str, Any] | None = None,
             networks: list[dict[str, Any]] | None = None, properties: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(manifest_doc(name, groups, update, networks, properties), sort_keys=False)


def manifest_doc(name: str, groups: list[dict[str, Any]], update: dict[str, Any] | None = None,
                 networks: list[dict[str, Any]] | None = None, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return ({
        "name": name, "releases": [{"name": "dummy", "version": "latest"}],
        "update": {**FAST_UPDATE, **(update or {})},
        "networks": networks or [{"name": "default", "type": "dynamic"}],
        "compilation": {"workers": 2},
        "instance_groups": groups, "properties": properties or {}})


def post_deploy(lab: Lab, text: str, query: str = "") -> int:
    status, body, _ = lab.request("POST", "/deployments" + query, text.encode(), content_type="text/yaml")
    assert status == 202, body
    return int(json.loads(body)["id"])


def events(lab: Lab, task_id: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lab.task_output(task_id, "event").splitlines() if line.strip()]


def sent(lab: Lab, task_id: int) -> list[tuple[str, str, list[Any]]]:
    """(agent id, method, arguments) of every SENT: line of a task's debug log."""
    out = []
    for line in lab.task_output(task_id, "debug").splitlines():
        if "SENT: agent." in line:
            subject, _, payload = line.split("SENT: ", 1)[1].partition(" ")
            msg = json.loads(payload)
            out.append((subject.split(".", 1)[1], msg["method"], msg["arguments"]))
    return out


def methods_by_agent(lab: Lab, task_id: int, skip: tuple[str, ...] = ("get_task", "ping", "get_state")) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for agent, method, _ in sent(lab, task_id):
        if method not in skip:
            out.setdefault(agent, []).append(method)
    return out


def instances(lab: Lab, deployment: str, full: bool = False) -> list[dict[str, Any]]:
    return lab.get(f"/deployments/{deployment}/instances" + ("?format=full" if full else ""))  # type: ignore[no-any-return]


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r['group']}/{r['index']}": r for r in rows}


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def task_done_id(stderr: str) -> int:
    """The id in the `Task N done` line a CLI command wrote to stderr."""
    m = re.search(r"Task (\d+) done", stderr)
    assert m is not None, stderr
    return int(m.group(1))


def cli(lab: Lab, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "-e", lab.api, *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def vm_file(lab: Lab, cid: str, path: str) -> str:
    return run(["docker", "exec", cid, "cat", path], check=False).stdout


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 no Docker network uses (the test never hard-codes an address range)."""
    used = []
    for nid in run(["docker", "network", "ls", "-q"]).stdout.split():
        info = json.loads(run(["docker", "network", "inspect", nid]).stdout)[0]
        for cfg in (info.get("IPAM") or {}).get("Config") or []:
            try:
                used.append(ipaddress.ip_network(cfg.get("Subnet", ""), strict=False))
            except ValueError:
                pass
    for second in range(200, 250):
        for third in range(0, 256, 7):
            cand = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
            if not any(cand.overlaps(u) for u in used if isinstance(u, ipaddress.IPv4Network)):
                return cand
    raise AssertionError("no free /24 in 10.200-249.x")
