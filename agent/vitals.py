"""Vitals in the heartbeat's string form (protocol.md §1.3). Blocking: call in a thread.

A VM here is a container: its memory and CPU are its cgroup's (v1 or v2, /sys/fs/cgroup), its uptime is since
its PID 1 started, its load is the runnable and uninterruptible tasks of its own PID namespace averaged as the
kernel does (1, 5, 15 minutes); what the cgroup does not tell (a memory limit, iowait, swap) comes from /proc.
Without a cgroup to read (an agent run on a host in tests), everything comes from /proc as on a real VM."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boshlab import contracts

from .paths import Paths


def mount_points(proc: Path = Path("/proc")) -> set[str]:
    """Mount points of this process's mount namespace (field 5 of /proc/self/mountinfo, octal-unescaped)."""
    points: set[str] = set()
    try:
        text = (proc / "self" / "mountinfo").read_text()
    except OSError:
        return points
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(fields[4].encode().decode("unicode_escape"))
    return points


@dataclass
class CpuTimes:
    user: int
    sys: int
    wait: int
    total: int


def read_cpu(proc: Path = Path("/proc")) -> CpuTimes:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]] + [0] * 8
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            return CpuTimes(user + nice, system + irq + softirq, iowait,
                            user + nice + system + idle + iowait + irq + softirq + steal)
    raise OSError("no cpu line in /proc/stat")


def read_meminfo(proc: Path = Path("/proc")) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
UNLIMITED = 1 << 60            # a cgroup memory limit above this is "no limit"
MAX_TASKS = 4096               # tasks looked at for the load (a VM has a few dozen)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _stat_fields(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class Cgroup:
    """The container's memory and CPU time from its cgroup (v2 when cgroup.controllers exists, else v1)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()
        # whether this is a VM's cgroup to read at all (looked at once: uptime and load depend on it too)
        self.present = (root / "memory.current" if self.v2 else root / "memory" / "memory.usage_in_bytes").exists()

    def memory(self) -> tuple[int, int | None] | None:
        """(bytes used less inactive page cache, limit or None), or None when there is no cgroup to read."""
        if self.v2:
            current, limit, stat = (_read(self.root / n) for n in ("memory.current", "memory.max", "memory.stat"))
            inactive = _stat_fields(stat).get("inactive_file", 0)
        else:
            mem = self.root / "memory"
            current, limit, stat = (_read(mem / n) for n in ("memory.usage_in_bytes", "memory.limit_in_bytes",
                                                              "memory.stat"))
            fields = _stat_fields(stat)
            inactive = fields.get("total_inactive_file", fields.get("inactive_file", 0))
        if current is None or not current.strip().isdigit():
            return None
        used = max(0, int(current) - inactive)
        lim = int(limit) if limit is not None and limit.strip().isdigit() else None
        return used, (lim if lim is not None and lim < UNLIMITED else None)

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds the cgroup has used, or None."""
        if self.v2:
            f = _stat_fields(_read(self.root / "cpu.stat"))
            if "user_usec" not in f:
                return None
            return f["user_usec"] / 1e6, f.get("system_usec", 0) / 1e6
        f = _stat_fields(_read(self.root / "cpuacct" / "cpuacct.stat"))
        if "user" not in f:
            return None
        return f["user"] / CLK_TCK, f.get("system", 0) / CLK_TCK


def runnable_tasks(proc: Path) -> int:
    """Tasks running or in uninterruptible sleep (what the kernel's load average counts) in this PID namespace."""
    n = 0
    for seen, task_stat in enumerate(proc.glob("[0-9]*/task/[0-9]*/stat")):
        if seen >= MAX_TASKS:
            break
        text = _read(task_stat)
        if text:
            state = text.rpartition(")")[2].split()[:1]
            if state and state[0] in ("R", "D"):
                n += 1
    return n


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def disk_usage(path: str) -> contracts.DiskUsage:
    st = os.statvfs(path)
    used = st.f_blocks - st.f_bfree
    inodes_used = st.f_files - st.f_ffree
    return {"inode_percent": f"{_pct(inodes_used, st.f_files):.0f}",
            "percent": f"{_pct(used, used + st.f_bavail):.0f}"}


