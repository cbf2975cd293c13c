"""What keeps the director cheap with a large fleet (issue 12): instance rows parse their apply spec only when
read (and the repository keeps what it parsed), the store counts its writes, the watch's names are read from
the store again only when something could have changed, and heartbeats never make the watch's tap wait."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from boshlab.contracts import ApplySpec
from director.store import InstanceRow, NetworkAddress, Store
from director.store.rows import INSTANCE_FIELDS, SPEC_SLOT, Deferred
from director.watch.correlator import MAX_SUMMARY, Correlator
from director.watch.directory import Directory
from director.watch.hub import Hub
from director.watch.tap import Tap


def columns(spec: str | None) -> dict[str, Any]:
    return {"id": "i1", "deployment": "d", "group_name": "app", "idx": 0, "agent_id": "a1", "vm_cid": "c1",
            "vm_name": "vm", "ip": "10.0.0.1", "apply_spec": spec, "state": "started", "networks": None,
            "dirty": 0, "vm_created_at": 1.0}


def test_a_row_parses_its_apply_spec_when_first_read_and_stays_a_value() -> None:
    row = InstanceRow.of(columns('{"configuration_hash": "h1", "persistent_disk": 0}'))
    assert isinstance(vars(row)["_lazy_apply_spec"], Deferred), "not parsed before anyone reads it"
    assert row.apply_spec == {"configuration_hash": "h1", "persistent_disk": 0}
    assert not isinstance(vars(row)["_lazy_apply_spec"], Deferred), "parsed once"
    assert row == InstanceRow("i1", "d", "app", 0, "a1", "c1", "vm", "10.0.0.1",
                              {"configuration_hash": "h1", "persistent_disk": 0}, vm_created_at=1.0)
    assert replace(row, state="stopped").apply_spec == row.apply_spec
    with pytest.raises(FrozenInstanceError):
        row.apply_spec = None  # type: ignore[misc]
    assert InstanceRow.of(columns(None)).apply_spec is None
    assert InstanceRow.of(columns("not json")).apply_spec is None, "as before: an unreadable spec is no spec"
    assert InstanceRow("i", "d", "g", 0).apply_spec is None, "the default"
    assert "apply_spec={'configuration_hash': 'h1'" in repr(InstanceRow.of(columns('{"configuration_hash": "h1"}')))
    # of() fills the row's __dict__ itself (no frozen __init__): every field, none left to its class default
    assert set(vars(InstanceRow.of(columns(None)))) == {SPEC_SLOT if f == "apply_spec" else f for f in INSTANCE_FIELDS}


async def test_listing_instances_parses_no_spec_and_a_spec_read_again_is_not_parsed_again(store: Store) -> None:
    i = store.instances
    for n in range(3):
        await i.vm_created(f"w{n}", "d", "web", n, f"agent-{n}", f"cid-{n}", f"vm-{n}", None,
                           {"lab": NetworkAddress(f"10.0.0.{n}", "10.0.0.0/24")}, "started")
        await i.updated(f"w{n}", cast(ApplySpec, {"configuration_hash": f"h{n}", "index": n}), "started")
    rows = await i.all()
    assert all(isinstance(vars(r)["_lazy_apply_spec"], Deferred) for r in rows), "the health monitor reads none"
    first = await i.of_deployment("d")
    assert [r.apply_spec and r.apply_spec.get("configuration_hash") for r in first] == ["h0", "h1", "h2"]
    again = await i.of_deployment("d")
    assert all(a.apply_spec is b.apply_spec for a, b in zip(first, again, strict=True)), "kept, not parsed again"
    assert [r.networks for r in again][1] == {"lab": NetworkAddress("10.0.0.1", "10.0.0.0/24")}

    await i.updated("w1", cast(ApplySpec, {"configuration_hash": "new"}), "started")
    changed = await i.get("w1")
    assert changed is not None and changed.apply_spec == {"configuration_hash": "new"}, "a new text, a new spec"
    await i.vm_created("w2", "d", "web", 2, "agent-9", "cid-9", "vm-9", None, {}, "started")
    row = await i.get("w2")
    assert row is not None and row.apply_spec is None, "a new VM: its spec is to be applied again"
    await i.delete("w0")
    assert [r.id for r in await i.of_deployment("d")] == ["w1", "w2"]


async def test_the_store_counts_its_writes_not_its_reads(store: Store) -> None:
    before = store.changes
    await store.instances.all()
    await store.deployments.get("d")
    assert store.changes == before
    await store.deployments.save("d", "name: d", {})
    await store.deployments.delete("d")          # a transaction
    assert store.changes == before + 2


async def test_the_watch_names_read_the_store_again_only_when_it_could_have_changed(store: Store) -> None:
    d = Directory(store, min_interval=0.0, max_age=3600)
    assert d.names("a1") is None and d.missed
    await d.refresh_if_missed()
    assert d.refreshes == 1 and not d.missed
    for n in range(100):                          # a fleet the director does not know: no read per message
        d.names(f"stranger-{n}")
        await d.ensure(f"stranger-{n}")
        await d.refresh_if_missed()
    assert d.refreshes == 1
    await store.instances.vm_created("w0", "d", "web", 0, "a1", "cid-1", "vm-1", "10.1.0.5", {}, "started")
    await d.ensure("a1")                          # a write since: read again, and the agent is named
    assert d.refreshes == 2 and d.names("a1") == ("d", "web/0", "w0") and d.by_ip("10.1.0.5") == "a1"
    await d.refresh(force=True)
    assert d.refreshes == 3

    old = Directory(store, min_interval=0.0, max_age=0.05)   # someone else may write: read again after max_age
    await old.refresh()
    await old.refresh()
    assert old.refreshes == 1
    await asyncio.sleep(0.06)
    await old.refresh()
    assert old.refreshes == 2


class CountingDirectory(Directory):
    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.ensured: list[str] = []

    async def ensure(self, agent_id: str) -> None:
        self.ensured.append(agent_id)
        await super().ensure(agent_id)


async def test_heartbeats_never_make_the_tap_wait_for_the_store(store: Store) -> None:
    directory = CountingDirectory(store)
    hub = Hub()
    tap = Tap(lambda: "nats://127.0.0.1:1", hub, Correlator(directory.names), directory)
    beat = json.dumps({"job_state": "running", "vitals": {}}).encode()
    t = time.monotonic()
    for n in range(2000):
        await tap._on_msg(cast(Msg, SimpleNamespace(subject=f"hm.agent.heartbeat.agent-{n}", data=beat)))
    assert directory.ensured == [] and tap.messages == 2000
    assert time.monotonic() - t < 5
    summary, = tap.correlator.tick(time.time() + 60)
    hb = summary["heartbeats"]
    assert hb["count"] == 2000 and len(hb["instances"]) == MAX_SUMMARY and hb.get("omitted") == 2000 - MAX_SUMMARY
    await tap._on_msg(cast(Msg, SimpleNamespace(subject="agent.agent-new", data=b"{}")))
    assert directory.ensured == ["agent-new"], "a request to a new VM still waits for its name"


async def test_every_instance_is_read_again_only_after_a_write_or_a_while(tmp_path: Path) -> None:
    s = Store(tmp_path / "director.sqlite3")
    await s.open()
    try:
        i = s.instances
        await i.vm_created("w0", "d", "web", 0, "agent-0", "cid-0", "vm-0", None, {}, "started")
        first = await i.all()
        again = await i.all()
        assert again == first and again is not first and again[0] is first[0], "the same rows, a list of its own"
        again.clear()
        assert len(await i.all()) == 1
        await i.vm_gone("w0")
        assert [r.vm_cid for r in await i.all()] == [None], "a write: read again"
        i.all_max_age = 0.0                       # written elsewhere (another process): seen after all_max_age
        other = Store(tmp_path / "director.sqlite3")
        await other.open()
        await other.instances.delete("w0")
        await other.close()
        assert await i.all() == []
    finally:
        await s.close()


async def test_the_configuration_hash_is_read_without_parsing_the_spec(store: Store) -> None:
    i = store.instances
    await i.vm_created("w0", "d", "web", 0, "agent-0", "cid-0", "vm-0", None, {}, "started")
    row = await i.get("w0")
    assert row is not None and row.configuration_hash is None
    await i.applied("w0", cast(ApplySpec, {"configuration_hash": "h1", "persistent_disk": 0}))
    row, = await i.of_deployment("d")
    assert row.configuration_hash == "h1"
    assert isinstance(vars(row)[SPEC_SLOT], Deferred), "the hash came from its column, the spec is still unparsed"
    await i.updated("w0", cast(ApplySpec, {"configuration_hash": "h2"}), "started")
    row, = await i.all()
    assert row.configuration_hash == "h2"
    assert replace(row, apply_spec=cast(ApplySpec, {"configuration_hash": "h3"})).configuration_hash == "h3"
    assert InstanceRow("i", "d", "g", 0, apply_spec=cast(ApplySpec, {"configuration_hash": "h4"})).configuration_hash == "h4"
    await i.vm_created("w0", "d", "web", 0, "agent-1", "cid-1", "vm-1", None, {}, "started")
    row, = await i.of_deployment("d")
    assert row.configuration_hash is None and row.apply_spec is None, "a new VM: nothing applied yet"


async def test_an_older_store_gets_the_configuration_hash_column_filled(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (id TEXT PRIMARY KEY, deployment TEXT NOT NULL, group_name TEXT NOT NULL, "
                 "idx INTEGER NOT NULL, agent_id TEXT, vm_cid TEXT, vm_name TEXT, ip TEXT, apply_spec TEXT, "
                 "state TEXT NOT NULL DEFAULT 'started', UNIQUE (deployment, group_name, idx))")
    conn.execute("INSERT INTO instances (id, deployment, group_name, idx, apply_spec) VALUES "
                 "('w0', 'd', 'web', 0, '{\"configuration_hash\": \"old\"}'), ('w1', 'd', 'web', 1, 'garbage'), "
                 "('w2', 'd', 'web', 2, NULL)")
    conn.commit()
    conn.close()
    s = Store(path)
    await s.open()
    try:
        assert [r.configuration_hash for r in await s.instances.of_deployment("d")] == ["old", None, None]
    finally:
        await s.close()
