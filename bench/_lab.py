"""What the bench scripts share: a lab of their own (compose project), the director's API (cli/client.py),
and measurements from the host: a process's CPU time (/proc/<pid>/stat) and a container's memory (cgroup v1
or v2).

``python -m bench`` runs several figures on **one** lab: a figure that needs a running lab with the workshop's
redis-solo asks for it with :func:`workshop_lab` (the run's shared lab, brought up on first use and torn down
by ``python -m bench`` at the end); a script run on its own gets a lab of its own, torn down when it is done."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli.client import SyncDirectorClient, TaskStillRunning  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOCKER_TIMEOUT = 120       # seconds for a docker CLI call that is not a build or a compose up/down


class BenchLab:
    def __init__(self, project: str, **env: str) -> None:
        self.project = project
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "BOSH_LAB_API_PUBLISH": "127.0.0.1:",
                    "BOSH_LAB_NATS_PUBLISH": "127.0.0.1:", "BOSH_LAB_BLOBSTORE_PUBLISH": "127.0.0.1:",
                    "BOSH_LAB_WORKSHOP": "0", **env}
        self.api = ""
        self._client: SyncDirectorClient | None = None

    @property
    def director(self) -> SyncDirectorClient:
        """The director's API at ``self.api`` (a new client when it changed)."""
        if self._client is None or self._client.url != self.api.rstrip("/"):
            self.close()
            self._client = SyncDirectorClient(self.api, "admin", "admin", timeout=120)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def compose(self, *args: str, timeout: float = 3600) -> str:
        p = subprocess.run(["docker", "compose", "-p", self.project, *args], cwd=ROOT, env=self.env, text=True,
                           capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise SystemExit(f"docker compose {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p.stdout

    def up(self) -> None:
        """``docker compose up`` (images built first unless BOSH_LAB_BENCH_BUILD=0: use the images as they are)."""
        build = ["--build"] if self.env.get("BOSH_LAB_BENCH_BUILD", "1") != "0" else []
        self.compose("up", "-d", *build, "--wait", timeout=1800)
        self.api = "http://127.0.0.1:" + self.port("director", 25555)

    def port(self, service: str, port: int) -> str:
        return self.compose("port", service, str(port), timeout=DOCKER_TIMEOUT).strip().rsplit(":", 1)[1]

    def nats_url(self) -> str:
        """The operator's NATS URL (its password lives in the nats-auth volume)."""
        password = self.compose("exec", "-T", "nats", "cat", "/var/vcap/nats-auth/operator.password",
                                timeout=DOCKER_TIMEOUT).strip()
        return f"nats://nats:{password}@127.0.0.1:{self.port('nats', 4222)}"

    def blobstore_url(self) -> str:
        return "http://127.0.0.1:" + self.port("blobstore", 25250)

    def down(self) -> float:
        self.close()
        t = time.monotonic()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "120", timeout=900)
        return time.monotonic() - t

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> Any:
        """The director's JSON answer; an error answer raises cli.client.DirectorError."""
        return self.director.send(method, path, body, content_type=ctype if body is not None else None)

    def task_output(self, task_id: int, kind: str = "event") -> str:
        return self.director.task_output(task_id, kind).text

    def wait_task(self, task_id: int, timeout: float = 3600, interval: float = 0.2) -> dict[str, Any]:
        try:
            return self.director.wait_task(task_id, timeout=timeout, interval=interval)
        except TaskStillRunning as e:
            raise SystemExit(str(e)) from None

    def task_ok(self, task: dict[str, Any], interval: float = 0.2) -> dict[str, Any]:
        t = self.wait_task(int(task["id"]), interval=interval)
        if t["state"] != "done":
            raise SystemExit(f"task {t['id']} {t['state']}: {t['result']}")
        return t

    def upload_dummy(self) -> None:
        """Upload the tests' dummy release (once per lab)."""
        if self.has_release("dummy"):
            return
        from boshlab.release import create_release
        out = ROOT / ".pytest_cache" / f"{self.project}-dummy.tgz"
        out.parent.mkdir(exist_ok=True)
        create_release(ROOT / "tests" / "assets" / "releases" / "dummy", out)
        self.task_ok(self.request("POST", "/releases", out.read_bytes(), "application/x-compressed"))

    def has_release(self, name: str) -> bool:
        return any(r["name"] == name for r in self.request("GET", "/releases"))

    def instances(self, deployment: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.request("GET", f"/deployments/{deployment}/instances")
        return rows

    def wait_running(self, deployment: str = "redis-solo", timeout: float = 1800) -> list[dict[str, Any]]:
        """The deployment's instances once every one is running and no task is processing (the workshop's
        start-up deploy compiles redis first)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                rows = self.instances(deployment)
                busy = self.request("GET", "/tasks?state=queued,processing&limit=5") if rows else []
                if rows and all(r["process_state"] == "running" for r in rows) and not busy:
                    return rows
                last = json.dumps([r.get("process_state") for r in rows])
            except Exception as e:  # noqa: BLE001 - the deployment may not exist yet: try again until the deadline
                last = str(e)
            time.sleep(0.5)
        raise SystemExit(f"{deployment} did not reach running within {timeout:g} s ({last})")

    def vm_exec(self, cid: str, script: str, timeout: float = 600, stdin: str | None = None,
                args: tuple[str, ...] = ()) -> str:
        """Run a bash script as root in a VM (a container of the lab) with ``args`` as $1...; its stdout.
        Fails loudly."""
        p = subprocess.run(["docker", "exec", "-i", cid, "bash", "-c", script, "bench", *args], input=stdin,
                           text=True, capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise SystemExit(f"in VM {cid[:12]}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p.stdout

    def deploy(self, manifest: str) -> dict[str, Any]:
        return self.task_ok(self.request("POST", "/deployments", manifest.encode(), "text/yaml"))

    def delete_deployment(self, name: str) -> None:
        self.task_ok(self.request("DELETE", f"/deployments/{name}"))

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()


def dummy_manifest(name: str, instances: int, max_in_flight: int, watch: str = "500-30000") -> str:
    return f"""name: {name}
releases: [{{name: dummy, version: latest}}]
update: {{canaries: 1, max_in_flight: {max_in_flight}, canary_watch_time: {watch}, update_watch_time: {watch}}}
networks: [{{name: default, type: dynamic}}]
instance_groups:
- name: app
  instances: {instances}
  jobs: [{{name: dummy, release: dummy}}]
"""


SHARED_PROJECT = "bosh-lab-bench"


class _Shared:
    """The labs ``python -m bench`` shares between its figures (one so far: the workshop's)."""
    active = False
    labs: dict[str, BenchLab] = {}
    failed: dict[str, str] = {}


def shared_project() -> str:
    return os.environ.get("BOSH_LAB_BENCH_PROJECT", SHARED_PROJECT)


def _workshop_up(lab: BenchLab) -> None:
    lab.up()
    lab.wait_running("redis-solo")


def on_workshop_lab(project: str | None, measure: Callable[[BenchLab], list[Any]]) -> list[Any]:
    """A bench script's figures: ``measure`` on the running lab of compose project ``project`` (``--project``),
    else on a workshop lab of its own (:func:`workshop_lab`)."""
    if project:
        lab = BenchLab(project)
        lab.api = "http://127.0.0.1:" + lab.port("director", 25555)
        try:
            return measure(lab)
        finally:
            lab.close()
    with workshop_lab() as lab:
        return measure(lab)


@contextlib.contextmanager
def workshop_lab() -> Iterator[BenchLab]:
    """A running lab with the workshop's redis-solo deployed and running: the run's shared one under
    ``python -m bench`` (:func:`share_labs`), else a lab of its own, torn down when the block ends."""
    if not _Shared.active:
        lab = BenchLab(f"{shared_project()}-{os.getpid()}", BOSH_LAB_WORKSHOP="1")
        try:
            _workshop_up(lab)
            yield lab
        finally:
            lab.down()
        return
    if "workshop" in _Shared.failed:
        raise SystemExit(f"the shared lab did not come up: {_Shared.failed['workshop']}")
    if "workshop" not in _Shared.labs:
        lab = _Shared.labs["workshop"] = BenchLab(shared_project(), BOSH_LAB_WORKSHOP="1")
        try:
            _workshop_up(lab)
        except BaseException as e:
            _Shared.failed["workshop"] = str(e)[-500:]
            raise
    lab = _Shared.labs["workshop"]
    lab.wait_running("redis-solo", timeout=300)   # a figure before may have left a redeploy behind
    yield lab


@contextlib.contextmanager
def share_labs() -> Iterator[None]:
    """While the block runs, :func:`workshop_lab` hands out one lab, brought up on first use, torn down at the
    end (always)."""
    _Shared.active = True
    try:
        yield
    finally:
        _Shared.active = False
        for lab in list(_Shared.labs.values()):
            t = time.monotonic()
            try:
                lab.down()
                print(f"bench: lab {lab.project} torn down in {time.monotonic() - t:.1f} s", file=sys.stderr)
            except BaseException as e:   # noqa: BLE001 - every lab must get its chance to be torn down
                print(f"bench: tearing down lab {lab.project} FAILED: {e}", file=sys.stderr)
        _Shared.labs.clear()
        _Shared.failed.clear()


def host_pid(container: str) -> int:
    return int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True,
                              check=True, timeout=DOCKER_TIMEOUT).stdout.strip())


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a host process in KiB, from /proc/<pid>/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main_process_cpu(container: str) -> float:
    """CPU seconds (user + system) of the container's main process and its reaped children: the director
    itself, without Docker's healthcheck processes that run in the same cgroup."""
    fields = Path(f"/proc/{host_pid(container)}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def container_memory(cid: str) -> dict[str, float]:
    """Peak and current memory of a container in MiB, from its cgroup (v1 or v2), page cache excluded from
    "current" (what `docker stats` shows)."""
    full = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", cid], capture_output=True, text=True,
                          check=True, timeout=DOCKER_TIMEOUT).stdout.strip()
    for base in (Path(f"/sys/fs/cgroup/system.slice/docker-{full}.scope"), Path(f"/sys/fs/cgroup/docker/{full}")):
        if (base / "memory.current").exists():   # cgroup v2
            stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
            peak = int((base / "memory.peak").read_text()) if (base / "memory.peak").exists() else 0
            current = int((base / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
            return {"peak_mib": peak / 2**20, "current_mib": current / 2**20}
    v1 = Path(f"/sys/fs/cgroup/memory/docker/{full}")
    if (v1 / "memory.usage_in_bytes").exists():
        stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
        peak = int((v1 / "memory.max_usage_in_bytes").read_text())
        current = int((v1 / "memory.usage_in_bytes").read_text()) - int(stat.get("total_inactive_file", 0))
        return {"peak_mib": peak / 2**20, "current_mib": current / 2**20, "peak_rss_mib": int(stat.get("total_rss", 0)) / 2**20}
    raise SystemExit(f"cannot find the cgroup of container {cid}")
