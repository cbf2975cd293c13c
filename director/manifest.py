"""Deployment manifests: parse and check everything before anything changes.

Accepts today's shape (``instance_groups`` with ``jobs``, top-level ``stemcells``, ``networks``) and the
2013 shape the deck shows (``jobs`` with ``template``/``templates``, ``resource_pools``)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml


class ManifestError(ValueError):
    pass


@dataclass
class WatchTime:
    min_ms: int
    max_ms: int

    @classmethod
    def parse(cls, raw: Any, what: str) -> "WatchTime":
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return cls(raw, raw)
        if isinstance(raw, str):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", raw)
            if m:
                lo = int(m.group(1))
                hi = int(m.group(2)) if m.group(2) else lo
                if lo <= hi:
                    return cls(lo, hi)
        raise ManifestError(f"update.{what} must be milliseconds 'min-max' or a number, got {raw!r}")

    def schedule(self) -> list[float]:
        """Starter#wait_until_running: sleep min, then steps of clamp((max-min)/9, 1s, 15s), in seconds."""
        span = self.max_ms - self.min_ms
        step = min(max(span / 9, 1000), 15000)
        steps = int(span // step) if span > 0 else 0
        return [self.min_ms / 1000] + [step / 1000] * steps


@dataclass
class UpdateConfig:
    canaries: int = 1
    max_in_flight: str = "1"
    canary_watch_time: WatchTime = field(default_factory=lambda: WatchTime(1000, 30000))
    update_watch_time: WatchTime = field(default_factory=lambda: WatchTime(1000, 30000))
    serial: bool = True

    def in_flight(self, count: int) -> int:
        raw = self.max_in_flight
        if raw.endswith("%"):
            return max(1, int(count * int(raw[:-1]) / 100))
        return max(1, int(raw))


@dataclass
class JobRef:
    name: str
    release: str
    properties: dict[str, Any] | None = None


@dataclass
class InstanceGroup:
    name: str
    instances: int
    jobs: list[JobRef]
    networks: list[str]
    persistent_disk: int = 0
    vm_type: str = "default"
    cloud_properties: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    update: UpdateConfig | None = None


@dataclass
class Manifest:
    name: str
    releases: dict[str, str]          # name -> version ("latest" allowed)
    groups: list[InstanceGroup]
    update: UpdateConfig
    networks: dict[str, dict[str, Any]]
    properties: dict[str, Any]
    compilation_workers: int = 1
    raw: dict[str, Any] = field(default_factory=dict)

    def group(self, name: str) -> InstanceGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def _mapping(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ManifestError(f"{what} must be a mapping, got {type(v).__name__}")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ManifestError(f"{what} must be a list, got {type(v).__name__}")
    return v


def _name(v: Any, what: str) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
        raise ManifestError(f"{what} must be a name of letters, digits, '-', '_' or '.', got {v!r}")
    return v


def parse_update(raw: Any, base: UpdateConfig | None = None, where: str = "update") -> UpdateConfig:
    d = _mapping(raw, where)
    u = UpdateConfig(**vars(base)) if base else UpdateConfig()
    if "canaries" in d:
        if not isinstance(d["canaries"], int) or isinstance(d["canaries"], bool) or d["canaries"] < 0:
            raise ManifestError(f"{where}.canaries must be a whole number >= 0, got {d['canaries']!r}")
        u.canaries = d["canaries"]
    if "max_in_flight" in d:
        m = d["max_in_flight"]
        if isinstance(m, int) and not isinstance(m, bool) and m >= 1:
            u.max_in_flight = str(m)
        elif isinstance(m, str) and re.fullmatch(r"\d+%?", m) and int(m.rstrip("%")) >= 1:
            u.max_in_flight = m
        else:
            raise ManifestError(f"{where}.max_in_flight must be a number >= 1 or a percentage like '50%', got {m!r}")
    if "canary_watch_time" in d:
        u.canary_watch_time = WatchTime.parse(d["canary_watch_time"], "canary_watch_time")
    if "update_watch_time" in d:
        u.update_watch_time = WatchTime.parse(d["update_watch_time"], "update_watch_time")
    if "serial" in d:
        if not isinstance(d["serial"], bool):
            raise ManifestError(f"{where}.serial must be true or false")
        u.serial = d["serial"]
    return u


def parse_manifest(text: str) -> Manifest:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError(f"manifest is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest must be a YAML mapping")
    name = _name(doc.get("name"), "name")
    releases: dict[str, str] = {}
    for i, r in enumerate(_list(doc.get("releases") or ([doc["release"]] if "release" in doc else []), "releases")):
        r = _mapping(r, f"releases[{i}]")
        releases[_name(r.get("name"), f"releases[{i}].name")] = str(r.get("version", "latest"))
    if not releases:
        raise ManifestError("manifest names no releases")
    update = parse_update(doc.get("update"))
    networks: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(_list(doc.get("networks"), "networks")):
        n = _mapping(n, f"networks[{i}]")
        nname = _name(n.get("name"), f"networks[{i}].name")
        ntype = n.get("type", "dynamic")
        if ntype not in ("dynamic", "manual"):
            raise ManifestError(f"network '{nname}': type must be dynamic or manual, got {ntype!r}")
        networks[nname] = {"type": ntype, "cloud_properties": _mapping(n.get("cloud_properties"), f"network '{nname}' cloud_properties")}
    if not networks:
        networks["default"] = {"type": "dynamic", "cloud_properties": {}}
    compilation = _mapping(doc.get("compilation"), "compilation")
    workers = compilation.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ManifestError(f"compilation.workers must be a whole number >= 1, got {workers!r}")
    raw_groups = doc.get("instance_groups")
    legacy = raw_groups is None and "jobs" in doc
    groups: list[InstanceGroup] = []
    seen: set[str] = set()
    for i, g in enumerate(_list(doc.get("jobs") if legacy else raw_groups, "instance_groups")):
        g = _mapping(g, f"instance_groups[{i}]")
        gname = _name(g.get("name"), f"instance_groups[{i}].name")
        if gname in seen:
            raise ManifestError(f"instance group '{gname}' appears twice")
        seen.add(gname)
        instances = g.get("instances", 1)
        if not isinstance(instances, int) or isinstance(instances, bool) or instances < 0:
            raise ManifestError(f"instance group '{gname}': instances must be a whole number >= 0, got {instances!r}")
        jobs: list[JobRef] = []
        if legacy:
            tmpl = g.get("templates") or g.get("template")
            names = tmpl if isinstance(tmpl, list) else [tmpl]
            default_release = next(iter(releases))
            for t in names:
                if isinstance(t, dict):
                    jobs.append(JobRef(_name(t.get("name"), f"job '{gname}' template"), str(t.get("release", default_release))))
                else:
                    jobs.append(JobRef(_name(t, f"job '{gname}' template"), default_release))
        else:
            for j, jr in enumerate(_list(g.get("jobs"), f"instance group '{gname}' jobs")):
                jr = _mapping(jr, f"instance group '{gname}' jobs[{j}]")
                jname = _name(jr.get("name"), f"instance group '{gname}' jobs[{j}].name")
                rel = jr.get("release") or (next(iter(releases)) if len(releases) == 1 else None)
                if rel is None:
                    raise ManifestError(f"instance group '{gname}' job '{jname}' names no release")
                props = jr.get("properties")
                jobs.append(JobRef(jname, str(rel), _mapping(props, f"job '{jname}' properties") if props is not None else None))
        if not jobs:
            raise ManifestError(f"instance group '{gname}' has no jobs")
        for jref in jobs:
            if jref.release not in releases:
                raise ManifestError(f"instance group '{gname}' job '{jref.name}' uses release '{jref.release}', "
                                    f"which the manifest's releases do not list")
        nets = []
        for n in _list(g.get("networks") or [{"name": next(iter(networks))}], f"instance group '{gname}' networks"):
            nn = n.get("name") if isinstance(n, dict) else n
            if nn not in networks:
                raise ManifestError(f"instance group '{gname}' uses network {nn!r}, which the manifest does not define")
            nets.append(str(nn))
        disk = g.get("persistent_disk", 0)
        if not isinstance(disk, int) or isinstance(disk, bool) or disk < 0:
            raise ManifestError(f"instance group '{gname}': persistent_disk must be MB >= 0, got {disk!r}")
        groups.append(InstanceGroup(
            gname, instances, jobs, nets, disk, str(g.get("vm_type") or g.get("resource_pool") or "default"),
            _mapping(g.get("cloud_properties"), f"instance group '{gname}' cloud_properties"),
            _mapping(g.get("properties"), f"instance group '{gname}' properties"),
            parse_update(g["update"], update, f"instance group '{gname}' update") if "update" in g else None))
    if not groups:
        raise ManifestError("manifest has no instance_groups")
    return Manifest(name, releases, groups, update, networks, _mapping(doc.get("properties"), "properties"),
                    workers, doc)
