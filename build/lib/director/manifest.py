"""Deployment manifests: parse and check everything before anything changes.

Accepts today's shape (``instance_groups`` with ``jobs``, top-level ``stemcells``, ``networks``) and the
2013 shape the deck shows (``jobs`` with ``template``/``templates``, ``resource_pools``)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from boshlab import safeyaml


class ManifestError(ValueError):
    pass


@dataclass
class WatchTime:
    min_ms: int
    max_ms: int

    @classmethod
    def parse(cls, raw: Any, what: str) -> WatchTime:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return cls(raw, raw)
        if isinstance(raw, str):
            m = re.fullmatch(r"\s*(\d{1,9})\s*(?:-\s*(\d{1,9})\s*)?", raw)
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
class Subnet:
    """A manual network's subnet, as in a 2013 manifest (today's cloud-config): the director makes a Docker
    network with exactly this range and gives each VM an address from it."""
    range: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns: list[str] = field(default_factory=list)
    reserved: set[ipaddress.IPv4Address] = field(default_factory=set)
    static: set[ipaddress.IPv4Address] = field(default_factory=set)

    def dynamic_pool(self) -> list[ipaddress.IPv4Address]:
        """Addresses for instances without a static IP: the range minus network, broadcast, gateway,
        reserved and static addresses, lowest first."""
        taken = self.reserved | self.static | {self.gateway}
        return [a for a in self.range.hosts() if a not in taken]


MAX_RANGE_ADDRESSES = 65536
MIN_PREFIX = 16                  # the largest manual network: a /16 (its addresses are enumerated)


def parse_ip_ranges(raw: Any, net: ipaddress.IPv4Network, what: str) -> set[ipaddress.IPv4Address]:
    """``["10.0.0.2 - 10.0.0.9", "10.0.0.20"]`` (or one such string) -> the addresses, each inside ``net``."""
    items = raw if isinstance(raw, list) else [raw] if raw is not None else []
    out: set[ipaddress.IPv4Address] = set()
    for item in items:
        text = str(item)
        lo_s, _, hi_s = text.partition("-")
        try:
            lo = ipaddress.IPv4Address(lo_s.strip())
            hi = ipaddress.IPv4Address(hi_s.strip()) if hi_s else lo
        except ValueError:
            raise ManifestError(f"{what}: {text!r} is not an IPv4 address or 'first - last' range") from None
        if hi < lo:
            raise ManifestError(f"{what}: range {text!r} ends before it starts")
        if lo not in net or hi not in net:
            raise ManifestError(f"{what}: {text!r} is outside the subnet range {net}")
        if int(hi) - int(lo) >= MAX_RANGE_ADDRESSES:
            raise ManifestError(f"{what}: {text!r} is too large")
        out.update(ipaddress.IPv4Address(i) for i in range(int(lo), int(hi) + 1))
    return out


def parse_subnet(raw: Any, where: str) -> Subnet:
    d = _mapping(raw, where)
    try:
        net = ipaddress.IPv4Network(str(d.get("range")), strict=True)
    except ValueError as e:
        raise ManifestError(f"{where}.range must be an IPv4 network like 10.244.0.0/24: {e}") from None
    if net.prefixlen > 29:
        raise ManifestError(f"{where}.range {net} is too small (at most /29)")
    if net.prefixlen < MIN_PREFIX:
        raise ManifestError(f"{where}.range {net} is too large for a lab: at most /{MIN_PREFIX} "
                            f"({2 ** (32 - MIN_PREFIX) - 2} addresses)")
    if "gateway" in d:
        try:
            gw = ipaddress.IPv4Address(str(d["gateway"]))
        except ValueError:
            raise ManifestError(f"{where}.gateway {d['gateway']!r} is not an IPv4 address") from None
    else:
        gw = net.network_address + 1
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise ManifestError(f"{where}.gateway {gw} is not a host address of {net}")
    reserved = parse_ip_ranges(d.get("reserved"), net, f"{where}.reserved")
    static = parse_ip_ranges(d.get("static"), net, f"{where}.static")
    both = reserved & static
    if both:
        raise ManifestError(f"{where}: {min(both)} is both reserved and static")
    if gw in static:
        raise ManifestError(f"{where}: the gateway {gw} cannot be a static IP")
    dns = [str(x) for x in _list(d.get("dns"), f"{where}.dns")]
    return Subnet(net, gw, dns, reserved, static)


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
    static_ips: dict[str, list[str]] = field(default_factory=dict)   # network -> one IP per instance


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
        elif isinstance(m, str) and re.fullmatch(r"\d{1,9}%?", m) and int(m.rstrip("%")) >= 1:
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
        doc = safeyaml.load(text, what="manifest")
    except safeyaml.YamlError as e:
        raise ManifestError(str(e)) from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest must be a YAML mapping")
    name = _name(doc.get("name"), "name")
    releases = _releases(doc)
    update = parse_update(doc.get("update"))
    networks = _networks(doc)
    compilation = _mapping(doc.get("compilation"), "compilation")
    workers = compilation.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ManifestError(f"compilation.workers must be a whole number >= 1, got {workers!r}")
    raw_groups = doc.get("instance_groups")
    legacy = raw_groups is None and "jobs" in doc
    groups: list[InstanceGroup] = []
    for i, g in enumerate(_list(doc.get("jobs") if legacy else raw_groups, "instance_groups")):
        group = _group(_mapping(g, f"instance_groups[{i}]"), i, legacy, releases, networks, update)
        if any(other.name == group.name for other in groups):
            raise ManifestError(f"instance group '{group.name}' appears twice")
        groups.append(group)
    if not groups:
        raise ManifestError("manifest has no instance_groups")
    _check_static_ips_unique(groups)
    return Manifest(name, releases, groups, update, networks, _mapping(doc.get("properties"), "properties"),
                    workers, doc)


def _releases(doc: dict[str, Any]) -> dict[str, str]:
    releases: dict[str, str] = {}
    for i, r in enumerate(_list(doc.get("releases") or ([doc["release"]] if "release" in doc else []), "releases")):
        r = _mapping(r, f"releases[{i}]")
        releases[_name(r.get("name"), f"releases[{i}].name")] = str(r.get("version", "latest"))
    if not releases:
        raise ManifestError("manifest names no releases")
    return releases


def _networks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    networks: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(_list(doc.get("networks"), "networks")):
        n = _mapping(n, f"networks[{i}]")
        nname = _name(n.get("name"), f"networks[{i}].name")
        ntype = n.get("type", "dynamic")
        if ntype not in ("dynamic", "manual"):
            raise ManifestError(f"network '{nname}': type must be dynamic or manual, got {ntype!r}")
        subnets = [parse_subnet(sn, f"network '{nname}' subnets[{k}]")
                   for k, sn in enumerate(_list(n.get("subnets"), f"network '{nname}' subnets"))]
        if subnets and ntype != "manual":
            raise ManifestError(f"network '{nname}': only manual networks have subnets")
        if len(subnets) > 1:
            raise ManifestError(f"network '{nname}': bosh-lab supports one subnet per manual network "
                                f"(it becomes one Docker network)")
        cloud = _mapping(n.get("cloud_properties"), f"network '{nname}' cloud_properties")
        networks[nname] = {"type": ntype, "cloud_properties": cloud, "subnet": subnets[0] if subnets else None}
    if not networks:
        networks["default"] = {"type": "dynamic", "cloud_properties": {}, "subnet": None}
    return networks


def _group_jobs(g: dict[str, Any], gname: str, legacy: bool, releases: dict[str, str]) -> list[JobRef]:
    jobs: list[JobRef] = []
    if legacy:
        tmpl = g.get("templates") or g.get("template")
        names = tmpl if isinstance(tmpl, list) else [tmpl]
        default_release = next(iter(releases))
        for t in names:
            if isinstance(t, dict):
                jobs.append(JobRef(_name(t.get("name"), f"job '{gname}' template"),
                                   str(t.get("release", default_release))))
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
            jobs.append(JobRef(jname, str(rel),
                               _mapping(props, f"job '{jname}' properties") if props is not None else None))
    if not jobs:
        raise ManifestError(f"instance group '{gname}' has no jobs")
    for jref in jobs:
        if jref.release not in releases:
            raise ManifestError(f"instance group '{gname}' job '{jref.name}' uses release '{jref.release}', "
                                f"which the manifest's releases do not list")
    return jobs


def _group_networks(g: dict[str, Any], gname: str, instances: int,
                    networks: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    nets: list[str] = []
    static_ips: dict[str, list[str]] = {}
    for n in _list(g.get("networks") or [{"name": next(iter(networks))}], f"instance group '{gname}' networks"):
        nn = _name(n.get("name") if isinstance(n, dict) else n, f"instance group '{gname}' network name")
        if nn not in networks:
            raise ManifestError(f"instance group '{gname}' uses network {nn!r}, which the manifest does not define")
        if nn in nets:
            raise ManifestError(f"instance group '{gname}' lists network '{nn}' twice")
        nets.append(str(nn))
        raw_ips = n.get("static_ips") if isinstance(n, dict) else None
        if raw_ips is None:
            continue
        subnet = networks[nn]["subnet"]
        if subnet is None:
            raise ManifestError(f"instance group '{gname}' has static_ips on network '{nn}', which is not a "
                                f"manual network with a subnet")
        ips = sorted(parse_ip_ranges(raw_ips, subnet.range, f"instance group '{gname}' network '{nn}' static_ips"))
        if len(ips) != instances:
            raise ManifestError(f"instance group '{gname}' has {instances} instance(s) but {len(ips)} static IP(s) "
                                f"on network '{nn}'")
        outside = [str(ip) for ip in ips if ip not in subnet.static]
        if outside:
            raise ManifestError(f"instance group '{gname}' static IP(s) {', '.join(outside)} are not in the "
                                f"static ranges of network '{nn}'")
        static_ips[nn] = [str(ip) for ip in ips]
    return nets, static_ips


def _group(g: dict[str, Any], i: int, legacy: bool, releases: dict[str, str], networks: dict[str, dict[str, Any]],
           update: UpdateConfig) -> InstanceGroup:
    gname = _name(g.get("name"), f"instance_groups[{i}].name")
    instances = g.get("instances", 1)
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 0:
        raise ManifestError(f"instance group '{gname}': instances must be a whole number >= 0, got {instances!r}")
    jobs = _group_jobs(g, gname, legacy, releases)
    nets, static_ips = _group_networks(g, gname, instances, networks)
    disk = g.get("persistent_disk", 0)
    if not isinstance(disk, int) or isinstance(disk, bool) or disk < 0:
        raise ManifestError(f"instance group '{gname}': persistent_disk must be MB >= 0, got {disk!r}")
    return InstanceGroup(
        gname, instances, jobs, nets, disk, str(g.get("vm_type") or g.get("resource_pool") or "default"),
        _mapping(g.get("cloud_properties"), f"instance group '{gname}' cloud_properties"),
        _mapping(g.get("properties"), f"instance group '{gname}' properties"),
        parse_update(g["update"], update, f"instance group '{gname}' update") if "update" in g else None,
        static_ips)


def _check_static_ips_unique(groups: list[InstanceGroup]) -> None:
    used: dict[tuple[str, str], str] = {}
    for grp in groups:
        for nn, given in grp.static_ips.items():
            for text in given:
                if (nn, text) in used:
                    raise ManifestError(f"static IP {text} on network '{nn}' is given to both instance group "
                                        f"'{used[(nn, text)]}' and '{grp.name}'")
                used[(nn, text)] = grp.name
