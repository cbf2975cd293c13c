"""One lab for the whole test session: `docker compose up` under a project name of its own, with host
ports Docker picks, short heartbeats, and the workshop deploy of redis-solo. Torn down (volumes and the
director's VMs included) at the end, and checked to leave nothing behind."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cli.client import SyncDirectorClient, TaskStillRunning

ROOT = Path(__file__).resolve().parents[2]
LABEL_LAB = "io.bosh-lab.lab"


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@dataclass
class Lab:
    project: str
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    _client: SyncDirectorClient | None = field(default=None, repr=False)

    def compose(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "-p", self.project, *args], self.env, check, timeout)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['director']}"

    @property
    def director(self) -> SyncDirectorClient:
        """The director's API (cli/client.py); a new client when the director's published port changed."""
        if self._client is None or self._client.url != self.api:
            self.close()
            self._client = SyncDirectorClient(self.api, "admin", "admin", timeout=60)
        return self._client

    def nats_url(self) -> str:
        """The operator's NATS URL (people on the host): its password is made at the lab's first start and
        kept in the nats-auth volume, which VMs never see."""
        password = self.compose("exec", "-T", "nats", "cat", "/var/vcap/nats-auth/operator.password").stdout.strip()
        assert password, "the nats container has no operator password"
        return f"nats://nats:{password}@127.0.0.1:{self.ports['nats']}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(self, method: str, path: str, body: bytes | None = None, auth: tuple[str, str] | None = ("admin", "admin"),
                content_type: str = "application/json") -> tuple[int, bytes, dict[str, str]]:
        r = self.director.fetch(method, path, data=body, content_type=content_type if body is not None else None,
                                auth=auth if auth else False, check=False)
        return r.status, r.body, r.headers

    def get(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body!r}"
        return json.loads(body)

    def wait_task(self, task_id: int, timeout: float = 1200) -> dict[str, Any]:
        try:
            return self.director.wait_task(task_id, timeout=timeout, interval=1)
        except TaskStillRunning as e:
            raise AssertionError(str(e)) from None

    def deploy(self, manifest: str) -> dict[str, Any]:
        status, body, _ = self.request("POST", "/deployments", manifest.encode(), content_type="text/yaml")
        assert status == 202, body
        return self.wait_task(json.loads(body)["id"])

    def instance(self, deployment: str = "redis-solo", group: str = "redis") -> dict[str, Any]:
        rows: list[dict[str, Any]] = [r for r in self.get(f"/deployments/{deployment}/instances") if r["group"] == group]
        assert rows, f"no {group} instance in {deployment}"
        return rows[0]

    def vm_exec(self, cid: str, *cmd: str, check: bool = True) -> str:
        p = run(["docker", "exec", cid, *cmd], check=check)
        return p.stdout

    def agent_log(self, cid: str) -> str:
        return self.vm_exec(cid, "cat", "/var/vcap/bosh/log/current")

    def task_output(self, task_id: int, kind: str = "debug") -> str:
        return self.director.task_output(task_id, kind).data.decode()


def lab_containers(project: str) -> list[str]:
    out = run(["docker", "ps", "-aq", "--filter", f"label={LABEL_LAB}={project}"]).stdout.split()
    out += run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()
    return out


@pytest.fixture(scope="session")
def lab() -> Any:
    project = os.environ.get("BOSH_LAB_TEST_PROJECT", f"bosh-lab-test-{os.getpid()}")
    env = dict(os.environ, COMPOSE_PROJECT_NAME=project,
               BOSH_LAB_API_PUBLISH="127.0.0.1:", BOSH_LAB_NATS_PUBLISH="127.0.0.1:",
               BOSH_LAB_BLOBSTORE_PUBLISH="127.0.0.1:", BOSH_LAB_HEARTBEAT_INTERVAL="2",
               BOSH_LAB_POLL_INTERVAL="0.2", BOSH_LAB_AGENT_TIMEOUT="6",
               BOSH_LAB_AGENT_DRAIN_DEADLINE="30")   # the fault matrix's hanging drain ends within 30 s
    lab = Lab(project, env)
    started = time.monotonic()
    reuse = bool(os.environ.get("BOSH_LAB_TEST_REUSE"))  # run against a lab that is already up (development)
    try:
        if not reuse:
            lab.compose("up", "-d", "--build", "--wait", timeout=2400)
        for svc, port in (("director", 25555), ("nats", 4222), ("blobstore", 25250)):
            lab.ports[svc] = int(lab.compose("port", svc, str(port)).stdout.strip().rsplit(":", 1)[1])
        # workshop mode: the director uploads the sample release and deploys redis-solo by itself
        deadline = time.monotonic() + 1500
        deploy = None
        while time.monotonic() < deadline:
            tasks = lab.get("/tasks?limit=50")
            deploy = next((t for t in tasks if t["description"] == "create deployment" and t["deployment"] == "redis-solo"), None)
            failed = [t for t in tasks if t["state"] == "error" and not reuse]   # a reused lab has older failures
            assert not failed, f"workshop task failed: {failed}\n{lab.compose('logs', 'director', check=False).stdout[-4000:]}"
            if deploy and deploy["state"] == "done":
                break
            time.sleep(2)
        assert deploy and deploy["state"] == "done", f"workshop deploy did not finish: {deploy}"
        lab.env["BOSH_LAB_UP_SECONDS"] = f"{time.monotonic() - started:.1f}"
        yield lab
    finally:
        lab.close()
        if not (reuse or os.environ.get("BOSH_LAB_TEST_KEEP")):
            tear_down(lab, project)


def tear_down(lab: Lab, project: str) -> None:
    """Keep the director's log, bring the lab down, and check that nothing of it is left."""
    logs = lab.compose("logs", "--no-color", "director", check=False).stdout
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    (ROOT / ".pytest_cache" / "director.log").write_text(logs)
    lab.compose("down", "-v", "--remove-orphans", "--timeout", "60", check=False)
    left = lab_containers(project)
    assert not left, f"teardown left containers behind: {left}"
    for kind in ("volume", "network"):
        rest = run(["docker", kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()
        assert not rest, f"teardown left {kind}s behind: {rest}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The workshop tests first: they read the lab as the workshop deploy left it (its tasks are the newest);
    the workshop's chapters last: they redeploy redis-solo and inject faults into it."""
    e2e = Path(__file__).parent

    def order(item: pytest.Item) -> int:
        if item.path.parent != e2e or item.path.name == "test_workshop.py":
            return 0
        return 2 if item.path.name == "test_chapters.py" else 1
    items.sort(key=order)


@pytest.fixture(scope="session")
def dummy_release(lab: Lab) -> str:
    """The light test release (tests/assets/releases/dummy), uploaded once per session."""
    from boshlab.release import create_release
    out = ROOT / ".pytest_cache" / "dummy-release.tgz"
    out.parent.mkdir(exist_ok=True)
    create_release(ROOT / "tests" / "assets" / "releases" / "dummy", out)
    status, body, _ = lab.request("POST", "/releases", out.read_bytes(), content_type="application/x-compressed")
    assert status == 202, body
    task = lab.wait_task(json.loads(body)["id"])
    assert task["state"] == "done", task
    return "dummy"
