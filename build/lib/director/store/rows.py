"""The director's state as typed rows (what the repositories return). Column names stay BOSH's words."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from boshlab.contracts import ApplySpec, BlobRef

from ..naming import instance_label


def _json(raw: Any, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class ReleaseRow:
    name: str
    version: str
    manifest: str
    created_at: float


@dataclass(frozen=True)
class ReleaseJobRow:
    release: str
    release_version: str
    name: str
    version: str
    fingerprint: str
    sha1: str
    blobstore_id: str
    spec: dict[str, Any]
    monit: str
    templates: dict[str, str]

    @classmethod
    def of(cls, r: dict[str, Any]) -> ReleaseJobRow:
        return cls(r["release"], r["release_version"], r["name"], r["version"], r["fingerprint"], r["sha1"],
                   r["blobstore_id"], _json(r["spec"], {}), r["monit"], _json(r["templates"], {}))


@dataclass(frozen=True)
class ReleasePackageRow:
    release: str
    release_version: str
    name: str
    version: str
    fingerprint: str
    sha1: str
    blobstore_id: str
    dependencies: list[str]

    @classmethod
    def of(cls, r: dict[str, Any]) -> ReleasePackageRow:
        return cls(r["release"], r["release_version"], r["name"], r["version"], r["fingerprint"], r["sha1"],
                   r["blobstore_id"], list(_json(r["dependencies"], [])))


@dataclass(frozen=True)
class CompiledPackageRow:
    name: str
    fingerprint: str
    stemcell: str
    dependency_key: str
    build: int
    version: str
    sha1: str
    blobstore_id: str
    created_at: float

    def ref(self) -> BlobRef:
        return {"name": self.name, "version": self.version, "sha1": self.sha1, "blobstore_id": self.blobstore_id}


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    manifest: str
    updated_at: float
    releases: dict[str, str]        # release name -> the version deployed ("latest" resolved)

    @classmethod
    def of(cls, r: dict[str, Any]) -> DeploymentRow:
        return cls(r["name"], r["manifest"], float(r["updated_at"]), dict(_json(r.get("releases"), {})))


@dataclass(frozen=True)
class NetworkAddress:
    """An instance's address on a manual network with a subnet (the director assigned it)."""
    ip: str
    range: str


@dataclass(frozen=True)
class InstanceRow:
    id: str
    deployment: str
    group: str
    index: int
    agent_id: str | None = None
    vm_cid: str | None = None
    vm_name: str | None = None
    ip: str | None = None
    apply_spec: ApplySpec | None = None
    state: str = "started"
    networks: dict[str, NetworkAddress] = field(default_factory=dict)
    dirty: bool = False
    vm_created_at: float | None = None

    @classmethod
    def of(cls, r: dict[str, Any]) -> InstanceRow:
        nets: dict[str, NetworkAddress] = {}
        for name, n in dict(_json(r.get("networks"), {})).items():
            if isinstance(n, dict) and n.get("ip"):
                nets[str(name)] = NetworkAddress(str(n["ip"]), str(n.get("range", "")))
        return cls(r["id"], r["deployment"], r["group_name"], int(r["idx"]), r["agent_id"], r["vm_cid"], r["vm_name"],
                   r["ip"], _json(r["apply_spec"], None), r["state"] or "started", nets, bool(r.get("dirty")),
                   r.get("vm_created_at"))

    @property
    def label(self) -> str:
        return instance_label(self.group, self.id, self.index)

    @property
    def has_vm(self) -> bool:
        return bool(self.vm_cid)

    def ips(self) -> list[str]:
        out = [self.ip] if self.ip else []
        for n in self.networks.values():
            if n.ip not in out:
                out.append(n.ip)
        return out


@dataclass(frozen=True)
class TaskRow:
    id: int
    state: str
    description: str
    deployment: str | None
    result: str | None
    started_at: float
    ended_at: float | None
    user: str

    @classmethod
    def of(cls, r: dict[str, Any]) -> TaskRow:
        return cls(int(r["id"]), r["state"], r["description"], r["deployment"], r["result"], float(r["started_at"]),
                   r["ended_at"], r["user"])


@dataclass(frozen=True)
class DiskRow:
    cid: str
    deployment: str
    instance_id: str | None
    instance: str
    size: int
    orphaned: bool
    created_at: float
    orphaned_at: float | None

    @classmethod
    def of(cls, r: dict[str, Any]) -> DiskRow:
        return cls(r["cid"], r["deployment"], r["instance_id"], r["instance"], int(r["size"]), bool(r["orphaned"]),
                   float(r["created_at"]), r["orphaned_at"])


@dataclass(frozen=True)
class FaultRow:
    """A fault injected by ``bosh-lab fault``: active until undone. ``details`` is what undoing it needs."""
    id: str
    kind: str
    deployment: str | None
    instance_id: str | None
    instance: str | None       # the instance's label when injected: group/id (index)
    target: str                # what it hit, in words: an instance path, "blobstore"
    state: str                 # active | undone
    details: dict[str, Any]
    message: str
    created_at: float
    undone_at: float | None
    undo_message: str | None

    @classmethod
    def of(cls, r: dict[str, Any]) -> FaultRow:
        return cls(r["id"], r["kind"], r["deployment"], r["instance_id"], r["instance"], r["target"], r["state"],
                   _json(r["details"], {}), r["message"] or "", r["created_at"], r["undone_at"], r["undo_message"])
