"""Director logic without Docker: manual networks and static IPs, IP assignment, update batches and the order
of instance updates (canaries, max_in_flight, stop at the first failure), health states, meltdown, the
deployment lock and task cancellation, and the config's heartbeat threshold."""
from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

import pytest

from director.config import Config
from director.deploy import Deployer
from director.health import UNRESPONSIVE, HealthMonitor, HealthSettings, Heartbeat, meltdown, process_state
from director.instance_updater import InstanceUpdater
from director.manifest import Manifest, ManifestError, parse_manifest
from director.planner import Change, DesiredInstance, PlanError, assign_ips, update_batches
from director.store import InstanceRow, Instances, Store
from director.tasks import SHUTDOWN_REASON, DeploymentLocked, Task, TaskFailed, TaskNotRunning, TaskRunner

BASE = "name: d\nreleases: [{name: r}]\n"


def manifest(networks: str, groups: str, update: str = "") -> str:
    return BASE + update + "networks:\n" + networks + "instance_groups:\n" + groups


NET = """- name: lab
  type: manual
  subnets:
  - range: 10.250.7.0/24
    gateway: 10.250.7.1
    reserved: [10.250.7.2 - 10.250.7.9]
    static: [10.250.7.10 - 10.250.7.19]
"""


def test_manual_network_with_static_ips() -> None:
    m = parse_manifest(manifest(NET, """- name: web
  instances: 2
  jobs: [{name: j}]
  networks: [{name: lab, static_ips: [10.250.7.12, 10.250.7.11]}]
- name: worker
  instances: 1
  jobs: [{name: j}]
  networks: [{name: lab}]
"""))
    sub = m.networks["lab"]["subnet"]
    assert sub.range == ipaddress.IPv4Network("10.250.7.0/24") and str(sub.gateway) == "10.250.7.1"
    assert m.group("web").static_ips == {"lab": ["10.250.7.11", "10.250.7.12"]}
    pool = [str(a) for a in sub.dynamic_pool()]
    assert pool[0] == "10.250.7.20" and "10.250.7.1" not in pool and "10.250.7.5" not in pool and "10.250.7.255" not in pool


