"""The director <-> agent wire shapes, typed once for both sides (issue 7 item 5).

Pure: only ``typing`` here, no I/O and no imports of aiohttp, nats, docker, ``director`` or ``agent``. The director
builds these shapes and the agent reads them; ``mypy --strict`` checks both against the same definitions.
``protocol.md`` sections: apply spec §9, settings and user data §5.2 (2013 registry model), heartbeat §1.3,
replies §2-§3, compile_package §8.

Totality: a shape is ``total`` (every key required) where the director always sends every key, so the director
constructs it type-checked. Shapes the agent must also accept in part are ``total=False`` and the agent validates
what it relies on at run time (``agent/spec.py``, ``agent/settings.py``):

* ``ApplySpec`` and ``JobSpec`` are ``total=False``: the agent saves and reads back partial specs (an empty one
  before the first apply, the director's early "identity" apply without ``configuration_hash``, older specs
  with a single ``job.template``). The director's full spec (``director/deployer.py`` ``apply_spec``) sets
  every key listed here; ``configuration_hash`` is ``None`` until the templates are rendered.
* ``UserData.instance_id`` is not required: the director passes user data without it to the CPI, which adds
  the VM's cid before the VM starts; the agent refuses user data without it.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypeAlias, TypedDict

# --- blobs, releases, stemcells ----------------------------------------------------------------------


class BlobRef(TypedDict):
    """A blob in the blobstore with what it is: a package in ``packages``, a job in ``job.templates``, a
    compile_package dependency."""
    name: str
    version: str
    sha1: str
    blobstore_id: str


JobTemplateRef: TypeAlias = BlobRef
"""One entry of the apply spec's ``job.templates``: a release job's raw blob (the agent renders it)."""


class UploadedBlob(TypedDict):
    """A blob the agent uploaded: its id and the sha1 of its content."""
    blobstore_id: str
    sha1: str


class ReleaseRef(TypedDict):
    name: str
    version: str


class StemcellRef(TypedDict):
    name: str
    version: str


class ResourcePool(TypedDict):
    """The apply spec's ``resource_pool`` (2013; today's ``vm_type`` plus the stemcell)."""
    name: str
    cloud_properties: dict[str, Any]
    stemcell: StemcellRef


# --- networks (apply spec and settings) --------------------------------------------------------------


class NetworkSpec(TypedDict, total=False):
    """One network of the apply spec's and the settings' ``networks``: ``type`` is ``manual`` or ``dynamic``
    (or ``vip``); ``default`` lists what this network is the default for (``dns``, ``gateway``) on the first
    network only; ``mac`` and ``prefix`` are not sent by the lab's director but accepted."""
    type: str
    ip: str
    netmask: str
    gateway: str
    dns: list[str]
    default: list[str]
    cloud_properties: dict[str, Any]
    mac: str
    prefix: str


# --- the apply spec (protocol.md §9.1, the deck's 2013 form with properties) ------------------------


class JobSpec(TypedDict, total=False):
    """The apply spec's ``job`` block: the instance group (``name``), the first job's blob in the single-job
    fields (``template``, ``version``, ``sha1``, ``blobstore_id``) and every job in ``templates``."""
    name: str
    release: str
    template: str
    version: str
    sha1: str
    blobstore_id: str
    templates: list[JobTemplateRef]


class ApplySpec(TypedDict, total=False):
    """What ``apply`` carries, what ``drain update`` gets as its new spec and what the agent keeps in
    ``/var/vcap/bosh/spec.json``. See the module docstring for why it is ``total=False``."""
    deployment: str
    release: ReleaseRef
    job: JobSpec
    index: int
    id: str
    name: str
    networks: dict[str, NetworkSpec]
    resource_pool: ResourcePool
    packages: dict[str, BlobRef]
    persistent_disk: int
    configuration_hash: str | None
    properties: dict[str, Any]
    template_hashes: dict[str, str]


# --- user data, registry and settings (protocol.md §5, the 2013 registry model) ---------------------


class RegistryRef(TypedDict):
    """``http://<user>:<password>@director:25889``: the registry, basic auth in the URL."""
    endpoint: str


class ServerRef(TypedDict):
    name: str


class UserData(TypedDict):
    """``/var/vcap/bosh/user_data.json``; ``instance_id`` (the VM cid) is added by the CPI."""
    registry: RegistryRef
    server: NotRequired[ServerRef]
    instance_id: NotRequired[str]


class BlobstoreOptions(TypedDict, total=False):
    endpoint: str
    user: str
    password: str


class BlobstoreSettings(TypedDict):
    provider: str          # only "dav"
    options: BlobstoreOptions


