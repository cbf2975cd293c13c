"""The director's state as typed rows (what the repositories return). Column names stay BOSH's words."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Generic, TypeVar, overload

from boshlab.contracts import ApplySpec, BlobRef

from ..naming import instance_label


def _json(raw: Any, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return default


T = TypeVar("T")


class Deferred:
    """A column's text, turned into its value on the first read (``LazyField``)."""
    __slots__ = ("load",)

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load


def lazy_slot(name: str) -> str:
    """Where a LazyField keeps its value (or its Deferred) in the instance's ``__dict__``."""
    return "_lazy_" + name


class LazyField(Generic[T]):
    """A dataclass field whose value may be given as a :class:`Deferred`: the JSON of a large column (an
    instance's apply spec) is parsed only when someone reads it. A listing of 1,000 instances, the health
    monitor's look at every instance and the watch's names read none of them. Set through ``__init__`` or
    ``object.__setattr__`` only (the rows are frozen)."""

    def __init__(self, default: T) -> None:
        self.default = default
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = lazy_slot(name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> T: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T:
        if obj is None:
            return self.default                  # the dataclass's default
        value = obj.__dict__.get(self.slot, self.default)
        if isinstance(value, Deferred):
            value = value.load()
            obj.__dict__[self.slot] = value
        return value  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: T) -> None:
        obj.__dict__[self.slot] = value


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


def parse_networks(text: str) -> dict[str, NetworkAddress]:
    """The ``networks`` column: ``{"<manifest network>": {"ip", "range"}}``."""
    nets: dict[str, NetworkAddress] = {}
    for name, n in dict(_json(text, {})).items():
        if isinstance(n, dict) and n.get("ip"):
            nets[str(name)] = NetworkAddress(str(n["ip"]), str(n.get("range", "")))
    return nets


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
    # Parsed on first read (the store hands it over as a Deferred). Rows are values: never change it in place,
    # the store may give the same parsed spec to later reads of the same row.
    apply_spec: LazyField[ApplySpec | None] = LazyField(None)
    state: str = "started"
    networks: dict[str, NetworkAddress] = field(default_factory=dict)
    dirty: bool = False
    vm_created_at: float | None = None

    @classmethod
    def of(cls, r: dict[str, Any], spec: Callable[[str, str], ApplySpec | None] | None = None,
           networks: Callable[[str], dict[str, NetworkAddress]] = parse_networks) -> InstanceRow:
        """The row from its columns; the apply spec is parsed when first read (by ``spec(id, text)`` if given:
        the repository's cache of parsed specs), the networks by ``networks(text)``."""
        return cls.build((r["id"], r["deployment"], r["group_name"], r["idx"], r["agent_id"], r["vm_cid"],
                          r["vm_name"], r["ip"], r.get("apply_spec"), r["state"], r.get("networks"), r.get("dirty"),
                          r.get("vm_created_at"), r.get("configuration_hash")), spec, networks)

    @classmethod
    def build(cls, v: tuple[Any, ...], spec: Callable[[str, str], ApplySpec | None] | None = None,
              networks: Callable[[str], dict[str, NetworkAddress]] = parse_networks) -> InstanceRow:
        """The row from the values of ``COLUMNS``, in that order. Built without the frozen ``__init__`` (a
        setattr per field): listings and the health monitor make thousands of these."""
        (instance_id, deployment, group, index, agent_id, vm_cid, vm_name, ip, text, state, raw_nets, dirty,
         created, config_hash) = v
        lazy: Any = None
        if text:
            lazy = Deferred(partial(spec, instance_id, text) if spec is not None else partial(_json, text, None))
        row = object.__new__(cls)
        row.__dict__.update({
            "id": instance_id, "deployment": deployment, "group": group, "index": int(index), "agent_id": agent_id,
            "vm_cid": vm_cid, "vm_name": vm_name, "ip": ip, SPEC_SLOT: lazy, "state": state or "started",
            "networks": networks(raw_nets) if raw_nets and raw_nets != "{}" else {}, "dirty": bool(dirty),
            "vm_created_at": created})
        if text and config_hash is not None:
            row.__dict__[HASH_SLOT] = config_hash       # from its own column: no need to parse the spec for it
        return row

    @property
    def configuration_hash(self) -> str | None:
        """The apply spec's ``configuration_hash``, read from its own column when the row came from the store
        (listings show it for every instance: no spec parsed for it), else from the spec."""
        kept = self.__dict__.get(HASH_SLOT)
        if kept is not None:
            return str(kept)
        spec = self.apply_spec
        h = spec.get("configuration_hash") if spec else None
        return h if isinstance(h, str) else None

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


SPEC_SLOT = lazy_slot("apply_spec")
# The instances table's columns InstanceRow.build takes, in its order.
COLUMNS = ("id", "deployment", "group_name", "idx", "agent_id", "vm_cid", "vm_name", "ip", "apply_spec", "state",
           "networks", "dirty", "vm_created_at", "configuration_hash")
HASH_SLOT = "_configuration_hash"     # not a field: rows built by hand read it from their spec
# InstanceRow.of fills __dict__ itself: it must name every field (a field added later must be added there).
INSTANCE_FIELDS = tuple(f.name for f in fields(InstanceRow))


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
