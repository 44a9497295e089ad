"""From inside a sandbox (created through the public API), nothing of the host is reachable:
no host process, no host file, no other sandbox, and none of hostd, the core, the gateway,
Postgres or Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli.stack import Stack

PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((host, port)); print("CONNECTED")
except OSError as e:
    print("BLOCKED", type(e).__name__)
"""


def run(org: httpx.Client, sid: str, *cmd: str) -> dict:
    resp = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": list(cmd), "timeout_ms": 20_000})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def sid(org: httpx.Client) -> str:
    return org.post("/v1/sandboxes", json={}).json()["id"]


def test_no_host_process_is_visible(org: httpx.Client, sid: str) -> None:
    pids = run(org, sid, "sh", "-c", "ls /proc | grep -E '^[0-9]+$'")["stdout"].split()
    # A fresh PID namespace: only the agent and this command, with small pids of their own.
    assert len(pids) < 10 and max(int(p) for p in pids) < 100, pids
    ps = run(org, sid, "ps", "-eo", "comm")["stdout"]
    assert "granian" not in ps and "postgres" not in ps and "redis-server" not in ps and "pytest" not in ps
    assert "guest.agent" in run(org, sid, "cat", "/proc/1/cmdline")["stdout"]  # PID 1 is the agent


def test_no_host_file_is_readable(org: httpx.Client, sid: str, stack: Stack) -> None:
    secret = Path("/root/dnah-isolation-secret")
    secret.write_text("host-only")
    try:
        for path in (
            str(secret),
            f"/proc/1/root{secret}",
            f"/proc/self/root{secret}",
            str(stack.var / "admin.token"),
        ):
            out = run(org, sid, "cat", path)
            assert out["exit_code"] != 0 and "host-only" not in out["stdout"], path
        assert run(org, sid, "readlink", "/proc/self/root")["stdout"].strip() == "/"
        assert run(org, sid, "test", "-e", str(stack.var))["exit_code"] != 0
    finally:
        secret.unlink()


def test_other_sandboxes_files_are_unreachable(org: httpx.Client, sid: str) -> None:
    other = org.post("/v1/sandboxes", json={}).json()["id"]
    run(org, other, "sh", "-c", "echo mine > /tmp/other-secret")
    assert run(org, other, "cat", "/tmp/other-secret")["stdout"] == "mine\n"
    assert run(org, sid, "cat", "/tmp/other-secret")["exit_code"] != 0
    found = run(org, sid, "sh", "-c", "find / -xdev -name other-secret 2>/dev/null")["stdout"]
    assert found == ""


def test_control_plane_ports_are_unreachable(org: httpx.Client, sid: str, stack: Stack) -> None:
    gateway_ip = run(org, sid, "sh", "-c", "ip route | awk '/default/ {print $3}'")["stdout"].strip()
    assert gateway_ip, "the sandbox has a default route via the bridge"
    ports = [stack.config.gateway_port, stack.config.core_port, stack.config.hostd_port, 5432, 6379]
    for host in ("127.0.0.1", gateway_ip):
        for port in ports:
            out = run(org, sid, "python3", "-c", PROBE, host, str(port))["stdout"]
            assert out.startswith("BLOCKED"), (host, port, out)
    for path in (stack.var / "run" / "redis.sock", stack.var / "run" / "pg"):
        assert run(org, sid, "test", "-e", str(path))["exit_code"] != 0


def test_no_privilege_inside(org: httpx.Client, sid: str) -> None:
    assert run(org, sid, "id", "-u")["stdout"] == "1000\n"
    assert run(org, sid, "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq")["exit_code"] != 0
    assert run(org, sid, "mount", "-t", "tmpfs", "x", "/tmp")["exit_code"] != 0
    assert run(org, sid, "touch", "/sys/x")["exit_code"] != 0