class PersistentDiskRef(TypedDict):
    path: str              # /var/vcap/store_disks/<cid>, where the CPI mounted the volume


class DiskSettings(TypedDict, total=False):
    system: str
    ephemeral: str | None
    persistent: dict[str, PersistentDiskRef]   # disk cid -> where it is (the agent also accepts a bare path string)


class VMRef(TypedDict):
    name: str


class Settings(TypedDict):
    """What the registry serves for a VM (and the agent caches in ``/var/vcap/bosh/settings.json``).
    ``env.bosh.heartbeat_interval`` (seconds) is the lab's knob for short heartbeats."""
    agent_id: str
    mbus: str              # nats://<user>:<password>@host:4222
    blobstore: BlobstoreSettings
    vm: NotRequired[VMRef]
    networks: NotRequired[dict[str, NetworkSpec]]
    disks: NotRequired[DiskSettings]
    ntp: NotRequired[list[str]]
    env: NotRequired[dict[str, Any]]


class RegistryReply(TypedDict):
    """``GET /instances/<instance_id>/settings``: ``{"settings": "<Settings as a JSON string>", "status": "ok"}``,
    or ``{"status": "not_found"}`` with HTTP 404."""
    status: str
    settings: NotRequired[str]


# --- heartbeat (protocol.md §1.3), on hm.agent.heartbeat.<agent_id> ----------------------------------


class CpuVitals(TypedDict):
    sys: str               # percentages as strings, "1.5"
    user: str
    wait: str


class DiskUsage(TypedDict):
    inode_percent: str
    percent: str


class DiskVitals(TypedDict, total=False):
    """Only the disks that are mount points of their own are listed."""
    system: DiskUsage
    ephemeral: DiskUsage
    persistent: DiskUsage


class MemVitals(TypedDict):
    kb: str
    percent: str


class UptimeVitals(TypedDict):
    secs: int


class Vitals(TypedDict):
    cpu: CpuVitals
    disk: DiskVitals
    load: list[str]        # 1, 5 and 15 minute load averages, "0.25"
    mem: MemVitals
    swap: MemVitals
    uptime: UptimeVitals


class Heartbeat(TypedDict):
    deployment: str
    job: str | None        # the instance group; None before the first apply
    index: int | None
    job_state: str         # running, failing, stopped, starting or unknown (protocol.md §6.4)
    vitals: Vitals
    node_id: str           # the instance id
    number_of_processes: int | None   # None when monit did not answer


# --- replies (the "value" of {"value": ...}) -------------------------------------------------------


class TaskRunning(TypedDict):
    """The value of a long-running action's first reply, and of ``get_task`` while it runs."""
    agent_task_id: str
    state: str             # "running"


class CompileResult(TypedDict):
    """``compile_package``'s value: the compiled package's blob."""
    result: UploadedBlob


LogsResult: TypeAlias = UploadedBlob
"""``fetch_logs``'s value: the uploaded log tarball."""


class InfoReply(TypedDict):
    api_version: int


class ProcessUptime(TypedDict):
    secs: int


class ProcessMem(TypedDict):
    kb: int
    percent: float


class ProcessCpu(TypedDict):
    total: float


class ProcessState(TypedDict):
    """One ``processes`` entry of ``get_state``: a monit service of group vcap."""
    name: str
    state: str             # running, starting, failing or unknown
    uptime: ProcessUptime
    mem: ProcessMem
    cpu: ProcessCpu


class NoVM(TypedDict):
    name: None


class _StateKeys(TypedDict):
    agent_id: str
    job_state: str
    processes: list[ProcessState]
    vm: VMRef | NoVM


class StateReply(ApplySpec, _StateKeys, total=False):
    """``get_state``'s value: the current apply spec (all of its keys, as saved) plus the agent's own keys;
    ``vitals`` only for ``get_state("full")``."""
    vitals: Vitals


__all__ = [
    "ApplySpec", "BlobRef", "BlobstoreOptions", "BlobstoreSettings", "CompileResult", "CpuVitals", "DiskSettings",
    "DiskUsage", "DiskVitals", "Heartbeat", "InfoReply", "JobSpec", "JobTemplateRef", "LogsResult", "MemVitals",
    "NetworkSpec", "NoVM", "PersistentDiskRef", "ProcessCpu", "ProcessMem", "ProcessState", "ProcessUptime",
    "RegistryReply", "RegistryRef", "ReleaseRef", "ResourcePool", "ServerRef", "Settings", "StateReply",
    "StemcellRef", "TaskRunning", "UploadedBlob", "UptimeVitals", "UserData", "VMRef", "Vitals",
]
