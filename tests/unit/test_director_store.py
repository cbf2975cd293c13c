"""The director's store (director/store/) against a real sqlite file: rows in, typed rows out."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from boshlab.contracts import ApplySpec
from director.operations import NotFound, pick_instances
from director.store import InstanceRow, NetworkAddress, Store

LAB = "10.250.7.0/24"



async def test_instance_vm_created_gone_updated_round_trip(store: Store) -> None:
    i = store.instances
    got = await i.vm_created("w0", "d", "web", 0, "agent-1", "cid-1", "vm-1", "172.18.0.5",
                             {"lab": NetworkAddress("10.250.7.20", LAB)}, "started")
    assert got == InstanceRow("w0", "d", "web", 0, "agent-1", "cid-1", "vm-1", "172.18.0.5", None, "started",
                              {"lab": NetworkAddress("10.250.7.20", LAB)}, True, got.vm_created_at)
    assert got.has_vm and got.dirty and got.vm_created_at is not None
    assert got.ips() == ["172.18.0.5", "10.250.7.20"]

    spec: ApplySpec = {"deployment": "d", "name": "web", "index": 0, "id": "w0", "configuration_hash": "h1",
                       "persistent_disk": 0}
    await i.applied("w0", spec)
    row = await i.get("w0")
    assert row is not None and row.apply_spec == spec and row.dirty, "applied, not yet updated"
    await i.updated("w0", spec, "stopped")
    row = await i.get("w0")
    assert row is not None and (row.apply_spec, row.state, row.dirty) == (spec, "stopped", False)

    await i.vm_gone("w0")
    row = await i.get("w0")
    assert row is not None and (row.vm_cid, row.agent_id, row.vm_name, row.dirty, row.has_vm) == (
        None, None, None, True, False)
    assert row.networks == {"lab": NetworkAddress("10.250.7.20", LAB)}, "the instance keeps its IPs"
    assert await i.deployments_missing_vms() == ["d"]

    # a new VM for the same instance: same id, group and index; a new agent; the spec must be applied again
    again = await i.vm_created("w0", "d", "web", 0, "agent-2", "cid-2", "vm-2", "172.18.0.6",
                               {"lab": NetworkAddress("10.250.7.20", LAB)}, "started")
    assert (again.id, again.group, again.index, again.agent_id, again.vm_cid) == ("w0", "web", 0, "agent-2", "cid-2")
    assert again.apply_spec is None and again.dirty
    assert await i.deployments_missing_vms() == []
    assert await i.counts("d") == (1, 1)


async def test_instance_queries(store: Store) -> None:
    i = store.instances
    await i.vm_created("w1", "d", "web", 1, "a1", "c1", "v1", None, {"lab": NetworkAddress("10.250.7.21", LAB)}, "started")
    await i.vm_created("w0", "d", "web", 0, "a0", "c0", "v0", None, {}, "started")
    await i.vm_created("x0", "other", "web", 0, "a2", "c2", "v2", None, {"lab": NetworkAddress("10.250.7.30", LAB)},
                       "started")
    await i.vm_gone("w0")
    assert [r.id for r in await i.of_deployment("d")] == ["w0", "w1"]
    assert [r.id for r in await i.with_vms()] == ["w1", "x0"]
    assert await i.counts("d") == (2, 1) and await i.counts("nothing") == (0, 0)
    assert await i.ips_in_use(LAB, exclude_deployment="d") == {"10.250.7.30": "other/web/x0 (0)"}
    assert await i.ips_in_use(LAB, exclude_deployment="other") == {"10.250.7.21": "d/web/w1 (1)"}
    await i.vm_gone_by_cid("c1")
    await i.delete("x0")
    assert await i.with_vms() == [] and await i.get("x0") is None


async def test_disks_migrated_and_orphaned(store: Store) -> None:
    d = store.disks
    await d.add("old", "d", "w0", "web/w0", 100, orphaned=False)
    await d.add("new", "d", "w0", "web/w0", 200, orphaned=True)     # until the migration succeeded
    cur = await d.current("w0")
    assert cur is not None and (cur.cid, cur.size) == ("old", 100)
    assert [x.cid for x in await d.list(orphaned=True)] == ["new"]

    await d.migrated("old", "new")
    cur = await d.current("w0")
    assert cur is not None and (cur.cid, cur.size, cur.orphaned, cur.orphaned_at) == ("new", 200, False, None)
    old = await d.get("old")
    assert old is not None and old.orphaned and old.orphaned_at is not None and old.instance_id is None
    assert old.instance == "web/w0", "an orphaned disk still says whose it was"
    assert [x.cid for x in await d.list(orphaned=True, deployment="d")] == ["old"]
    assert await d.list(orphaned=True, deployment="other") == []

    await d.orphan_of_instance("w0")
    assert await d.current("w0") is None
    await d.add("att", "d", "w1", "web/w1", 10, orphaned=False)
    await d.delete_attached("d")
    assert sorted(x.cid for x in await d.list()) == ["new", "old"], "delete-deployment keeps orphaned disks"


async def test_tasks_fail_unfinished(store: Store) -> None:
    t = store.tasks
    done = await t.create("deploy", "d")
    await t.finish(done, "done", "ok")
    running = await t.create("deploy", "d2")
    cancelling = await t.create("delete deployment", "d3")
    await t.set_state(cancelling, "cancelling")
    assert sorted(await t.fail_unfinished("the director stopped")) == [running, cancelling]
    for tid in (running, cancelling):
        row = await t.get(tid)
        assert row is not None and (row.state, row.result) == ("error", "the director stopped")
        assert row.ended_at is not None
    row = await t.get(done)
    assert row is not None and (row.state, row.result) == ("done", "ok")
    assert await t.fail_unfinished("again") == []
    assert [r.id for r in await t.recent(10)] == [cancelling, running, done]
    assert [r.id for r in await t.recent(10, ["done"])] == [done]


async def test_an_old_database_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (id TEXT PRIMARY KEY, deployment TEXT NOT NULL, group_name TEXT NOT NULL, "
                 "idx INTEGER NOT NULL, agent_id TEXT, vm_cid TEXT, vm_name TEXT, ip TEXT, apply_spec TEXT, "
                 "state TEXT NOT NULL DEFAULT 'started', UNIQUE (deployment, group_name, idx))")
    conn.execute("INSERT INTO instances (id, deployment, group_name, idx, vm_cid) VALUES ('w0', 'd', 'web', 0, 'c0')")
    conn.commit()
    conn.close()
    s = Store(path)
    await s.open()
    try:
        row = await s.instances.get("w0")
        assert row is not None and (row.networks, row.dirty, row.vm_created_at, row.has_vm) == ({}, False, None, True)
        await s.instances.mark_dirty("w0")
        row = await s.instances.get("w0")
        assert row is not None and row.dirty
    finally:
        await s.close()


def test_a_number_is_an_index_never_the_start_of_an_id() -> None:
    """``app/7`` is index 7, even when an instance's id starts with 7 (that was a 1-in-8 flake)."""
    rows = [InstanceRow("7f3a-0000", "d", "app", 0), InstanceRow("7b21-1111", "d", "app", 1),
            InstanceRow("c0ff-2222", "d", "web", 0)]
    assert [r.id for r in pick_instances(rows, "d", "app", "1")] == ["7b21-1111"]
    with pytest.raises(NotFound, match="no instance 'app/7'"):
        pick_instances(rows, "d", "app", "7")
    assert [r.id for r in pick_instances(rows, "d", "app", "7f")] == ["7f3a-0000"]
    assert [r.id for r in pick_instances(rows, "d", "app", "7b21-1111")] == ["7b21-1111"]
    with pytest.raises(NotFound, match="matches 2 instances"):
        pick_instances([*rows, InstanceRow("7f99-3333", "d", "app", 2)], "d", "app", "7f")
    with pytest.raises(NotFound, match="no instance group 'db'"):
        pick_instances(rows, "d", "db", None)
    assert len(pick_instances(rows, "d", "*", None)) == 3
