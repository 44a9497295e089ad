"""The agent's request handlers, one function per request type (``contracts/guest.py`` lists
them). Each takes the parsed request and the base environment of commands and returns the
reply message; ``agent._answer`` dispatches and turns exceptions into ``error`` replies.

Stdlib only, like the rest of the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from guest import framing, runner

CODE_ARG_MAX = 100_000
"""Bytes of code passed as an interpreter argument (``-c``/``-e``). Linux refuses a single
argument over 128 KiB (``MAX_ARG_STRLEN``), so longer code is written to a private temporary
file that the interpreter runs instead. Mirrors ``contracts.guest.CODE_ARG_MAX``."""
PROJECT_DIR = "/workspace"
"""The project directory when the template has one; otherwise the home stands in."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
_UNLIMITED_V1 = 1 << 62
"""cgroup v1 reports "no memory limit" as a page-rounded LONG_MAX; anything this big is none."""


def exec_command(request: framing.ExecRequest, base_env: dict[str, str]) -> dict[str, object]:
    env = base_env | request.env
    outcome = runner.run(request.argv, env=env, cwd=request.cwd, timeout_ms=request.timeout_ms)
    return _exec_result(request.id, outcome)


def run_code(request: framing.CodeRunRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Run the snippet with its language's interpreter (see ``contracts.guest.CodeRun``)."""
    env = base_env | request.env
    if len(request.code.encode("utf-8", "surrogatepass")) <= CODE_ARG_MAX:
        argv = code_argv(request.language, request.argv, code=request.code)
        outcome = runner.run(argv, env=env, cwd=request.cwd, timeout_ms=request.timeout_ms)
        return _exec_result(request.id, outcome)
    fd, path = tempfile.mkstemp(prefix="dnah-code-", suffix=_SUFFIXES[request.language])
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as script:
            script.write(request.code)
        argv = code_argv(request.language, request.argv, path=path)
        outcome = runner.run(argv, env=env, cwd=request.cwd, timeout_ms=request.timeout_ms)
    finally:
        with contextlib.suppress(FileNotFoundError):  # the code may have removed it itself
            os.unlink(path)
    return _exec_result(request.id, outcome)


_SUFFIXES = {"python": ".py", "bash": ".sh", "javascript": ".js", "typescript": ".js"}


def code_argv(
    language: str, args: list[str], *, code: str | None = None, path: str | None = None
) -> list[str]:
    """The interpreter command for ``code`` (inline) or the script at ``path``, with ``args``
    as the program's own arguments either way: ``sys.argv[1:]``, ``"$@"``, or
    ``process.argv.slice(1)`` (Node's ``-e`` has no script name; a script file is loaded with
    ``require`` under ``-e`` so that stays true for long code too)."""
    if language == "python":
        return ["python3", "-c", code, *args] if code is not None else ["python3", str(path), *args]
    if language == "bash":
        return ["bash", "-c", code, "bash", *args] if code is not None else ["bash", str(path), *args]
    # javascript, and typescript run as JavaScript (the template's Node cannot strip types)
    if code is None:
        code = f"require({json.dumps(str(path))})"
    return ["node", "-e", code, "--", *args]


def env_set(request: framing.EnvSetRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Update the agent's base environment in place: it is the one dict every connection's
    commands start from."""
    bad = [name for name in request.env if not name or "=" in name or "\0" in name]
    if bad or any("\0" in value for value in request.env.values()):
        return framing.error(
            request.id, "bad_request", f"invalid environment variable name or value: {bad[:1]}"
        )
    base_env.update(request.env)
    return framing.env_done(request.id)


def dirs(request: framing.DirsRequest, base_env: dict[str, str]) -> dict[str, object]:
    home = base_env["HOME"]
    project = PROJECT_DIR if os.path.isdir(PROJECT_DIR) else home
    return framing.dirs_result(request.id, home=home, work=os.getcwd(), project=project)


def metrics(request: framing.MetricsRequest, _base_env: dict[str, str]) -> dict[str, object]:
    reading = read_metrics(CGROUP_ROOT, PROC)
    return framing.metrics_result(
        request.id,
        cpus=reading.cpus,
        mem_limit_bytes=reading.mem_limit_bytes,
        mem_used_bytes=reading.mem_used_bytes,
        load_1m=reading.load_1m,
    )


@dataclass(frozen=True)
class Reading:
    cpus: float
    mem_limit_bytes: int
    mem_used_bytes: int
    load_1m: float


def read_metrics(cgroup_root: Path, proc: Path) -> Reading:
    """CPU and memory limits and use from the cgroup mounted at ``cgroup_root``, falling back
    to the machine's figures (``proc``) wherever the cgroup sets no limit or is absent.

    cgroup v2 keeps its files in ``cgroup_root`` itself; v1 has one directory per hierarchy
    (named after its controllers, e.g. ``memory`` or ``cpu,cpuacct``), found by the file.
    """
    meminfo = _meminfo(proc / "meminfo")
    mem_total = meminfo.get("MemTotal", 0)

    cpus: float | None = None
    if (cpu_max := _read(cgroup_root / "cpu.max")) is not None:
        quota, _, period = cpu_max.partition(" ")
        if quota != "max":
            cpus = int(quota) / int(period)
    elif (v1_cpu := _v1_dir(cgroup_root, "cpu.cfs_quota_us")) is not None:
        quota_us = int(_read(v1_cpu / "cpu.cfs_quota_us") or -1)
        if quota_us > 0:
            cpus = quota_us / int(_read(v1_cpu / "cpu.cfs_period_us") or 100_000)
    if cpus is None:
        cpus = float(len(os.sched_getaffinity(0)))

    limit: int | None = None
    used: int | None = None
    if (memory_max := _read(cgroup_root / "memory.max")) is not None:
        limit = None if memory_max == "max" else int(memory_max)
        used = int(_read(cgroup_root / "memory.current") or 0)
        used -= _stat(cgroup_root / "memory.stat").get("inactive_file", 0)
    elif (v1_mem := _v1_dir(cgroup_root, "memory.limit_in_bytes")) is not None:
        limit = int(_read(v1_mem / "memory.limit_in_bytes") or _UNLIMITED_V1)
        limit = None if limit >= _UNLIMITED_V1 else limit
        used = int(_read(v1_mem / "memory.usage_in_bytes") or 0)
        used -= _stat(v1_mem / "memory.stat").get("total_inactive_file", 0)
    if limit is None or (mem_total and limit > mem_total):
        limit = mem_total
    if used is None:
        used = mem_total - meminfo.get("MemAvailable", mem_total)

    load = (_read(proc / "loadavg") or "0").split()[0]
    return Reading(cpus=cpus, mem_limit_bytes=limit, mem_used_bytes=max(0, used), load_1m=float(load))


def _exec_result(request_id: int, outcome: runner.Outcome) -> dict[str, object]:
    return framing.exec_result(
        request_id,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        exit_code=outcome.exit_code,
        duration_ms=outcome.duration_ms,
        timed_out=outcome.timed_out,
        truncated=outcome.truncated,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _v1_dir(cgroup_root: Path, marker: str) -> Path | None:
    """The v1 hierarchy directory under ``cgroup_root`` that holds ``marker``."""
    try:
        children = sorted(cgroup_root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((child for child in children if (child / marker).is_file()), None)


def _stat(path: Path) -> dict[str, int]:
    """A ``key value`` file (memory.stat) as a dict."""
    values: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _meminfo(path: Path) -> dict[str, int]:
    """/proc/meminfo in bytes (the file says kB, meaning KiB)."""
    values: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            values[key] = int(rest.split()[0]) * 1024
    return values
