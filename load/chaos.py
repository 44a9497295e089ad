"""The chaos suite: sandboxes cycled through their whole lifecycle while the processes under
them are SIGKILLed at random moments; afterwards the stack must settle into a state where the
rows and the machine agree and no kept file is lost (``load/chaos_invariants.py``).

It starts its own stack (``cli.stack.Stack``: own var dir, ports, bridge ``dnahc<n>``, subnet,
cgroup, no egress), runs ``cli.supervisor.Supervisor`` in a thread to restart what is killed,
and through the gateway with an org key:

* each worker keeps one sandbox with a file written once (never deleted), and loops
  create → exec (write a unique file) → stop → start → exec (read it back) → snapshot → fork
  (read it in the fork) → delete fork, snapshots and sandbox, every third round also stopping
  and starting its kept sandbox; errors are expected while something is dead and are counted
  by kind (HTTP status, ``connect``, ``timeout``, ``transport``);
* the killer SIGKILLs the targets in shuffled rounds (each target once per round), at random
  intervals: ``core`` and ``hostd`` whole (their Granian process group), a ``gateway`` worker,
  the Postgres postmaster, Redis.

Then workers and killer stop, and the invariants are polled until they hold or ``SETTLE_S``
passes; the report (JSON on stdout) has the operations completed, errors by kind, kills by
target, the settle time and every invariant; the exit status is 1 if one failed or a request
failed in a way no dead process explains (``TOLERATED``).

    python -m load.chaos --workers 4 --duration 300 --kills core,hostd,gateway,postgres,redis
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from cli.stack import Stack, StackConfig
from cli.supervisor import Supervisor
from hosts.config import HostdConfig
from hosts.config import load_config as load_hostd_config
from load.bench_core import machine
from load.chaos_invariants import Verdict, check
from tests.support import exclusive_index, free_port

TARGETS = ("core", "hostd", "gateway", "postgres", "redis")
TOLERATED = frozenset({"502", "503", "504", "409", "connect", "timeout", "transport"})
"""Failures a request may meet while something under it is dead: the gateway or core
answering for a dead hop (a dead database is a 503), a conflict with an operation cut short,
a refused or cut connection; anything else (a 404 for a sandbox that should exist, a 4xx
for a valid request, a command failing in a sandbox) is reported as unexpected."""
SETTLE_S = 180.0
"""How long after the last kill the stack has to settle. The longest wait is a ``creating``
row left by a core killed mid-create: the sweeper settles it once it is 120 s old
(``core/services/hosts.py``, ``STALE_CREATING_S``); a restart of each service and a few
reconcile passes (1 s here) fit in the rest."""
REQUEST_TIMEOUT_S = 30.0
CLEANUP_S = 30.0
"""How long a worker keeps trying to delete what one round made before leaving it for later."""
LEFTOVER_S = 5.0
"""How long each round first tries to delete what earlier rounds could not."""
FAILED_ROUND_PAUSE_S = 0.5
KEPT_FILE = "/home/daytona/kept"
LOOP_FILE = "/home/daytona/chaos"


class OpFailed(Exception):
    """One request failed; ``kind`` is what the report counts it as."""

    def __init__(self, op: str, kind: str, detail: str = "") -> None:
        super().__init__(f"{op}: {kind} {detail}".strip())
        self.op, self.kind, self.detail = op, kind, detail


@dataclass
class Tally:
    """What every worker did, merged under a lock."""

    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    errors_by_op: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    """A few distinct answers of each ``op:kind`` that came with a body (what a 500 said)."""
    rounds: int = 0
    lost_reads: list[str] = field(default_factory=list)
    """Reads that returned 200 with other content than what was written: a lost file."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def failed(self, error: OpFailed) -> None:
        with self.lock:
            self.errors[error.kind] += 1
            self.errors_by_op[f"{error.op}:{error.kind}"] += 1
            seen = self.samples.setdefault(f"{error.op}:{error.kind}", [])
            if error.detail and error.detail not in seen and len(seen) < 3:
                seen.append(error.detail)


