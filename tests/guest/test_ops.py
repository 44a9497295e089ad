"""``guest.ops.read_metrics`` on made-up /sys/fs/cgroup and /proc trees: cgroup v1 (one
directory per hierarchy, however the controllers are combined), v2, and none at all (a VM)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guest import ops

GIB = 2**30
MEMINFO = "MemTotal:        4194304 kB\nMemFree:         1048576 kB\nMemAvailable:    3145728 kB\n"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    write(root, {"meminfo": MEMINFO, "loadavg": "0.52 0.40 0.30 2/345 6789\n"})
    return root


def test_cgroup_v1_limits_and_use(tmp_path: Path, proc: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(
        cgroup,
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "memory/memory.limit_in_bytes": f"{512 * 2**20}\n",
            "memory/memory.usage_in_bytes": f"{300 * 2**20}\n",
            "memory/memory.stat": f"cache 1\ntotal_inactive_file {100 * 2**20}\n",
            "pids/pids.max": "512\n",
        },
    )
    reading = ops.read_metrics(cgroup, proc)
    assert reading == ops.Reading(
        cpus=2.0, mem_limit_bytes=512 * 2**20, mem_used_bytes=200 * 2**20, load_1m=0.52
    )


def test_cgroup_v1_without_limits_falls_back_to_the_machine(tmp_path: Path, proc: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(
        cgroup,
        {
            "cpu/cpu.cfs_quota_us": "-1\n",
            "cpu/cpu.cfs_period_us": "100000\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.usage_in_bytes": f"{GIB}\n",
            "memory/memory.stat": "total_inactive_file 0\n",
        },
    )
    reading = ops.read_metrics(cgroup, proc)
    assert reading.cpus == len(os.sched_getaffinity(0))
    assert (reading.mem_limit_bytes, reading.mem_used_bytes) == (4 * GIB, GIB)


def test_cgroup_v2_limits_and_use(tmp_path: Path, proc: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(
        cgroup,
        {
            "cgroup.controllers": "cpu memory pids\n",
            "cpu.max": "150000 100000\n",
            "memory.max": f"{GIB}\n",
            "memory.current": f"{GIB // 2}\n",
            "memory.stat": f"anon 1\ninactive_file {GIB // 4}\n",
        },
    )
    reading = ops.read_metrics(cgroup, proc)
    assert reading == ops.Reading(cpus=1.5, mem_limit_bytes=GIB, mem_used_bytes=GIB // 4, load_1m=0.52)


def test_cgroup_v2_unlimited_and_a_limit_above_the_machine(tmp_path: Path, proc: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(
        cgroup,
        {"cpu.max": "max 100000\n", "memory.max": f"{64 * GIB}\n", "memory.current": "0\n"},
    )
    reading = ops.read_metrics(cgroup, proc)
    assert reading.cpus == len(os.sched_getaffinity(0))
    assert (reading.mem_limit_bytes, reading.mem_used_bytes) == (4 * GIB, 0)


def test_no_cgroup_at_all_uses_meminfo(tmp_path: Path, proc: Path) -> None:
    """Inside a VM nothing limits the guest but the VM itself: /proc/meminfo is the truth."""
    reading = ops.read_metrics(tmp_path / "absent", proc)
    assert (reading.mem_limit_bytes, reading.mem_used_bytes) == (4 * GIB, GIB)
    assert reading.load_1m == 0.52


@pytest.mark.parametrize(
    ("language", "code", "path", "argv"),
    [
        ("python", "print(1)", None, ["python3", "-c", "print(1)", "a"]),
        ("python", None, "/tmp/x.py", ["python3", "/tmp/x.py", "a"]),
        ("bash", "echo", None, ["bash", "-c", "echo", "bash", "a"]),
        ("bash", None, "/tmp/x.sh", ["bash", "/tmp/x.sh", "a"]),
        ("javascript", "1", None, ["node", "-e", "1", "--", "a"]),
        ("typescript", "1", None, ["node", "-e", "1", "--", "a"]),
        ("javascript", None, '/tmp/"x".js', ["node", "-e", 'require("/tmp/\\"x\\".js")', "--", "a"]),
    ],
)
def test_code_argv(language: str, code: str | None, path: str | None, argv: list[str]) -> None:
    assert ops.code_argv(language, ["a"], code=code, path=path) == argv


def test_env_set_updates_the_base_environment_in_place() -> None:
    from guest import framing as fr
    from guest import ops as op

    base = {"PATH": "/bin", "KEEP": "1"}
    assert op.env_set(fr.EnvSetRequest(1, {"NEW": "v", "KEEP": "2"}), base) == fr.env_done(1)
    assert base == {"PATH": "/bin", "KEEP": "2", "NEW": "v"}
    refused = op.env_set(fr.EnvSetRequest(2, {"BAD=NAME": "x"}), base)
    assert refused["t"] == "error" and refused["code"] == "bad_request"
    assert "BAD=NAME" not in base
