"""load/vm_probe.py: the observers load/bench_vm.py breaks its figures down with read what the
product really writes (vminit's console lines, hostd's JSON log, /proc), so a change on either
side shows here rather than as a silently missing row in a benchmark run."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guest import vminit
from load.vm_probe import (
    HostdLog,
    event_time,
    first_event,
    guest_boot,
    process_started,
    request_ms,
    runtime_event,
    timing_fields,
    vmm_memory,
)


def test_guest_boot_reads_the_milestones_of_a_cold_boot(capsys: pytest.CaptureFixture[str]) -> None:
    vminit.console("ready: sb-1 10.0.0.2/24 channel=serial")
    vminit.console("agent started (pid 42)")
    ready, agent = capsys.readouterr().out.splitlines()
    console = "\n".join(
        [
            "[    0.000000] Linux version 6.1.0-57-cloud-amd64",
            "[    0.981204] Run /init as init process",
            "dnah-init: switching to vminit",
            ready,
            agent,
            "dnah-channel: in sync with the host",
        ]
    )
    boot = guest_boot(console)
    assert boot is not None
    assert boot.init == 0.981204
    assert boot.vminit_ready == float(ready.split("[")[1].split("]")[0])
    assert boot.agent_started == float(agent.split("[")[1].split("]")[0])


def test_the_console_lines_parsed_are_the_ones_vminit_writes() -> None:
    source = inspect.getsource(vminit)
    assert re.search(r'console\(\s*f"ready: ', source)
    assert re.search(r'console\(\s*f"agent started ', source)


def test_a_restored_vms_console_holds_no_boot() -> None:
    console = "dnah-channel: in sync with the host\ndnah-vminit: [16.245] identity refreshed: sb-1\n"
    assert guest_boot(console) is None


def test_hostd_log_lines_after_a_mark(tmp_path: Path) -> None:
    path = tmp_path / "hostd.log"
    before = {"event": "request", "method": "POST", "path": "/sandboxes", "duration_ms": 1.0}
    path.write_text(json.dumps(before) + "\n")
    log = HostdLog(path)
    mark = log.mark()
    lines = [
        {"event": "sandbox created", "sandbox_id": "a", "total_ms": 4111.9, "agent_ms": 70, "pid": 7,
         "timestamp": "2026-12-05T14:24:36.646783Z"},
        {"event": "agent channel in sync", "serial": "/x"},
        {"event": "request", "method": "POST", "path": "/sandboxes/a/exec", "duration_ms": 30.9},
        {"event": "request", "method": "POST", "path": "/sandboxes", "duration_ms": 4114.8},
    ]  # fmt: skip
    with path.open("a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
        f.write("Traceback (most recent call last):\n")  # a non-JSON line is skipped
    events = log.since(mark)
    assert len(events) == 4
    assert request_ms(events, "POST", "/sandboxes") == 4114.8  # the whole path, not a prefix
    assert request_ms(events, "POST", "/sandboxes/[0-9a-f-]+/exec") == 30.9
    assert request_ms(events, "PUT", "/sandboxes") is None
    created = runtime_event(events, "sandbox created", "a")
    assert timing_fields(created) == {"total_ms": 4111.9, "agent_ms": 70.0}
    assert runtime_event(events, "sandbox created", "b") is None
    assert first_event(events, "agent channel in sync") == lines[1]
    assert created is not None and event_time(created) == 1796480676.646783


def test_vmm_memory_counts_the_mapping_of_the_guests_size() -> None:
    """Measured in a child of its own, as a VMM is: this test's own process (an xdist worker)
    may hold any mapping of any size, e.g. a library's arena of exactly the guest's size."""
    size_mb, touched_mb = 37, 5
    script = (
        "import mmap, sys\n"
        f"area = mmap.mmap(-1, {size_mb} * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "area.madvise(mmap.MADV_NOHUGEPAGE)  # one page per touch, not a 2 MiB huge page\n"
        f"for offset in range(0, {touched_mb} * 2**20, mmap.PAGESIZE):\n"
        "    area[offset] = 1\n"
        "print('touched', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-S", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "touched\n"
        split = vmm_memory(child.pid, size_mb)
        assert split.guest_ram == touched_mb
        assert split.other > 0
    finally:
        child.kill()
        child.wait()


def test_process_started_is_on_the_wall_clock() -> None:
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_started(child.pid)
    finally:
        child.kill()
        child.wait()
    # clock ticks are 10 ms steps; a wrong base (boot time, monotonic) would be off by hours
    assert before - 1 <= started <= time.time() + 1