def chaos_stack(index: int, var: Path) -> Stack:
    """A throwaway stack whose kernel names derive from ``index`` (``dnahc<n>``,
    10.222.<n>.0/24): never those of a test stack (``dnahs<n>``) or ``make up``."""
    config = StackConfig(
        var_dir=var,
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        bridge=f"dnahc{index}",
        subnet=f"10.222.{index}.0/24",
        cgroup=f"dnahc{index}",
        host_name=f"chaos-{index}",
        egress="none",  # nothing a chaos sandbox runs leaves the machine
        extra_env={
            # abandoned operations are settled within seconds, as in the test suite
            "DNAH_RECONCILE_S": "1",
            "DNAH_STALE_OPERATION_S": "3",
            "DNAH_STALE_LONG_OPERATION_S": "20",
            # the scheduler counts each disk in full, though forks share their blocks: room
            # for the sandboxes a run leaves while deletes fail, so creates are not refused
            "DNAH_HOST_DISK_GB": "2000",
        },
    )
    return Stack(config, say=lambda _: None)


@contextlib.contextmanager
def own_stack(keep_logs: Path | None = None) -> Iterator[Stack]:
    """A started chaos stack, removed afterwards; its services' logs are copied to
    ``keep_logs`` first when given (the var dir goes with the stack)."""
    with exclusive_index("chaos") as n:
        stack = chaos_stack(n, Path(tempfile.mkdtemp(prefix=f"dnah-chaos{n}-")))
        try:
            stack.start()
            yield stack
        finally:
            if keep_logs is not None:
                shutil.copytree(stack.var / "log", keep_logs, dirs_exist_ok=True)
            stack.remove()


