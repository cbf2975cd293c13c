"""The heartbeat payload (§1.3) with vitals computed from a fake /proc, and the sent/delivered log lines."""
import json
import os
from pathlib import Path
from typing import cast

import pytest

from agent.heartbeat import Heartbeater, collect_payload, heartbeat_payload
from agent.jobsupervisor import MonitService
from agent.paths import Paths
from agent.spec import ApplySpec
from agent.vitals import Vitals, mount_points
from boshlab.contracts import DiskUsage, Heartbeat
from boshlab.contracts import Vitals as VitalsReport

from .conftest import FakePublisher, FakeSupervisor


@pytest.fixture
def proc(tmp_path: Path, vcap: Paths) -> Path:
    p = tmp_path / "proc"
    (p / "self").mkdir(parents=True)
    (p / "stat").write_text("cpu  700 100 200 8800 100 50 50 0 0 0\ncpu0 1 2 3 4\n")
    (p / "meminfo").write_text("MemTotal:       2000000 kB\nMemFree:         500000 kB\n"
                               "MemAvailable:   1500000 kB\nSwapTotal:      1000 kB\nSwapFree:       250 kB\n")
    (p / "loadavg").write_text("0.05 0.1 1.234 1/100 42\n")
    (p / "uptime").write_text("5021.77 9000.00\n")
    (p / "self" / "mountinfo").write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        f"2 1 0:2 / {vcap.store} rw - ext4 /dev/sdb rw\n"
        "3 1 0:3 / /with\\040space rw - tmpfs tmpfs rw\n")
    return p


def test_vitals_shape_and_values(vcap: Paths, proc: Path) -> None:
    v = Vitals(vcap, proc).collect()
    # cpu since boot: total 10000 jiffies; user+nice 800, system+irq+softirq 300, iowait 100
    assert v["cpu"] == {"sys": "3.0", "user": "8.0", "wait": "1.0"}
    assert v["load"] == ["0.05", "0.10", "1.23"]
    assert v["mem"] == {"kb": "500000", "percent": "25"}
    assert v["swap"] == {"kb": "750", "percent": "75"}
    assert v["uptime"] == {"secs": 5021}
    assert set(v["disk"]) == {"system", "persistent"}  # /var/vcap/data is no mount point here
    for d in cast(dict[str, DiskUsage], v["disk"]).values():
        assert set(d) == {"inode_percent", "percent"} and d["percent"].isdigit()


def test_cpu_is_the_delta_since_the_previous_sample(vcap: Paths, proc: Path) -> None:
    vitals = Vitals(vcap, proc)
    vitals.collect()
    (proc / "stat").write_text("cpu  750 150 300 9700 100 50 50 0\n")  # +100 user, +100 sys, +900 idle
    assert vitals.collect()["cpu"] == {"sys": "9.1", "user": "9.1", "wait": "0.0"}  # 100 of 1100


def test_mount_points_unescape(proc: Path) -> None:
    assert "/with space" in mount_points(proc)


def test_payload_before_and_after_apply() -> None:
    vitals = cast(VitalsReport, {"cpu": {}})
    before: Heartbeat = {
        "deployment": "", "job": None, "index": None, "job_state": "running", "vitals": vitals, "node_id": "",
        "number_of_processes": None}
    assert heartbeat_payload({}, "running", vitals, None) == before
    spec: ApplySpec = {"deployment": "redis-solo", "job": {"name": "redis"}, "index": 0, "id": "uuid-1"}
    after: Heartbeat = {
        "deployment": "redis-solo", "job": "redis", "index": 0, "job_state": "failing", "vitals": vitals,
        "node_id": "uuid-1", "number_of_processes": 2}
    assert heartbeat_payload(spec, "failing", vitals, 2) == after


async def test_heartbeat_sent_and_delivered(vcap: Paths, proc: Path, agent_log: list[str]) -> None:
    sup = FakeSupervisor(vcap, {"redis": MonitService("redis", monitor=1)})
    vitals = Vitals(vcap, proc)
    pub = FakePublisher()
    spec: ApplySpec = {"deployment": "d", "job": {"name": "redis"}, "index": 0, "id": "n"}
    hb = Heartbeater(pub, "agent-1", lambda: collect_payload(spec, sup, vitals), interval=30)
    await hb.beat_with_retries(1)
    assert len(pub.published) == 1
    subject, data = pub.published[0]
    body = json.loads(data)
    assert subject == "hm.agent.heartbeat.agent-1"
    assert set(body) == {"deployment", "job", "index", "job_state", "vitals", "node_id", "number_of_processes"}
    assert (body["job_state"], body["number_of_processes"]) == ("running", 1)
    assert set(body["vitals"]) == {"cpu", "disk", "load", "mem", "swap", "uptime"}
    assert [m for m in agent_log if "Heartbeat" in m] == ["INFO: Heartbeat sent", "DEBUG: Heartbeat delivered"]
    sup.reachable = False
    agent_log.clear()
    await hb.beat_with_retries(1)
    assert json.loads(pub.published[1][1])["number_of_processes"] is None
    assert json.loads(pub.published[1][1])["job_state"] == "unknown"


async def test_failed_heartbeats_are_retried_and_never_raise(vcap: Paths, agent_log: list[str]) -> None:
    class Flaky(FakePublisher):
        fails = 2

        async def publish(self, subject: str, payload: bytes) -> None:
            if self.fails:
                self.fails -= 1
                raise ConnectionError("nats down")
            await super().publish(subject, payload)

    async def payload() -> Heartbeat:
        return cast(Heartbeat, {"x": 1})
    pub = Flaky()
    hb = Heartbeater(pub, "a", payload, interval=30, retry_delay=0.001)
    await hb.beat_with_retries(3)
    assert len(pub.published) == 1
    assert agent_log[0] == "WARN: Heartbeat failed (attempt 1/3): ConnectionError: nats down"
    pub.fails = 5
    await hb.beat_with_retries(2)  # gives up quietly
    assert len(pub.published) == 1


def test_real_proc_vitals_work_here(vcap: Paths) -> None:
    v = Vitals(vcap).collect()
    assert "system" in v["disk"] or not os.path.ismount("/")
    assert float(v["mem"]["percent"]) >= 0
