"""Vitals from /proc and statvfs, in the heartbeat's string form (protocol.md §1.3). Blocking: call in a thread."""
from __future__ import annotations

import os
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


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def disk_usage(path: str) -> contracts.DiskUsage:
    st = os.statvfs(path)
    used = st.f_blocks - st.f_bfree
    inodes_used = st.f_files - st.f_ffree
    return {"inode_percent": f"{_pct(inodes_used, st.f_files):.0f}",
            "percent": f"{_pct(used, used + st.f_bavail):.0f}"}


class Vitals:
    """CPU percentages are over the time since the previous sample (since boot for the first one)."""

    def __init__(self, paths: Paths, proc: Path = Path("/proc")) -> None:
        self.paths = paths
        self.proc = proc
        self._last = CpuTimes(0, 0, 0, 0)

    def cpu(self) -> contracts.CpuVitals:
        now = read_cpu(self.proc)
        last, self._last = self._last, now
        total = now.total - last.total
        return {"sys": f"{_pct(now.sys - last.sys, total):.1f}", "user": f"{_pct(now.user - last.user, total):.1f}",
                "wait": f"{_pct(now.wait - last.wait, total):.1f}"}

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
        total = mem.get("MemTotal", 0)
        used = total - mem.get("MemAvailable", mem.get("MemFree", 0))
        swap_total = mem.get("SwapTotal", 0)
        swap_used = swap_total - mem.get("SwapFree", 0)
        load = (self.proc / "loadavg").read_text().split()[:3]
        uptime = float((self.proc / "uptime").read_text().split()[0])
        return {
            "cpu": self.cpu(),
            "disk": self.disks(),
            "load": [f"{float(x):.2f}" for x in load],
            "mem": {"kb": str(used), "percent": f"{_pct(used, total):.0f}"},
            "swap": {"kb": str(swap_used), "percent": f"{_pct(swap_used, swap_total):.0f}"},
            "uptime": {"secs": int(uptime)},
        }
