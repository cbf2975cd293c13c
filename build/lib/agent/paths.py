"""Where things live on a VM (protocol.md §5.4), relative to the base dir (``/var/vcap``; tests use a tmp dir)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    base: Path = Path("/var/vcap")

    @property
    def bosh(self) -> Path:
        return self.base / "bosh"

    @property
    def user_data(self) -> Path:
        """Written by the director's Docker CPI before the container starts."""
        return self.bosh / "user_data.json"

    @property
    def settings(self) -> Path:
        return self.bosh / "settings.json"

    @property
    def spec(self) -> Path:
        return self.bosh / "spec.json"

    @property
    def managed_disk_settings(self) -> Path:
        return self.bosh / "managed_disk_settings.json"

    @property
    def stemcell_version(self) -> Path:
        return self.bosh / "etc" / "stemcell_version"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def tmp(self) -> Path:
        return self.data / "tmp"

    @property
    def store(self) -> Path:
        return self.base / "store"

    @property
    def store_migration_target(self) -> Path:
        """Where ``mount_disk`` puts a second disk while another is at ``store`` (for ``migrate_disk``)."""
        return self.base / "store_migration_target"

    @property
    def bosh_ssh(self) -> Path:
        """Home dirs of the users ``ssh setup`` makes."""
        return self.base / "bosh_ssh"

    @property
    def agent_logs(self) -> Path:
        """The agent's own log dir (svlogd's ``current``): ``fetch_logs`` type ``agent``."""
        return self.bosh / "log"

    @property
    def sys(self) -> Path:
        return self.base / "sys"

    @property
    def job_logs(self) -> Path:
        """``/var/vcap/sys/log``: ``fetch_logs`` type ``job``."""
        return self.sys / "log"

    @property
    def monit(self) -> Path:
        return self.base / "monit"

    @property
    def monit_user(self) -> Path:
        return self.monit / "monit.user"

    @property
    def monit_jobs(self) -> Path:
        return self.monit / "job"

    @property
    def stopped_marker(self) -> Path:
        return self.monit / "stopped"

    @property
    def instance(self) -> Path:
        return self.base / "instance"

    def job_link(self, job: str) -> Path:
        return self.base / "jobs" / job

    def job_versions(self, job: str) -> Path:
        return self.data / "jobs" / job

    def package_link(self, pkg: str) -> Path:
        return self.base / "packages" / pkg

    def package_versions(self, pkg: str) -> Path:
        return self.data / "packages" / pkg

    def compile_dir(self, pkg: str) -> Path:
        return self.data / "compile" / pkg

    def job_log_dir(self, job: str) -> Path:
        return self.sys / "log" / job

    def job_run_dir(self, job: str) -> Path:
        return self.sys / "run" / job

    def ensure_layout(self) -> None:
        """The directories every VM has (the stemcell makes most of them; a test base dir has none)."""
        for d in (self.bosh / "etc", self.bosh / "log", self.monit_jobs, self.data / "jobs",
                  self.data / "packages", self.data / "sys" / "log", self.data / "sys" / "run", self.tmp,
                  self.base / "jobs", self.base / "packages", self.store, self.instance):
            d.mkdir(parents=True, exist_ok=True)
        if not self.sys.exists() and not self.sys.is_symlink():
            os.symlink(self.data / "sys", self.sys)
        os.chmod(self.monit, 0o700)


def replace_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