@pytest.mark.parametrize("networks, groups, problem", [
    (NET, "- {name: g, instances: 2, jobs: [{name: j}], networks: [{name: lab, static_ips: [10.250.7.10]}]}\n",
     "2 instance\\(s\\) but 1 static IP"),
    (NET, "- {name: g, instances: 1, jobs: [{name: j}], networks: [{name: lab, static_ips: [10.250.7.30]}]}\n",
     "not in the static ranges"),
    (NET, "- {name: g, instances: 1, jobs: [{name: j}], networks: [{name: lab, static_ips: [10.250.8.10]}]}\n",
     "outside the subnet"),
    (NET, "- {name: a, instances: 1, jobs: [{name: j}], networks: [{name: lab, static_ips: [10.250.7.10]}]}\n"
          "- {name: b, instances: 1, jobs: [{name: j}], networks: [{name: lab, static_ips: [10.250.7.10]}]}\n",
     "given to both"),
    ("- {name: dyn, type: dynamic}\n",
     "- {name: g, instances: 1, jobs: [{name: j}], networks: [{name: dyn, static_ips: [10.0.0.1]}]}\n",
     "not a manual network with a subnet"),
    ("- {name: n, type: manual, subnets: [{range: 10.0.0.1/24}]}\n", "- {name: g, jobs: [{name: j}]}\n",
     "range must be an IPv4 network"),
    ("- {name: n, type: manual, subnets: [{range: 10.0.0.0/24, gateway: 10.0.1.1}]}\n", "- {name: g, jobs: [{name: j}]}\n",
     "gateway"),
    ("- {name: n, type: manual, subnets: [{range: 10.0.0.0/24, reserved: [10.0.0.5], static: [10.0.0.5]}]}\n",
     "- {name: g, jobs: [{name: j}]}\n", "both reserved and static"),
    ("- {name: n, type: dynamic, subnets: [{range: 10.0.0.0/24}]}\n", "- {name: g, jobs: [{name: j}]}\n",
     "only manual networks"),
    ("- {name: n, type: vip}\n", "- {name: g, jobs: [{name: j}]}\n", "type must be"),
])
def test_bad_networks_are_named(networks: str, groups: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest(manifest(networks, groups))


@pytest.mark.parametrize("update, problem", [
    ("update: {canaries: -1}\n", "canaries"),
    ("update: {max_in_flight: '0%'}\n", "max_in_flight"),
    ("update: {max_in_flight: ten}\n", "max_in_flight"),
    ("update: {update_watch_time: 'soon'}\n", "update_watch_time"),
    ("update: {serial: maybe}\n", "serial"),
])
def test_bad_update_blocks_are_named(update: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest(manifest("- {name: n, type: dynamic}\n", "- {name: g, jobs: [{name: j}]}\n", update))


def test_assign_ips_static_keep_and_lowest_free() -> None:
    m = parse_manifest(manifest(NET, "- {name: g, jobs: [{name: j}], networks: [{name: lab}]}\n"))
    sub = m.networks["lab"]["subnet"]
    got = assign_ips(sub, [("a", "10.250.7.10", None), ("b", None, "10.250.7.40"), ("c", None, None), ("d", None, "10.250.7.11")],
                     taken={"10.250.7.20": "other/x"})
    assert got == {"a": "10.250.7.10", "b": "10.250.7.40", "c": "10.250.7.21", "d": "10.250.7.22"}
    with pytest.raises(PlanError, match="already used by other/x"):
        assign_ips(sub, [("a", "10.250.7.10", None)], taken={"10.250.7.10": "other/x"})


def test_update_batches_follow_serial() -> None:
    groups = "".join(f"- {{name: {n}, jobs: [{{name: j}}]{s}}}\n" for n, s in
                     (("a", ""), ("b", ", update: {serial: false}"), ("c", ", update: {serial: false}"), ("d", "")))
    m = parse_manifest(manifest("- {name: n, type: dynamic}\n", groups))
    assert [[g.name for g in b] for b in update_batches(m)] == [["a"], ["b", "c"], ["d"]]


class FakeTask(Task):
    def __init__(self, tmp: Path) -> None:
        super().__init__(1, "test", tmp)
        self.events: list[tuple[float, str, str]] = []

    def event(self, stage: str, task: str, **kw: Any) -> None:
        super().event(stage, task, **kw)
        self.events.append((time.monotonic(), task, kw.get("state", "")))


class OrderUpdater:
    """InstanceUpdater.update with the agent work replaced: each instance 'updates' for a while; one may fail."""

    def __init__(self, fail: Collection[int] = ()) -> None:
        self.fail = set(fail)
        self.running = 0
        self.peak = 0
        self.order: list[int] = []

    async def update(self, change: Change, watch_schedule: list[float]) -> None:
        inst = change.instance
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(inst.index)
        await asyncio.sleep(0.05)
        self.running -= 1
        if inst.index in self.fail:
            raise TaskFailed(f"{inst.index} is not running after update")


def deployer(task: FakeTask) -> Deployer:
    """A Deployer for update_group, which uses just its task (the rest is never touched)."""
    nothing = cast(Any, None)
    return Deployer(nothing, nothing, nothing, nothing, nothing, nothing, nothing, nothing, nothing, nothing,
                    nothing, task)


def row(g: str, i: int) -> InstanceRow:
    return InstanceRow(f"id-{g}-{i}", "d", g, i, "agent", "x")


def plan_for(text: str, kind: str = "update") -> tuple[Manifest, list[Change]]:
    m = parse_manifest(text)
    return m, [Change(DesiredInstance(g, i, f"id-{g.name}-{i}", row(g.name, i)), kind, ("test",))
               for g in m.groups for i in range(g.instances)]


async def update_group(d: Deployer, updater: OrderUpdater, m: Manifest, changes: list[Change]) -> None:
    await d.update_group(cast(InstanceUpdater, updater), m, m.groups[0], changes)


async def test_canaries_first_then_max_in_flight(tmp_path: Path) -> None:
    m, plan = plan_for(manifest("- {name: n, type: dynamic}\n", "- {name: g, instances: 7, jobs: [{name: j}]}\n",
                                "update: {canaries: 2, max_in_flight: 3}\n"))
    task, u = FakeTask(tmp_path), OrderUpdater()
    await update_group(deployer(task), u, m, plan)
    starts = [(t, name) for t, name, state in task.events if state == "started"]
    ends = {name: t for t, name, state in task.events if state == "finished"}
    canaries = [s for s in starts if "(canary)" in s[1]]
    assert len(canaries) == 2
    last_canary_end = max(ends[name] for _, name in canaries)
    assert all(t >= last_canary_end for t, name in starts if "(canary)" not in name)
    assert u.peak == 3
    assert sorted(u.order) == list(range(7))


async def test_a_failed_canary_stops_the_group(tmp_path: Path) -> None:
    m, plan = plan_for(manifest("- {name: n, type: dynamic}\n", "- {name: g, instances: 4, jobs: [{name: j}]}\n",
                                "update: {canaries: 1, max_in_flight: 2}\n"))
    u = OrderUpdater(fail={0})
    with pytest.raises(TaskFailed, match="0 is not running"):
        await update_group(deployer(FakeTask(tmp_path)), u, m, plan)
    assert u.order == [0]


async def test_after_a_failure_no_new_instance_starts(tmp_path: Path) -> None:
    m, plan = plan_for(manifest("- {name: n, type: dynamic}\n", "- {name: g, instances: 6, jobs: [{name: j}]}\n",
                                "update: {canaries: 1, max_in_flight: 2}\n"))
    u = OrderUpdater(fail={1})
    with pytest.raises(TaskFailed):
        await update_group(deployer(FakeTask(tmp_path)), u, m, plan)
    assert sorted(u.order) == [0, 1, 2]   # 1 and 2 were in flight together; nothing after the failure


async def test_unchanged_instances_are_not_updated(tmp_path: Path) -> None:
    m, plan = plan_for(manifest("- {name: n, type: dynamic}\n", "- {name: g, instances: 3, jobs: [{name: j}]}\n",
                                "update: {canaries: 1, max_in_flight: 1}\n"), kind="unchanged")
    plan[1] = Change(plan[1].instance, "update", ("configuration changed",))
    task, u = FakeTask(tmp_path), OrderUpdater()
    await update_group(deployer(task), u, m, plan)
    assert u.order == [1]
    assert [name for _, name, state in task.events if state == "started"] == [f"{plan[1].instance.label} (canary)"]


def test_process_state_threshold_never_flaps() -> None:
    now = 1000.0
    hb = Heartbeat(now - 5, {"job_state": "running"})
    assert process_state(True, hb, now, timeout=6, watching_since=0) == "running"
    assert process_state(True, Heartbeat(now - 7, {"job_state": "running"}), now, 6, 0) == UNRESPONSIVE
    assert process_state(True, None, now, 6, watching_since=now - 3) == "unknown"
    assert process_state(True, None, now, 6, watching_since=now - 30) == UNRESPONSIVE
    assert process_state(False, hb, now, 6, 0) == "no vm"


def test_meltdown() -> None:
    assert not meltdown(1, 3, 50, 5)
    assert meltdown(6, 10, 50, 5)
    assert not meltdown(5, 20, 50, 5)


def test_agent_timeout_must_be_above_two_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSH_LAB_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("BOSH_LAB_AGENT_TIMEOUT", "4")
    with pytest.raises(SystemExit, match="above two heartbeat intervals"):
        Config.from_env()
    monkeypatch.setenv("BOSH_LAB_AGENT_TIMEOUT", "6")
    assert Config.from_env().agent_timeout == 6
    monkeypatch.delenv("BOSH_LAB_AGENT_TIMEOUT")
    assert Config.from_env().agent_timeout == 60
    monkeypatch.setenv("BOSH_LAB_HEARTBEAT_INTERVAL", "30")
    assert Config.from_env().agent_timeout == 75



@pytest.fixture
def runner(store: Store, tmp_path: Path) -> TaskRunner:
    return TaskRunner(store.tasks, str(tmp_path))


async def test_one_task_per_deployment(runner: TaskRunner) -> None:
    gate = asyncio.Event()

    async def slow(task: Task) -> str:
        await gate.wait()
        return "ok"
    first = await runner.start("create deployment", slow, "d1", lock=True)
    with pytest.raises(DeploymentLocked, match=f"locked by task {first}"):
        await runner.start("create deployment", slow, "d1", lock=True)
    other = await runner.start("create deployment", slow, "d2", lock=True)   # another deployment: fine
    gate.set()
    assert (await runner.wait(first)).state == "done"
    await runner.wait(other)
    again = await runner.start("create deployment", slow, "d1", lock=True)   # the lock went with the task
    assert (await runner.wait(again)).state == "done"


async def test_cancel_and_shutdown(runner: TaskRunner) -> None:
    async def forever(task: Task) -> str:
        await asyncio.sleep(3600)
        return "never"
    t = await runner.start("create deployment", forever, "d", lock=True)
    await asyncio.sleep(0.05)
    assert await runner.cancel(t) == "cancelling"
    row = await runner.wait(t)
    assert row.state == "cancelled" and "d" not in runner.locks
    with pytest.raises(TaskNotRunning, match="state cancelled"):
        await runner.cancel(t)
    t2 = await runner.start("create deployment", forever, "d", lock=True)
    await asyncio.sleep(0.05)
    await runner.cancel_all()
    got = await runner.get(t2)
    assert got is not None and got.state == "error" and got.result == SHUTDOWN_REASON


async def test_recover_fails_tasks_of_a_dead_director(store: Store, tmp_path: Path) -> None:
    tid = await store.tasks.create("x", "d")     # 'processing', as a dead director left it
    assert await TaskRunner(store.tasks, str(tmp_path)).recover() == [tid]
    row = await store.tasks.get(tid)
    assert row is not None and row.state == "error" and row.result is not None and "director stopped" in row.result


def monitor(agent_timeout: float = 6.0) -> HealthMonitor:
    async def never(deployment: str) -> bool:
        return False

    async def resurrect(deployment: str, ids: list[str]) -> int:
        raise AssertionError("not here")
    return HealthMonitor(cast(Instances, None), HealthSettings(agent_timeout, 1.0), never, lambda d: False, resurrect)


def test_the_monitor_forgets_long_silent_agents_no_instance_has() -> None:
    hm = monitor()
    now = 10_000.0
    hm.heartbeats = {"old-gone": Heartbeat(now - 700, {}), "old-known": Heartbeat(now - 700, {}),
                     "fresh": Heartbeat(now - 1, {})}
    hm.prune(now, known={"old-known"})
    assert set(hm.heartbeats) == {"old-known", "fresh"}


def test_the_monitor_states_an_instance_row() -> None:
    hm = monitor()
    now = 10_000.0
    hm.started_at = now - 100
    hm.heartbeats = {"a1": Heartbeat(now - 1, {"job_state": "failing"}), "a2": Heartbeat(now - 10, {})}
    assert hm.state_of(InstanceRow("i1", "d", "g", 0, "a1", "cid-1"), now) == "failing"
    assert hm.state_of(InstanceRow("i2", "d", "g", 1, "a2", "cid-2"), now) == UNRESPONSIVE
    assert hm.state_of(InstanceRow("i3", "d", "g", 2, "a3", "cid-3"), now) == UNRESPONSIVE   # never heard of
    assert hm.state_of(InstanceRow("i4", "d", "g", 3), now) == "no vm"