class Vitals:
    """CPU percentages are over the time since the previous sample (since the VM started for the first one)."""

    def __init__(self, paths: Paths, proc: Path = Path("/proc"), cgroup: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.proc = proc
        if cgroup is None:      # a lab VM is a Docker container (/.dockerenv); an agent on a host reads /proc only
            in_vm = proc == Path("/proc") and Path("/.dockerenv").exists()
            cgroup = Path("/sys/fs/cgroup") if in_vm else proc.parent / "sys" / "fs" / "cgroup"
        root = cgroup
        self.cgroup = Cgroup(root)
        self.clock = clock
        self._last = CpuTimes(0, 0, 0, 0)
        self._last_cg: tuple[float, float, float] | None = None      # (clock, user s, system s)
        self._load: list[float] | None = None
        self._load_at = 0.0

    def uptime(self) -> float:
        """Seconds since this VM's PID 1 started (its container), else since the machine booted."""
        host = float((self.proc / "uptime").read_text().split()[0])
        text = _read(self.proc / "1" / "stat")
        if text and self.cgroup.present:
            fields = text.rpartition(")")[2].split()
            if len(fields) > 19 and fields[19].isdigit():       # field 22 of the whole line: starttime
                return max(0.0, host - int(fields[19]) / CLK_TCK)
        return host

    def cpu(self) -> contracts.CpuVitals:
        cg = self.cgroup.cpu_seconds()
        if cg is not None:
            now = self.clock()
            if self._last_cg is None:
                elapsed, (user, system) = max(self.uptime(), 1e-3), cg
            else:
                then, u0, s0 = self._last_cg
                elapsed, user, system = max(now - then, 1e-3), cg[0] - u0, cg[1] - s0
            self._last_cg = (now, cg[0], cg[1])
            capacity = elapsed * (os.cpu_count() or 1)      # the machine's CPUs, as a VM's top would count them
            return {"sys": f"{_pct(system, capacity):.1f}", "user": f"{_pct(user, capacity):.1f}", "wait": "0.0"}
        now_t = read_cpu(self.proc)
        last, self._last = self._last, now_t
        total = now_t.total - last.total
        return {"sys": f"{_pct(now_t.sys - last.sys, total):.1f}", "user": f"{_pct(now_t.user - last.user, total):.1f}",
                "wait": f"{_pct(now_t.wait - last.wait, total):.1f}"}

    def load(self) -> list[str]:
        """The host's load average without a cgroup; else this VM's own (kernel-style exponential averages of
        its runnable tasks, sampled at each heartbeat)."""
        if not self.cgroup.present:
            return [f"{float(x):.2f}" for x in (self.proc / "loadavg").read_text().split()[:3]]
        n, now = runnable_tasks(self.proc), self.clock()
        if self._load is None:
            self._load = [float(n)] * 3
        else:
            dt = max(now - self._load_at, 0.0)
            self._load = [avg * math.exp(-dt / period) + n * (1 - math.exp(-dt / period))
                          for avg, period in zip(self._load, (60.0, 300.0, 900.0), strict=True)]
        self._load_at = now
        return [f"{x:.2f}" for x in self._load]

    def disks(self) -> contracts.DiskVitals:
        mounted = mount_points(self.proc)
        out: contracts.DiskVitals = {}
        if "/" in mounted:
            out["system"] = disk_usage("/")
        if str(self.paths.data) in mounted:
            out["ephemeral"] = disk_usage(str(self.paths.data))
        if str(self.paths.store) in mounted:
            out["persistent"] = disk_usage(str(self.paths.store))
        return out

    def collect(self) -> contracts.Vitals:
        mem = read_meminfo(self.proc)
        total = mem.get("MemTotal", 0) * 1024
        used = total - mem.get("MemAvailable", mem.get("MemFree", 0)) * 1024
        cg_mem = self.cgroup.memory()
        if cg_mem is not None:
            used, limit = cg_mem
            total = min(limit, total) if limit is not None and total else (limit or total)
        swap_total = mem.get("SwapTotal", 0)
        swap_used = swap_total - mem.get("SwapFree", 0)
        return {
            "cpu": self.cpu(),
            "disk": self.disks(),
            "load": self.load(),
            "mem": {"kb": str(used // 1024), "percent": f"{_pct(used, total):.0f}"},
            "swap": {"kb": str(swap_used), "percent": f"{_pct(swap_used, swap_total):.0f}"},
            "uptime": {"secs": int(self.uptime())},
        }
