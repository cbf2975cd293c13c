"""What the bench scripts share: a lab of their own (compose project), the director's API (cli/client.py),
and measurements from the host: a process's CPU time (/proc/<pid>/stat) and a container's memory (cgroup v1
or v2)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli.client import SyncDirectorClient, TaskStillRunning  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchLab:
    def __init__(self, project: str, **env: str) -> None:
        self.project = project
        self.env = dict(os.environ, COMPOSE_PROJECT_NAME=project, BOSH_LAB_API_PUBLISH="127.0.0.1:",
                        BOSH_LAB_NATS_PUBLISH="127.0.0.1:", BOSH_LAB_BLOBSTORE_PUBLISH="127.0.0.1:",
                        BOSH_LAB_WORKSHOP="0", **env)
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
        self.compose("up", "-d", "--build", "--wait")
        self.api = "http://127.0.0.1:" + self.port("director", 25555)

    def port(self, service: str, port: int) -> str:
        return self.compose("port", service, str(port)).strip().rsplit(":", 1)[1]

    def nats_url(self) -> str:
        """The operator's NATS URL (its password lives in the nats-auth volume)."""
        password = self.compose("exec", "-T", "nats", "cat", "/var/vcap/nats-auth/operator.password").strip()
        return f"nats://nats:{password}@127.0.0.1:{self.port('nats', 4222)}"

    def down(self) -> float:
        self.close()
        t = time.monotonic()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "120")
        return time.monotonic() - t

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> Any:
        """The director's JSON answer; an error answer raises cli.client.DirectorError."""
        return self.director.send(method, path, body, content_type=ctype if body is not None else None)

    def task_output(self, task_id: int, kind: str = "event") -> str:
        return self.director.task_output(task_id, kind).text

    def wait_task(self, task_id: int, timeout: float = 3600) -> dict[str, Any]:
        try:
            return self.director.wait_task(task_id, timeout=timeout, interval=0.2)
        except TaskStillRunning as e:
            raise SystemExit(str(e)) from None

    def task_ok(self, task: dict[str, Any]) -> dict[str, Any]:
        t = self.wait_task(int(task["id"]))
        if t["state"] != "done":
            raise SystemExit(f"task {t['id']} {t['state']}: {t['result']}")
        return t

    def upload_dummy(self) -> None:
        from boshlab.release import create_release
        out = ROOT / ".pytest_cache" / f"{self.project}-dummy.tgz"
        out.parent.mkdir(exist_ok=True)
        create_release(ROOT / "tests" / "assets" / "releases" / "dummy", out)
        self.task_ok(self.request("POST", "/releases", out.read_bytes(), "application/x-compressed"))

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


def host_pid(container: str) -> int:
    return int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True,
                              check=True).stdout.strip())


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
                          check=True).stdout.strip()
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
