"""A VM's vitals are its container's (issue 10): memory and CPU from its cgroup (v1 and v2), uptime since its
PID 1 started, load from its own runnable tasks; /proc only for what a cgroup does not say."""
from pathlib import Path

import pytest

from agent.paths import Paths
from agent.vitals import CLK_TCK, Vitals

GIB = 1 << 30


def fake_proc(root: Path, *, uptime: float, pid1_start_ticks: int, states: list[str]) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "stat").write_text("cpu  700 100 200 8800 100 50 50 0 0 0\n")
    (proc / "meminfo").write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n"
                                  "SwapTotal:      0 kB\nSwapFree:       0 kB\n")
    (proc / "loadavg").write_text("7.00 6.00 5.00 3/900 42\n")          # the host's: never shown for a VM
    (proc / "uptime").write_text(f"{uptime} 1.0\n")
    (proc / "self" / "mountinfo").write_text("1 0 0:1 / / rw - overlay overlay rw\n")
    fields = ["S"] + ["0"] * 18 + [str(pid1_start_ticks)] + ["0"] * 10   # field 22: starttime
    (proc / "1").mkdir()
    (proc / "1" / "stat").write_text(f"1 (docker-init) {' '.join(fields)}\n")
    for pid, state in enumerate(states, start=10):
        task = proc / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{pid} (a (weird) name) {state} 1 1 1\n")
    return proc


def cgroup_v1(root: Path, *, used: int, inactive: int, limit: int, user_ticks: int, sys_ticks: int) -> Path:
    cg = root / "sys" / "fs" / "cgroup"
    (cg / "memory").mkdir(parents=True)
    (cg / "cpuacct").mkdir()
    (cg / "memory" / "memory.usage_in_bytes").write_text(f"{used}\n")
    (cg / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (cg / "memory" / "memory.stat").write_text(f"cache 5\ninactive_file {inactive}\ntotal_inactive_file {inactive}\n")
    (cg / "cpuacct" / "cpuacct.stat").write_text(f"user {user_ticks}\nsystem {sys_ticks}\n")
    return cg


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_v1_memory_cpu_uptime_and_load_are_the_containers(tmp_path: Path, vcap: Paths,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    proc = fake_proc(tmp_path, uptime=5000.0, pid1_start_ticks=4900 * CLK_TCK, states=["R", "S", "D", "S"])
    cg = cgroup_v1(tmp_path, used=40 * 1024 * 1024, inactive=8 * 1024 * 1024, limit=9223372036854771712,
                   user_ticks=20 * CLK_TCK, sys_ticks=10 * CLK_TCK)
    clock = Clock()
    vitals = Vitals(vcap, proc, cg, clock=clock)
    v = vitals.collect()
    assert v["mem"]["kb"] == str(32 * 1024), "usage less inactive page cache"
    assert v["mem"]["percent"] == "0", "no limit: of the machine's 24 GB"
    assert v["uptime"] == {"secs": 100}, "since the container's PID 1 started, not the host's boot"
    # first sample: since the VM started, 100 s on 2 CPUs: 20 s user = 10 %, 10 s system = 5 %
    assert v["cpu"] == {"sys": "5.0", "user": "10.0", "wait": "0.0"}
    assert v["load"] == ["2.00", "2.00", "2.00"], "R and D tasks of its own namespace, not the host's 7.00"
    # 10 s later: +3 s user on 2 CPUs = 15 %; the load decays towards the new count (0 runnable)
    (cg / "cpuacct" / "cpuacct.stat").write_text(f"user {23 * CLK_TCK}\nsystem {10 * CLK_TCK}\n")
    for pid in (10, 12):
        (proc / str(pid) / "task" / str(pid) / "stat").write_text(f"{pid} (x) S 1 1 1\n")
    clock.now += 10
    v = vitals.collect()
    assert v["cpu"] == {"sys": "0.0", "user": "15.0", "wait": "0.0"}
    one, five, fifteen = (float(x) for x in v["load"])
    assert one < five < fifteen < 2.0 and one == pytest.approx(2 * 2.718281828 ** (-10 / 60), abs=0.01)


def test_v1_a_memory_limit_is_the_vms_total(tmp_path: Path, vcap: Paths) -> None:
    proc = fake_proc(tmp_path, uptime=50.0, pid1_start_ticks=0, states=[])
    cg = cgroup_v1(tmp_path, used=300 * 1024 * 1024, inactive=44 * 1024 * 1024, limit=512 * 1024 * 1024,
                   user_ticks=0, sys_ticks=0)
    assert Vitals(vcap, proc, cg).collect()["mem"] == {"kb": str(256 * 1024), "percent": "50"}


def test_v2(tmp_path: Path, vcap: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    proc = fake_proc(tmp_path, uptime=1000.0, pid1_start_ticks=800 * CLK_TCK, states=["R"])
    cg = tmp_path / "sys" / "fs" / "cgroup"
    cg.mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpu memory pids\n")
    (cg / "memory.current").write_text(f"{GIB}\n")
    (cg / "memory.max").write_text(f"{2 * GIB}\n")
    (cg / "memory.stat").write_text(f"anon 1\ninactive_file {GIB // 2}\n")
    (cg / "cpu.stat").write_text("usage_usec 120000000\nuser_usec 80000000\nsystem_usec 40000000\n")
    v = Vitals(vcap, proc, cg).collect()
    assert v["mem"] == {"kb": str(GIB // 2 // 1024), "percent": "25"}
    assert v["uptime"] == {"secs": 200}
    assert v["cpu"] == {"sys": "5.0", "user": "10.0", "wait": "0.0"}      # 80 s and 40 s of 200 s × 4 CPUs
    assert v["load"] == ["1.00", "1.00", "1.00"]


def test_without_a_cgroup_everything_comes_from_proc(tmp_path: Path, vcap: Paths) -> None:
    proc = fake_proc(tmp_path, uptime=5000.0, pid1_start_ticks=4900 * CLK_TCK, states=["R"])
    v = Vitals(vcap, proc, tmp_path / "no-cgroup").collect()
    assert v["load"] == ["7.00", "6.00", "5.00"] and v["uptime"] == {"secs": 5000}
    assert v["mem"] == {"kb": "4000000", "percent": "17"}
