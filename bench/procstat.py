"""What Linux says of a process or the machine now (/proc): resident memory and CPU time, for the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process now (Linux), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores: who else competes for them."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    return (total - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), total / os.sysconf("SC_CLK_TCK")
