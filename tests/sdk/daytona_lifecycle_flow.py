"""The official Daytona SDK, unmodified, through a sandbox's lifecycle; prints a JSON report.

Run by ``test_daytona_lifecycle.py`` with the SDK's own virtualenv, like ``daytona_flow.py``:
configured with ``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` only, importing nothing of the
project. Covers ``stop``, ``start`` (after a stop, a pause and an archive: the data written
before stays), ``pause``, ``archive``, ``set_labels``, the three timers and what ``get`` shows of
them, ``refresh_activity``, ``resize`` of a stopped sandbox (seen from inside through its
cgroup), ``fork`` and the refusal to delete a parent with a live fork. After each step the
report holds the state the SDK holds and the state a fresh ``get`` reads: the server answers
every operation with its final state, so the SDK's waits end at their first look.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from daytona import Daytona, Resources


def value(state: Any) -> str:
    """An SDK enum's wire value (``str()`` of a str-Enum differs across Python versions)."""
    return str(getattr(state, "value", state))


# The sandbox's own cgroup, as it sees it (cgroup v2, else v1): CFS quota, period, memory limit.
LIMITS = (
    "if [ -f /sys/fs/cgroup/cpu.max ]; then"
    " echo $(cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max); else cd /sys/fs/cgroup;"
    " echo $(cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us memory/memory.limit_in_bytes); fi"
)


def limits(sandbox: Any) -> dict[str, Any]:
    """CPUs and MiB of memory the sandbox is held to, from inside it."""
    quota, period, memory = sandbox.process.exec(LIMITS).result.split()
    return {"cpus": int(quota) / int(period), "memory_mib": int(memory) // 2**20}


def main() -> int:
    report: dict[str, Any] = {"ms": {}, "states": {}}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        report["ms"][name] = round((time.perf_counter() - started) * 1000, 1)
        return result

    daytona = Daytona()
    sandbox = daytona.create()
    fork: Any = None

    def states(step: str) -> None:
        """The SDK's own idea of the state after ``step``, and the server's on a fresh read."""
        report["states"][step] = [value(sandbox.state), value(daytona.get(sandbox.id).state)]

    def cat(target: Any) -> str:
        return str(target.process.exec("cat kept.txt 2>&1").result)

    try:
        report["sdk_has_resume"] = hasattr(sandbox, "resume")
        states("created")
        sandbox.process.exec("echo kept-$((6*7)) > kept.txt")

        timed("stop", sandbox.stop)
        states("stopped")
        timed("start", sandbox.start)
        states("started")
        report["after_stop"] = cat(sandbox)

        # Daytona's start resumes a paused sandbox; the SDK has no resume of its own
        sandbox.process.exec("setsid sleep 1000 < /dev/null > /dev/null 2>&1 & echo $! > sleeper.pid")
        timed("pause", sandbox.pause)
        states("paused")
        timed("start_paused", sandbox.start)
        states("resumed")
        report["after_pause"] = cat(sandbox)
        report["sleeper_survives_pause"] = sandbox.process.exec("kill -0 $(cat sleeper.pid)").exit_code == 0

        # archive needs a stopped sandbox; start unarchives
        sandbox.stop()
        timed("archive", sandbox.archive)
        states("archived")
        timed("start_archived", sandbox.start)
        states("unarchived")
        report["after_archive"] = cat(sandbox)

        first = timed("set_labels", lambda: sandbox.set_labels({"team": "a", "tier": "gold"}))
        second = sandbox.set_labels({"team": "b"})
        report["labels"] = {
            "first": first,
            "second": second,
            "held": sandbox.labels,
            "got": daytona.get(sandbox.id).labels,
        }

        def intervals() -> list[Any]:
            got = daytona.get(sandbox.id)
            return [got.auto_stop_interval, got.auto_archive_interval, got.auto_delete_interval]

        report["intervals"] = {"initial": intervals()}
        timed("set_autostop_interval", lambda: sandbox.set_autostop_interval(5))
        timed("set_auto_archive_interval", lambda: sandbox.set_auto_archive_interval(60))
        timed("set_auto_delete_interval", lambda: sandbox.set_auto_delete_interval(120))
        report["intervals"]["set"] = intervals()
        sandbox.set_autostop_interval(0)  # disables auto-stop
        sandbox.set_auto_archive_interval(0)  # Daytona's maximum, 30 days
        sandbox.set_auto_delete_interval(0)  # deleted as soon as it stops
        report["intervals"]["zeros"] = intervals()
        sandbox.set_auto_delete_interval(-1)  # disabled again, or the stop below would delete it
        report["intervals"]["no_delete"] = intervals()

        before = daytona.get(sandbox.id).last_activity_at
        time.sleep(1.1)  # activity is recorded to the second at most
        timed("refresh_activity", sandbox.refresh_activity)
        after = daytona.get(sandbox.id).last_activity_at
        report["activity"] = {"had": bool(before), "moved": bool(after) and after != before}
        report["activity_state"] = value(daytona.get(sandbox.id).state)

        before_resize = limits(sandbox)
        sandbox.stop()
        timed("resize", lambda: sandbox.resize(Resources(cpu=2, memory=2)))
        report["resized"] = {"cpu": sandbox.cpu, "memory": sandbox.memory, "state": value(sandbox.state)}
        got = daytona.get(sandbox.id)
        report["resized_got"] = {"cpu": got.cpu, "memory": got.memory}
        sandbox.start()
        states("resized")
        report["limits"] = {"before": before_resize, "after": limits(sandbox)}
        report["after_resize"] = cat(sandbox)

        fork = timed("fork", lambda: sandbox.fork())
        report["fork"] = {
            "new_id": fork.id != sandbox.id,
            "state": value(fork.state),
            "got": value(daytona.get(fork.id).state),
            "file": cat(fork),
            "listed": fork.id in {s.id for s in daytona.list()},
        }
        fork.process.exec("echo fork-only > kept.txt")
        report["fork"]["independent"] = [cat(fork), cat(sandbox)]
        try:
            sandbox.delete()
            report["delete_parent_with_fork"] = "no error"
        except Exception as exc:  # the SDK's own error class is what the report shows
            report["delete_parent_with_fork"] = type(exc).__name__
    finally:
        if fork is not None:
            daytona.delete(fork)
        daytona.delete(sandbox)
    report["after_delete"] = value(daytona.get(sandbox.id).state)
    report["fork_after_delete"] = value(daytona.get(fork.id).state) if fork is not None else None
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
