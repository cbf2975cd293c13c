"""Fakes of the agent's seams, shared by the agent's unit tests and the fake CPI's in-process VMs: a job
supervisor (monit's seam), a mounter (mount(8)'s seam: a "mount" is a symlink, so data really moves) and
users (useradd's seam)."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from agent.disks import DiskError, Mounter
from agent.jobsupervisor import JobSupervisor, MonitService, MonitStatus, job_state
from agent.paths import Paths
from agent.users import UserAdmin, UserEntry, UserError


class FakeSupervisor(JobSupervisor):
    """Records what the agent asks of monit; services are ``{name: MonitService}`` in group vcap."""

    def __init__(self, paths: Paths, services: dict[str, MonitService] | None = None) -> None:
        self.paths = paths
        self.services = services or {}
        self.calls: list[str] = []
        self.installed: list[tuple[str, str]] = []
        self.reachable = True

    async def status(self) -> MonitStatus | None:
        if not self.reachable:
            return None
        return MonitStatus("1", dict(self.services), {"vcap": list(self.services)})

    def job_state(self, status: MonitStatus | None) -> str:
        return job_state(status, self.paths.stopped_marker.exists())

    async def start(self) -> None:
        self.calls.append("start")
        for s in self.services.values():
            s.monitor = 1
        self.paths.stopped_marker.unlink(missing_ok=True)

    async def stop_and_wait(self) -> None:
        self.calls.append("stop")
        for s in self.services.values():
            s.monitor = 0
        self.paths.stopped_marker.touch()

    async def unmonitor(self) -> None:
        self.calls.append("unmonitor")
        for s in self.services.values():
            s.monitor = 0

    async def reload(self) -> None:
        self.calls.append("reload")

    def install_jobs(self, jobs: Sequence[tuple[str, str]]) -> None:
        self.calls.append("install_jobs")
        self.installed = list(jobs)


class FakeMounter(Mounter):
    """``bind`` moves the target dir aside and puts a symlink to the source in its place, so files written
    to /var/vcap/store land on the "disk"; ``unmount`` undoes it. ``volumes`` are the paths that count as
    mount points of their own (the Docker volumes the CPI mounts at /var/vcap/store_disks/<cid>)."""

    def __init__(self) -> None:
        self.mounts: dict[Path, Path] = {}
        self.readonly: set[Path] = set()
        self.volumes: set[Path] = set()
        self.calls: list[str] = []
        self.fail: dict[str, str] = {}   # operation -> error message

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise DiskError(self.fail[op])

    @staticmethod
    def _aside(target: Path) -> Path:
        return target.with_name(f".{target.name}.under-mount")

    async def bind(self, source: Path, target: Path) -> None:
        self.calls.append(f"bind {source} {target}")
        self._check("bind")
        if target in self.mounts or not target.is_dir() or not source.is_dir():
            raise DiskError(f"mount: {target}: bad bind")
        os.rename(target, self._aside(target))
        os.symlink(source.resolve(), target)
        self.mounts[target] = source

    async def remount(self, target: Path, readonly: bool) -> None:
        self.calls.append(f"remount {target} {'ro' if readonly else 'rw'}")
        self._check("remount")
        if target not in self.mounts:
            raise DiskError(f"mount: {target}: not mounted")
        (self.readonly.add if readonly else self.readonly.discard)(target)

    async def unmount(self, target: Path) -> None:
        self.calls.append(f"unmount {target}")
        self._check("unmount")
        if target not in self.mounts:
            raise DiskError(f"umount: {target}: not mounted")
        target.unlink()
        os.rename(self._aside(target), target)
        del self.mounts[target]
        self.readonly.discard(target)

    def is_mount_point(self, path: Path) -> bool:
        return path in self.mounts or path in self.volumes

    def attach(self, paths: Paths, cid: str) -> Path:
        """What the Docker CPI does: a volume mounted at /var/vcap/store_disks/<cid>."""
        vol = paths.base / "store_disks" / cid
        vol.mkdir(parents=True, exist_ok=True)
        self.volumes.add(vol)
        return vol


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq0Zx8g9dPrk7v5N5p3E4uX9bM7qk1kW8f7d3hQ2l9a root@vm"


class FakeUsers(UserAdmin):
    """Users in a dict (homes really made under the tmp base dir); root and vcap exist from the start."""

    def __init__(self, host_key: str | None = HOST_KEY) -> None:
        self.host_key = host_key
        self.users: dict[str, UserEntry] = {"root": UserEntry("root", 0, 0, Path("/root")),
                                            "vcap": UserEntry("vcap", 1000, 1000, Path("/home/vcap"))}
        self.groups: dict[str, tuple[str, ...]] = {}
        self.calls: list[str] = []
        self.fail: dict[str, str] = {}

    async def add(self, name: str, base_dir: Path, groups: Sequence[str]) -> UserEntry:
        self.calls.append(f"add {name}")
        if "add" in self.fail:
            raise UserError(self.fail["add"])
        home = base_dir / name
        home.mkdir(parents=True)
        home.chmod(0o700)
        # our own uid (chown to it works unprivileged); as root a made-up one, as useradd would give
        uid = os.getuid() or 2000 + len(self.users)
        entry = UserEntry(name, uid, os.getgid() if os.getuid() else uid, home)
        self.users[name], self.groups[name] = entry, tuple(groups)
        return entry

    def get(self, name: str) -> UserEntry | None:
        return self.users.get(name)

    def all(self) -> list[UserEntry]:
        return list(self.users.values())

    async def delete(self, name: str) -> None:
        self.calls.append(f"delete {name}")
        entry = self.users.pop(name)
        self.groups.pop(name, None)
        shutil.rmtree(entry.home, ignore_errors=True)

    def host_public_key(self) -> str:
        if self.host_key is None:
            raise UserError("no ssh host public key: is sshd set up?")
        return self.host_key


FAIL_MARKER = "FAKE_SUPERVISOR_FAIL"
_CHECK = re.compile(r"^\s*check\s+process\s+(\S+)", re.MULTILINE)
_START = re.compile(r'^\s*start\s+program\s*=?\s*"([^"]*)"', re.MULTILINE)


class VMSupervisor(FakeSupervisor):
    """The fake CPI's monit: ``install_jobs`` reads the ``check process NAME`` lines of each job's monit file,
    ``start`` "starts" them. A process is ``failing`` (monit status 1) while any file of its job's rendered
    templates (``/var/vcap/jobs/<job>/``) contains ``FAKE_SUPERVISOR_FAIL``: a property whose value renders
    that marker makes the job fail, like a job whose new configuration does not run."""

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        self.jobs: dict[str, list[str]] = {}     # job -> its monit process names
        self.start_programs: dict[str, str] = {}  # job -> its start program (the command's first word)

    def _executable(self, program: str) -> bool:
        """A start program under /var/vcap that is there but not executable cannot start (monit: "Execution
        failed"): its job is failing (the ``fail-job`` fault verb makes it so)."""
        if not program.startswith("/var/vcap/"):
            return True
        path = self.paths.base / program[len("/var/vcap/"):]
        return not path.is_file() or os.access(path, os.X_OK)

    def install_jobs(self, jobs: Sequence[tuple[str, str]]) -> None:
        super().install_jobs(jobs)
        self.jobs = {name: _CHECK.findall(monit) for name, monit in jobs}
        self.start_programs = {name: m.group(1).split()[0] for name, monit in jobs
                               if (m := _START.search(monit)) and m.group(1).split()}
        wanted = [p for procs in self.jobs.values() for p in procs]
        self.services = {p: self.services.get(p) or MonitService(p) for p in wanted}

    def failing_jobs(self) -> set[str]:
        out = {job for job, program in self.start_programs.items() if not self._executable(program)}
        for job in self.jobs:
            root = self.paths.job_link(job)
            if not root.is_dir():
                continue
            for f in root.rglob("*"):
                try:
                    if f.is_file() and FAIL_MARKER in f.read_text(errors="replace"):
                        out.add(job)
                        break
                except OSError:
                    continue
        return out

    async def status(self) -> MonitStatus | None:
        failing = self.failing_jobs()
        for job, procs in self.jobs.items():
            for p in procs:
                if p in self.services:
                    self.services[p].status = 1 if job in failing else 0
        return await super().status()
