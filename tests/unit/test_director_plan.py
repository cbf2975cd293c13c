"""Director logic that needs no Docker: manifests, watch schedules, property binding, hashes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from director.manifest import ManifestError, WatchTime, parse_manifest
from director.planner import deep_merge, netmask
from director.releases import version_key
from director.store import ReleaseJobRow
from director.templates import configuration_hash

ROOT = Path(__file__).resolve().parents[2]


def test_workshop_manifest_parses() -> None:
    m = parse_manifest((ROOT / "workshop" / "manifests" / "redis-solo.yml").read_text())
    assert m.name == "redis-solo"
    assert m.releases == {"redis": "latest"}
    g = m.group("redis")
    assert (g.instances, [j.name for j in g.jobs], g.networks, g.persistent_disk) == (1, ["redis"], ["default"], 0)
    assert m.properties == {"redis": {"port": 6379, "password": "r3d!s"}}
    assert m.update.canaries == 1 and m.update.in_flight(1) == 1


def test_2013_style_manifest_with_jobs_and_template() -> None:
    m = parse_manifest("name: d\nrelease: {name: redis, version: 1}\njobs:\n- name: redis\n  template: redis\n  instances: 1\n")
    assert m.releases == {"redis": "1"}
    assert [j.name for j in m.group("redis").jobs] == ["redis"]


@pytest.mark.parametrize("text, problem", [
    ("name: d\n", "no releases"),
    ("name: d\nreleases: [{name: r}]\n", "no instance_groups"),
    ("name: 'bad name'\nreleases: [{name: r}]\n", "name must be"),
    ("name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, instances: -1, jobs: [{name: j}]}]\n", "instances must be"),
    ("name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, jobs: [{name: j, release: other}]}]\n", "release 'other'"),
    ("name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, jobs: [{name: j}], networks: [{name: nope}]}]\n", "network 'nope'"),
    ("name: d\nreleases: [{name: r}]\nupdate: {max_in_flight: 0}\ninstance_groups: [{name: g, jobs: [{name: j}]}]\n", "max_in_flight"),
    ("name: d\nreleases: [{name: r}]\nupdate: {canary_watch_time: 30000-1000}\ninstance_groups: [{name: g, jobs: [{name: j}]}]\n", "canary_watch_time"),
    ("name: d\nreleases: [{name: r}]\ninstance_groups: [{name: g, jobs: [{name: j}]}, {name: g, jobs: [{name: j}]}]\n", "appears twice"),
    (": : :\n", "not valid YAML"),
])
def test_bad_manifests_are_named(text: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest(text)


def test_watch_schedule_is_bosh_starter() -> None:
    # step = clamp((max-min)/9, 1 s, 15 s): 1000-30000 -> sleep 1 s, then 9 steps of 3.222 s
    s = WatchTime.parse("1000-30000", "x").schedule()
    assert s[0] == 1.0 and len(s) == 10 and abs(s[1] - 29 / 9) < 1e-9
    assert WatchTime.parse(5000, "x").schedule() == [5.0]
    assert WatchTime.parse("1000-3000", "x").schedule() == [1.0, 1.0, 1.0]


def test_max_in_flight_percentage() -> None:
    m = parse_manifest("name: d\nreleases: [{name: r}]\nupdate: {max_in_flight: '50%'}\ninstance_groups: [{name: g, jobs: [{name: j}]}]\n")
    assert m.update.in_flight(6) == 3 and m.update.in_flight(1) == 1


def test_configuration_and_template_hashes_follow_bosh() -> None:
    job = ReleaseJobRow("r", "1", "redis", "1", "fp", "s", "b", {"templates": {"b.erb": "config/b", "a.erb": "bin/a"}},
                        "", {})
    rendered = {"redis": {"monit": "M", "a.erb": "A", "b.erb": "B"}}
    conf, per_job = configuration_hash(rendered, {"redis": job})
    assert conf == hashlib.sha1(b"M" + b"redis" + b"A" + b"bin/a" + b"B" + b"config/b").hexdigest()
    assert per_job == {"redis": hashlib.sha1(b"MAB").hexdigest()}
    changed, _ = configuration_hash({"redis": {"monit": "M", "a.erb": "A", "b.erb": "B2"}}, {"redis": job})
    assert changed != conf


def test_deep_merge_and_helpers() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    assert netmask(24) == "255.255.255.0" and netmask(16) == "255.255.0.0"
    assert max(["1", "10", "9", "2.1"], key=version_key) == "10"
