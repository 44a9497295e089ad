"""The host's TSC rate, for the guest kernel's ``tsc_early_khz=``.

microvm has neither an HPET nor a PM timer, so a guest kernel calibrates its TSC against the
PIT, which under a busy TCG host fails often enough to hang about one boot in four
(research note qemu-microvm-2026-12.md); telling it the rate skips the calibration. Under
TCG the guest's TSC runs at the host's rate, and KVM passes the host's rate on.

Linux publishes no TSC rate directly. /proc/cpuinfo's ``cpu MHz`` is the TSC rate only when
the kernel has no APERF/MPERF counters to measure the actual clock with (true in VMs such as
this host, flag ``aperfmperf`` absent); on bare metal it is the current, scaled frequency.
There the kernel's boot log line ``tsc: Refined TSC clocksource calibration`` (or ``tsc:
Detected … MHz``) is read instead, when the log is still readable. Without either the
answer is None, and the caller leaves the flag out.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

_LOG_RE = re.compile(r"tsc: (?:Refined TSC clocksource calibration|Detected)[^:]*: ([0-9]+\.[0-9]+) MHz")


@functools.cache
def host_tsc_khz() -> int | None:
    """The TSC rate in kHz, or None when it cannot be told reliably (see the module doc)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    if "constant_tsc" not in flags or "nonstop_tsc" not in flags:
        return None  # a TSC whose rate changes cannot be given as one number
    if "aperfmperf" not in flags:
        mhz = next((line.split(":")[1] for line in info.splitlines() if line.startswith("cpu MHz")), None)
        if mhz is not None:
            return round(float(mhz) * 1000)
    return _from_kernel_log()


def _from_kernel_log() -> int | None:
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _LOG_RE.findall(log)
    return round(float(found[-1]) * 1000) if found else None