class Api:
    """The native API through the gateway; every call either returns the JSON body or raises
    ``OpFailed`` naming the kind of failure."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.client = httpx.Client(
            base_url=stack.config.gateway_url,
            headers={"authorization": f"Bearer {key}"},
            timeout=REQUEST_TIMEOUT_S,
        )

    def call(self, op: str, method: str, path: str, body: dict | None = None) -> dict:
        try:
            resp = self.client.request(method, path, json=body)
        except httpx.ConnectError as exc:
            raise OpFailed(op, "connect") from exc
        except httpx.TimeoutException as exc:
            raise OpFailed(op, "timeout") from exc
        except httpx.TransportError as exc:  # the peer died mid-request
            raise OpFailed(op, "transport") from exc
        if resp.status_code >= 300:
            raise OpFailed(op, str(resp.status_code), resp.text[:200])
        return dict(resp.json()) if resp.content else {}

    def exec(self, op: str, sandbox_id: str, script: str) -> str:
        out = self.call(op, "POST", f"/v1/sandboxes/{sandbox_id}/exec", {"cmd": ["sh", "-c", script]})
        if out["exit_code"] != 0:
            raise OpFailed(op, "exit", out["stderr"][:200])
        return str(out["stdout"])

    def delete_until_gone(self, path: str, deadline: float) -> bool:
        """DELETE until it is done or gone (a 409 while an operation or a fork holds it, a
        dead hop: try again); False when ``deadline`` passes first."""
        while time.monotonic() < deadline:
            try:
                self.call("delete", "DELETE", path)
                return True
            except OpFailed as exc:
                if exc.kind == "404":
                    return True
            time.sleep(0.5)
        return False


class Worker(threading.Thread):
    def __init__(self, n: int, api: Api, tally: Tally, stop: threading.Event) -> None:
        super().__init__(name=f"chaos-worker-{n}", daemon=True)
        self.n, self.api, self.tally, self.stop = n, api, tally, stop
        self.kept: tuple[str, str] | None = None
        """The kept sandbox's id and the content of its file."""
        self.leftovers: dict[str, bool] = {}
        """Sandboxes of earlier rounds not deleted yet (id -> whether it is a fork): tried
        again every round, so they do not pile up and fill the host."""

    def keep_one(self) -> None:
        """Create the kept sandbox and write its file (before any fault is injected)."""
        sid = self.api.call("create", "POST", "/v1/sandboxes", {"name": f"keep-{self.n}"})["id"]
        content = uuid.uuid4().hex
        self.api.exec("write", sid, f"echo {content} > {KEPT_FILE} && sync")
        self.kept = (sid, content)

    def run(self) -> None:
        rounds = 0
        while not self.stop.is_set():
            rounds += 1
            self.one_round(rounds)
            if rounds % 3 == 0 and self.kept is not None:
                self.cycle_kept(self.kept[0])

    def step(self, op: str, method: str, path: str, body: dict | None = None) -> dict:
        out = self.api.call(op, method, path, body)
        self.tally.ok(op)
        return out

    def one_round(self, n: int) -> None:
        if self.leftovers:
            self.delete_all(self.leftovers, time.monotonic() + LEFTOVER_S)
        made: dict[str, bool] = {}  # what this round made: sandbox id -> whether it is the fork
        try:
            sid = self.step("create", "POST", "/v1/sandboxes", {"name": f"w{self.n}-{n}"})["id"]
            made[sid] = False
            content = uuid.uuid4().hex
            self.api.exec("write", sid, f"echo {content} > {LOOP_FILE}")
            self.tally.ok("write")
            self.step("stop", "POST", f"/v1/sandboxes/{sid}/stop")
            self.step("start", "POST", f"/v1/sandboxes/{sid}/start")
            self.read_back("read", sid, content)
            self.step("snapshot", "POST", f"/v1/sandboxes/{sid}/snapshot")
            fork = self.step("fork", "POST", f"/v1/sandboxes/{sid}/fork", {"name": f"w{self.n}-{n}-fork"})
            made[fork["id"]] = True
            self.read_back("read_fork", fork["id"], content)
            with self.tally.lock:
                self.tally.rounds += 1
        except OpFailed as exc:
            self.tally.failed(exc)
            self.stop.wait(FAILED_ROUND_PAUSE_S)  # not a tight loop of refused creates
        finally:
            self.clean_up(n, made)

    def read_back(self, op: str, sandbox_id: str, content: str) -> None:
        """Read the round's file; a read that answers with other content, or none (``cat``
        failed: the file is gone), is a lost file."""
        try:
            got = self.api.exec(op, sandbox_id, f"cat {LOOP_FILE}").strip()
        except OpFailed as exc:
            if exc.kind != "exit":
                raise
            got = f"<{exc.detail}>"
        if got != content:
            with self.tally.lock:
                self.tally.lost_reads.append(f"{op} {sandbox_id}: wrote {content}, read {got!r}")
        self.tally.ok(op)

    def clean_up(self, n: int, made: dict[str, bool]) -> None:
        """Delete what this round made — also what a create or fork whose answer was lost
        made under this round's names — forks first (a parent with forks is a 409), each
        sandbox's snapshots before it."""
        names = {f"w{self.n}-{n}": False, f"w{self.n}-{n}-fork": True}
        with contextlib.suppress(OpFailed):
            for item in self.api.call("list", "GET", "/v1/sandboxes")["items"]:
                if item["name"] in names:
                    made.setdefault(item["id"], names[item["name"]])
        self.leftovers.update(made)
        self.delete_all(self.leftovers, time.monotonic() + CLEANUP_S)

    def delete_all(self, sandboxes: dict[str, bool], deadline: float) -> None:
        """Delete ``sandboxes`` (id -> is a fork) and their snapshots, forks first; what is
        deleted leaves the dict, the rest stays for a later try."""
        for sid in sorted(sandboxes, key=lambda s: not sandboxes[s]):
            with contextlib.suppress(OpFailed):
                for snap in self.api.call("snapshots", "GET", f"/v1/sandboxes/{sid}/snapshots")["items"]:
                    self.api.delete_until_gone(f"/v1/snapshots/{snap['id']}", deadline)
            if self.api.delete_until_gone(f"/v1/sandboxes/{sid}", deadline):
                self.tally.ok("delete")
                del sandboxes[sid]

    def cycle_kept(self, sid: str) -> None:
        try:
            self.step("stop_kept", "POST", f"/v1/sandboxes/{sid}/stop")
            self.step("start_kept", "POST", f"/v1/sandboxes/{sid}/start")
        except OpFailed as exc:
            self.tally.failed(exc)


