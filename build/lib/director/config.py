"""Director configuration, from environment variables (compose sets them)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from boshlab.contracts import BlobstoreSettings


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"director: {name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Config:
    name: str = "bosh-lab"
    api_port: int = 25555
    api_user: str = "admin"
    api_password: str = "admin"
    registry_port: int = 25889
    registry_host: str = "director"           # how agent VMs reach the registry
    nats_url: str = "nats://nats:nats@nats:4222"  # the director's own connection (its user: see nats_auth_dir)
    nats_auth_dir: str = ""                   # shared with the nats container: per-agent users (director/nats_auth.py)
    nats_monitor_url: str = ""                # nats-server's monitoring, to wait until it loaded new users
    agent_mbus: str = "nats://nats:nats@nats:4222"  # what agents are told (settings.mbus)
    blobstore_endpoint: str = "http://blobstore:25250"
    blobstore_director_user: str = "director"
    blobstore_director_password: str = "director"
    blobstore_agent_user: str = "agent"
    blobstore_agent_password: str = "agent"
    data_dir: str = "/var/vcap/store/director"
    stemcell_image: str = "bosh-lab/stemcell:latest"
    cpi: str = "docker"                       # the CPI module: director/cpi/<cpi>_cpi.py
    lab_name: str = ""                        # label value that marks this lab's VMs
    network: str = ""                         # docker network for VMs; found from the director's own container if empty
    heartbeat_interval: float = 30.0
    agent_wait_timeout: float = 300.0
    rpc_timeout: float = 45.0
    poll_interval: float = 1.0
    workshop: bool = True
    workshop_dir: str = "/opt/bosh-lab/workshop"
    workshop_blobs: str = "/opt/bosh-lab/blobs"
    keep_vms_on_stop: bool = True             # VMs outlive a director restart; the reaper service deletes them on `down`
    agent_timeout: float = 0.0                # seconds without a heartbeat before "unresponsive agent" (0: default)
    resurrection: bool = False                # default for deployments without their own setting
    health_interval: float = 0.0              # how often the health monitor looks (0: from agent_timeout)
    meltdown_percent: float = 50.0            # no resurrection when more than this share of a deployment is down...
    meltdown_minimum: int = 5                 # ...and at least this many instances are
    max_threads: int = 16                     # VMs created at once; threads for Docker calls (BOSH: max_threads)
    max_release_bytes: int = 8 << 30          # the largest release upload
    agent_task_deadline: float = 600.0        # how long the director waits for an agent task (apply, stop, ...)
    agent_long_task_deadline: float = 3600.0  # ... for compile_package, migrate_disk, fetch_logs
    agent_drain_deadline: float = 3600.0      # ... for drain (static or dynamic), as a whole
    max_running_tasks: int = 64               # tasks running at once; more are refused (429), not queued
    blobstore_log: str = ""                   # nginx's JSON access log the watch tails (docs/watch.md); empty: off

    def __post_init__(self) -> None:
        if self.agent_timeout == 0.0:
            # BOSH: 60 s with 30 s heartbeats. Never less than 2.5 heartbeats, so one late heartbeat cannot flap.
            object.__setattr__(self, "agent_timeout", max(60.0, 2.5 * self.heartbeat_interval))
        if self.agent_timeout <= 2 * self.heartbeat_interval:
            raise SystemExit(f"director: BOSH_LAB_AGENT_TIMEOUT={self.agent_timeout:g} must be above two heartbeat "
                             f"intervals (BOSH_LAB_HEARTBEAT_INTERVAL={self.heartbeat_interval:g}), or agents would flap "
                             f"between running and unresponsive")
        if self.health_interval == 0.0:
            object.__setattr__(self, "health_interval", min(5.0, max(0.5, self.agent_timeout / 4)))

    @classmethod
    def from_env(cls) -> Config:
        d = cls()
        return cls(
            name=_env("BOSH_LAB_DIRECTOR_NAME", d.name),
            api_port=int(_env("BOSH_LAB_API_PORT", str(d.api_port))),
            api_user=_env("BOSH_LAB_ADMIN_USER", d.api_user),
            api_password=_env("BOSH_LAB_ADMIN_PASSWORD", d.api_password),
            registry_port=int(_env("BOSH_LAB_REGISTRY_PORT", str(d.registry_port))),
            registry_host=_env("BOSH_LAB_REGISTRY_HOST", d.registry_host),
            nats_url=_env("BOSH_LAB_NATS_URL", d.nats_url),
            nats_auth_dir=_env("BOSH_LAB_NATS_AUTH_DIR", d.nats_auth_dir),
            nats_monitor_url=_env("BOSH_LAB_NATS_MONITOR_URL", d.nats_monitor_url),
            agent_mbus=_env("BOSH_LAB_AGENT_MBUS", _env("BOSH_LAB_NATS_URL", d.agent_mbus)),
            blobstore_endpoint=_env("BOSH_LAB_BLOBSTORE_ENDPOINT", d.blobstore_endpoint),
            blobstore_director_user=_env("BLOBSTORE_DIRECTOR_USER", d.blobstore_director_user),
            blobstore_director_password=_env("BLOBSTORE_DIRECTOR_PASSWORD", d.blobstore_director_password),
            blobstore_agent_user=_env("BLOBSTORE_AGENT_USER", d.blobstore_agent_user),
            blobstore_agent_password=_env("BLOBSTORE_AGENT_PASSWORD", d.blobstore_agent_password),
            data_dir=_env("BOSH_LAB_DATA_DIR", d.data_dir),
            stemcell_image=_env("BOSH_LAB_STEMCELL_IMAGE", d.stemcell_image),
            cpi=_env("BOSH_LAB_CPI", d.cpi),
            lab_name=_env("BOSH_LAB_NAME", d.lab_name),
            network=_env("BOSH_LAB_NETWORK", d.network),
            heartbeat_interval=_float("BOSH_LAB_HEARTBEAT_INTERVAL", d.heartbeat_interval),
            agent_wait_timeout=_float("BOSH_LAB_AGENT_WAIT_TIMEOUT", d.agent_wait_timeout),
            rpc_timeout=_float("BOSH_LAB_RPC_TIMEOUT", d.rpc_timeout),
            poll_interval=_float("BOSH_LAB_POLL_INTERVAL", d.poll_interval),
            workshop=_env("BOSH_LAB_WORKSHOP", "1").lower() not in ("0", "false", "no", "off", ""),
            workshop_dir=_env("BOSH_LAB_WORKSHOP_DIR", d.workshop_dir),
            workshop_blobs=_env("BOSH_LAB_WORKSHOP_BLOBS", d.workshop_blobs),
            keep_vms_on_stop=_env("BOSH_LAB_KEEP_VMS_ON_STOP", "1").lower() in ("1", "true", "yes", "on"),
            agent_timeout=_float("BOSH_LAB_AGENT_TIMEOUT", 0.0),
            resurrection=_env("BOSH_LAB_RESURRECTION", "0").lower() in ("1", "true", "yes", "on"),
            health_interval=_float("BOSH_LAB_HEALTH_INTERVAL", 0.0),
            meltdown_percent=_float("BOSH_LAB_MELTDOWN_PERCENT", d.meltdown_percent),
            max_threads=max(1, int(_float("BOSH_LAB_MAX_THREADS", d.max_threads))),
            max_release_bytes=max(1, int(_float("BOSH_LAB_MAX_RELEASE_BYTES", d.max_release_bytes))),
            agent_task_deadline=_float("BOSH_LAB_AGENT_TASK_DEADLINE", d.agent_task_deadline),
            agent_long_task_deadline=_float("BOSH_LAB_AGENT_LONG_TASK_DEADLINE", d.agent_long_task_deadline),
            agent_drain_deadline=_float("BOSH_LAB_AGENT_DRAIN_DEADLINE", d.agent_drain_deadline),
            max_running_tasks=max(1, int(_float("BOSH_LAB_MAX_RUNNING_TASKS", d.max_running_tasks))),
            blobstore_log=_env("BOSH_LAB_BLOBSTORE_LOG", d.blobstore_log),
        )

    def registry_url(self) -> str:
        """The registry as agent VMs reach it; each VM's user data adds credentials of its own (slide 13)."""
        return f"http://{self.registry_host}:{self.registry_port}"

    def agent_blobstore(self) -> BlobstoreSettings:
        return {"provider": "dav", "options": {"endpoint": self.blobstore_endpoint,
                                               "user": self.blobstore_agent_user,
                                               "password": self.blobstore_agent_password}}
