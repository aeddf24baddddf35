"""What a process has cost so far, read from /proc: CPU seconds (user + system, every
thread), resident memory now and at its peak (VmRSS, VmHWM)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    user: float  # CPU seconds in user space, all threads
    system: float  # CPU seconds in the kernel, all threads
    rss_kib: int
    hwm_kib: int

    @property
    def cpu(self) -> float:
        return self.user + self.system


def parse_stat_cpu(stat: str) -> tuple[float, float]:
    """(utime, stime) in seconds from a /proc/PID/stat line (pure; the name may hold spaces)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) * TICK, int(fields[12]) * TICK


def parse_status_kib(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def usage(pid: int) -> Usage:
    proc = Path("/proc") / str(pid)
    status = (proc / "status").read_text()
    user, system = parse_stat_cpu((proc / "stat").read_text())
    return Usage(
        user=user,
        system=system,
        rss_kib=parse_status_kib(status, "VmRSS"),
        hwm_kib=parse_status_kib(status, "VmHWM"),
    )


def own_cpu() -> float:
    """This process's CPU seconds (the harness: the blackbox scraper lives here)."""
    times = os.times()
    return times.user + times.system


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others, all CPUs, since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) * TICK