class Killer(threading.Thread):
    """SIGKILLs the targets in shuffled rounds, each after a random pause; stops after
    ``rounds`` rounds (when given) or when told to."""

    def __init__(
        self,
        stack: Stack,
        targets: list[str],
        rng: random.Random,
        stop: threading.Event,
        interval: tuple[float, float],
        rounds: int | None,
    ) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.stack, self.targets, self.rng, self.stop = stack, targets, rng, stop
        self.interval, self.rounds = interval, rounds
        self.kills: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[float, str, int]] = []
        self.started = time.monotonic()

    def run(self) -> None:
        done = 0
        while not self.stop.is_set() and (self.rounds is None or done < self.rounds):
            order = list(self.targets)
            self.rng.shuffle(order)
            for target in order:
                if self.stop.wait(self.rng.uniform(*self.interval)):
                    return
                pid = self.wait_alive(target)
                if pid is None:
                    return
                kill(target, pid)
                self.kills[target] += 1
                self.log.append((round(time.monotonic() - self.started, 1), target, pid))
            done += 1

    def wait_alive(self, target: str) -> int | None:
        """The target's pid once it runs again (the supervisor restarts it)."""
        while not self.stop.is_set():
            pid = self.stack.pid(target)
            if pid is not None:
                return pid
            self.stop.wait(0.2)
        return None


