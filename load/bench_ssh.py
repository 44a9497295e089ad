"""SSH gateway benchmark: ``ssh host true`` wall time with OpenSSH's own client (a fresh
connection each time: key exchange, token login, session, exit status), the same over one
multiplexed connection (``ControlMaster``: the per-session cost alone), the HTTP exec API
for comparison, and ``scp`` of 10 MB up and down.

It starts its own stack (``cli.stack.Stack``, as ``make up`` does) on spare ports, so it can
run beside a live stack. Times are wall clock around the client process.

    python -m load.bench_ssh                  # defaults
    python -m load.bench_ssh --runs 200 --copies 10
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, report

MB = 1_000_000
CLIENT = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentityFile=none",
]


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(argv: list[str]) -> float:
    """Milliseconds the client took; raises when it failed."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-300:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="ssh host true runs of each kind")
    parser.add_argument("--copies", type=int, default=5, help="10 MB scp rounds (up and down)")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="dnah-bench-ssh-"))
    config = StackConfig(
        var_dir=var,
        gateway_port=spare_port(),
        core_port=spare_port(),
        hostd_port=spare_port(),
        ssh_port=spare_port(),
        bridge="dnahsb0",
        subnet="10.221.0.0/24",
        cgroup="dnahsb",
        host_name="bench-ssh",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    work = Path(tempfile.mkdtemp(prefix="dnah-bench-ssh-files-"))
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        headers = {"authorization": f"Bearer {stack.admin_token}"}
        gw = httpx.Client(base_url=config.gateway_url, headers=headers, timeout=300)
        sid = gw.post("/v1/sandboxes", json={}).json()["id"]
        token = gw.post(f"/v1/sandboxes/{sid}/ssh-access", json={}).json()["token"]
        target = f"{token}@127.0.0.1"
        ssh = ["ssh", "-p", str(stack.ssh_port), *CLIENT]

        for _ in range(5):
            run([*ssh, target, "true"])
        report("ssh host true (new connection)", [run([*ssh, target, "true"]) for _ in range(args.runs)])

        control = ["-o", "ControlMaster=auto", "-o", f"ControlPath={work}/cm-%C", "-o", "ControlPersist=120"]
        for _ in range(5):
            run([*ssh, *control, target, "true"])
        report(
            "ssh host true (multiplexed)", [run([*ssh, *control, target, "true"]) for _ in range(args.runs)]
        )
        subprocess.run([*ssh, *control, "-O", "exit", target], capture_output=True, timeout=30)

        def http_exec() -> float:
            started = time.perf_counter()
            gw.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).raise_for_status()
            return (time.perf_counter() - started) * 1000

        for _ in range(5):
            http_exec()
        report("HTTP exec true via gateway", [http_exec() for _ in range(args.runs)])
        print()

        source = work / "ten.bin"
        source.write_bytes(os.urandom(10 * MB))
        scp = ["scp", "-P", str(stack.ssh_port), *CLIENT]
        ups, downs = [], []
        for n in range(args.copies):
            ups.append(run([*scp, str(source), f"{target}:/tmp/ten.bin"]))
            back = work / f"back{n}.bin"
            downs.append(run([*scp, f"{target}:/tmp/ten.bin", str(back)]))
            if back.read_bytes() != source.read_bytes():
                raise RuntimeError("the copy came back different")
            back.unlink()
        for name, samples in (("scp 10 MB up", ups), ("scp 10 MB down", downs)):
            report(name, samples)
            best = min(samples) / 1000
            print(f"{'':<34} best {10 / best:6.1f} MB/s")
        gw.delete(f"/v1/sandboxes/{sid}").raise_for_status()
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