def kill(target: str, pid: int) -> None:
    """SIGKILL ``target``: core and hostd whole (the Granian master leads its process group,
    its worker is in it; hostd's ``runc run`` children have sessions of their own and live
    on, as in a real crash), one gateway worker (its master's child), the datastores' main
    process."""
    with contextlib.suppress(ProcessLookupError):
        if target in ("core", "hostd") and os.getpgid(pid) == pid != os.getpgrp():
            os.killpg(pid, signal.SIGKILL)
        elif target == "gateway" and (children := _children(pid)):
            os.kill(random.choice(children), signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def mint_org_key(stack: Stack) -> str:
    resp = httpx.post(
        stack.config.gateway_url + "/v1/api-keys",
        json={"name": "chaos"},
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    resp.raise_for_status()
    return str(resp.json()["key"])


def settle(
    stack: Stack, bound_s: float
) -> tuple[float | None, Verdict, list[tuple[float, dict[str, list[str]]]]]:
    """Poll the invariants (and the stack's health) until they hold or ``bound_s`` passes;
    the seconds it took (None if it never settled), the last verdict, and which checks
    still failed (with their first offenders) at each moment that changed: what the settle
    waited for."""
    config = load_hostd_config(stack.env())
    started = time.monotonic()
    trace: list[tuple[float, dict[str, list[str]]]] = []
    while True:
        verdict = asyncio.run(_checked(stack, config))
        failing = {name: bad[:3] for name, bad in sorted(verdict.failed().items())}
        if not trace or trace[-1][1] != failing:
            trace.append((round(time.monotonic() - started, 1), failing))
        if verdict.ok:
            return time.monotonic() - started, verdict, trace
        if time.monotonic() - started > bound_s:
            return None, verdict, trace
        time.sleep(1.0)


async def _checked(stack: Stack, config: HostdConfig) -> Verdict:
    down = [name for name in TARGETS if stack.pid(name) is None]
    try:
        verdict = await check(stack.database_url, stack.config.host_name, config)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:  # the database is not back yet
        verdict = Verdict(checks={"database": [repr(exc)]})
    verdict.checks["services_down"] = down
    verdict.checks["gateway_health"] = [] if _healthy(stack) else ["gateway /health did not answer 200"]
    return verdict


def _healthy(stack: Stack) -> bool:
    try:
        return httpx.get(stack.config.gateway_url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def check_kept(api: Api, kept: list[tuple[str, str]], deadline: float) -> list[str]:
    """Every kept sandbox still has its file: each is brought back to ``started`` if the
    crashes left it otherwise (stopped: start; error: recover; paused: resume), then read.
    Returns the problems found."""
    problems = []
    for sid, content in kept:
        got = None
        while got is None and time.monotonic() < deadline:
            try:
                state = api.call("read", "GET", f"/v1/sandboxes/{sid}")["state"]
                verb = {"stopped": "start", "error": "recover", "paused": "resume"}.get(state)
                if verb:
                    api.call(verb, "POST", f"/v1/sandboxes/{sid}/{verb}")
                got = api.exec("read", sid, f"cat {KEPT_FILE}").strip()
            except OpFailed as exc:
                if exc.kind in ("404", "exit"):
                    got = f"<{exc}>"
                else:
                    time.sleep(1.0)
        if got != content:
            problems.append(f"{sid}: wrote {content}, read {got!r}")
    return problems


@dataclass(frozen=True)
class Plan:
    workers: int = 4
    duration_s: float = 300.0
    kills: tuple[str, ...] = TARGETS
    seed: int = 0
    interval_s: tuple[float, float] = (3.0, 12.0)
    kill_rounds: int | None = None
    """Stop killing after this many rounds (each target once per round); the run then lasts
    until both these rounds and ``duration_s`` are done."""
    settle_s: float = SETTLE_S


def run_chaos(stack: Stack, plan: Plan) -> dict:
    """Run ``plan`` against a started ``stack`` and return the report."""
    rng = random.Random(plan.seed)
    api = Api(stack, mint_org_key(stack))
    tally = Tally()
    stop_work, stop_kills, stop_supervisor = threading.Event(), threading.Event(), threading.Event()
    supervisor = threading.Thread(target=Supervisor(stack).run, args=(stop_supervisor,), daemon=True)
    supervisor.start()
    workers = [Worker(n, api, tally, stop_work) for n in range(plan.workers)]
    for worker in workers:
        worker.keep_one()
    killer = Killer(stack, list(plan.kills), rng, stop_kills, plan.interval_s, plan.kill_rounds)
    started = time.monotonic()
    killer.start()
    for worker in workers:
        worker.start()
    try:
        deadline = started + plan.duration_s
        while time.monotonic() < deadline or (plan.kill_rounds is not None and killer.is_alive()):
            time.sleep(0.5)
        stop_kills.set()
        killer.join()
        stop_work.set()
        for worker in workers:
            worker.join()
        ran_s = time.monotonic() - started
        settle_s, verdict, trace = settle(stack, plan.settle_s)
        kept = [w.kept for w in workers if w.kept is not None]
        lost = check_kept(api, kept, time.monotonic() + plan.settle_s)
    finally:
        stop_kills.set()
        stop_work.set()
        stop_supervisor.set()
        supervisor.join()
    verdict.checks["lost_files"] = lost + tally.lost_reads
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seed": plan.seed,
        "workers": plan.workers,
        "ran_s": round(ran_s, 1),
        "rounds_completed": tally.rounds,
        "ops_completed": dict(tally.ops),
        "errors_by_kind": dict(tally.errors),
        "errors_by_op": dict(tally.errors_by_op),
        "error_samples": tally.samples,
        "unexpected_errors": sorted(set(tally.errors) - TOLERATED),
        "kills_by_target": dict(killer.kills),
        "kill_log": killer.log,
        "settle_s": None if settle_s is None else round(settle_s, 1),
        "settle_bound_s": plan.settle_s,
        "settle_trace": trace,
        "kept_sandboxes": len(kept),
        "invariants": verdict.as_json(),
        "ok": verdict.ok and not set(tally.errors) - TOLERATED,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of chaos")
    parser.add_argument("--kills", default=",".join(TARGETS), help=f"comma-separated, of {TARGETS}")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--interval", default="3,12", help="min,max seconds between kills")
    parser.add_argument("--report", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--keep-logs", type=Path, help="copy the services' logs to this directory")
    args = parser.parse_args()
    kills = tuple(k for k in args.kills.split(",") if k)
    if unknown := set(kills) - set(TARGETS):
        parser.error(f"unknown kill targets {sorted(unknown)}; choose from {TARGETS}")
    low, high = (float(x) for x in args.interval.split(","))
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", file=sys.stderr)
    plan = Plan(
        workers=args.workers, duration_s=args.duration, kills=kills, seed=seed, interval_s=(low, high)
    )
    with own_stack(args.keep_logs) as stack:
        report = run_chaos(stack, plan)
    text = json.dumps(report, indent=2)
    if args.report:
        args.report.write_text(text + "\n")
    print(text)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
