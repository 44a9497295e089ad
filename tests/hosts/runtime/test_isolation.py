"""What a namespace sandbox can and cannot reach, probed from inside through its agent.

Every probe that expects a failure is paired with a check that the same probe succeeds where
it should (a listener that answers the host, a path that exists inside), so a test cannot
pass merely because the probe itself is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hosts.runtime.namespace import NamespaceConfig
from tests.hosts.conftest import Box

# Prints, for each "host:port" argument, "ok" or the error the connection attempt ended in.
PROBE = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        out[target] = "ok"
    except OSError as exc:
        out[target] = type(exc).__name__
print(json.dumps(out))
"""


async def probe(box: Box, *targets: str) -> dict[str, str]:
    result = await box.client.exec(["python3", "-c", PROBE, *targets], timeout_ms=20_000)
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


async def start_listener(box: Box, host: str, port: int = 8765) -> int:
    """Start a TCP listener in the background inside ``box``; return once it accepts."""
    server = f'import socket\ns = socket.create_server(("{host}", {port}))\nwhile True: s.accept()[0].close()'

    await box.sh(f"setsid python3 -c '{server}' > /dev/null 2>&1 < /dev/null &")
    target = f"127.0.0.1:{port}" if host == "0.0.0.0" else f"{host}:{port}"
    for _ in range(100):
        if (await probe(box, target))[target] == "ok":
            return port
        await asyncio.sleep(0.05)
    raise AssertionError(f"the listener on {host}:{port} in {box.id} did not come up")


@contextlib.contextmanager
def listener(host: str) -> Iterator[int]:
    """A TCP listener on ``host`` (an ephemeral port) for the duration of the block."""
    with socket.create_server((host, 0)) as server:
        yield server.getsockname()[1]


def host_addresses() -> list[str]:
    """Every IPv4 address of the host, in any interface."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    return [line.split()[3].split("/")[0] for line in out.stdout.splitlines()]


@pytest.fixture
def host_secret() -> Iterator[Path]:
    """A world-readable file on the host, outside any rootfs."""
    path = Path(f"/tmp/dnah-secret-{uuid.uuid4().hex}")
    path.write_text("secret")
    path.chmod(0o644)
    yield path
    path.unlink()


# processes and files ------------------------------------------------------------------------


async def test_no_host_process_is_visible(box: Box) -> None:
    listing = await box.out("for p in /proc/[0-9]*; do echo ${p#/proc/} $(tr '\\0' ' ' < $p/cmdline); done")
    processes = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    assert processes["1"].startswith("/usr/bin/python3 -S -m guest.agent")
    assert all(int(pid) < 100 for pid in processes), processes
    assert not any("pytest" in cmd for cmd in processes.values())
    ps = await box.out("ps -e -o comm=")
    assert set(ps.split()) <= {"python3", "sh", "ps", "tr"}, ps


async def test_no_host_path_is_reachable(box: Box, ns_config: NamespaceConfig, host_secret: Path) -> None:
    sandbox_dir = ns_config.state_dir / "sandboxes" / box.id
    assert await box.out("test -d /workspace && test -d /opt/dnah/guest && echo inside") == "inside"
    for path in (host_secret, ns_config.state_dir, sandbox_dir, Path("/work/main"), Path("/var/cache/dnah")):
        assert await box.out(f"test -e {path} || echo absent") == "absent", path
    assert await box.out("readlink /proc/1/root /proc/self/root") == "/\n/"
    assert await box.out("ls -a /proc/1/root") == await box.out("ls -a /")
    # The agent's socket directory is the only host directory bound in, and it is the
    # sandbox's own: the socket in it is the one this very connection came through.
    assert await box.out("ls /run/dnah") == "agent.sock"


async def test_the_agent_code_and_resolver_are_read_only(box: Box) -> None:
    result = await box.sh("touch /opt/dnah/guest/x; echo x >> /etc/resolv.conf")
    assert result.exit_code != 0
    assert result.stderr.count("Read-only file system") + result.stderr.count("Permission denied") == 2


# other sandboxes ----------------------------------------------------------------------------


async def test_another_sandboxs_files_are_not_reachable(
    two_boxes: tuple[Box, Box], ns_config: NamespaceConfig
) -> None:
    a, b = two_boxes
    await a.out("echo mine > /tmp/only-in-a; echo mine > ~/only-in-a")
    assert await a.out("cat /tmp/only-in-a") == "mine"
    assert await b.out("test -e /tmp/only-in-a || test -e ~/only-in-a || echo absent") == "absent"
    a_dir = ns_config.state_dir / "sandboxes" / a.id
    assert await b.out(f"test -e {a_dir} || echo absent") == "absent"
    # a's agent socket: neither its host path nor b's own socket path lead to a.
    reach = await b.sh(
        f"python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{a_dir}/run/agent.sock')\""
    )
    assert "FileNotFoundError" in reach.stderr
    assert await b.out("hostname") == b.id


async def test_sandboxes_cannot_reach_each_other(two_boxes: tuple[Box, Box]) -> None:
    a, b = two_boxes
    port = await start_listener(a, "0.0.0.0")
    target = f"{a.info.ip}:{port}"
    # The host reaches a's listener over the bridge: the listener is there and routable.
    assert await asyncio.to_thread(_connect, a.info.ip, port) == "ok"
    assert (await probe(b, target))[target] != "ok"
    assert (await probe(a, target))[target] == "ok"  # a reaches itself on its own address


def _connect(host: str | None, port: int) -> str:
    assert host is not None
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "ok"
    except OSError as exc:
        return type(exc).__name__


# the host's services ------------------------------------------------------------------------


@pytest.fixture
async def host_listeners() -> AsyncIterator[tuple[int, int]]:
    """Listeners on the host's 127.0.0.1 and 0.0.0.0, as hostd, Postgres or Redis would be."""
    with listener("127.0.0.1") as loopback, listener("0.0.0.0") as anywhere:
        assert await asyncio.to_thread(_connect, "127.0.0.1", loopback) == "ok"
        assert await asyncio.to_thread(_connect, "127.0.0.1", anywhere) == "ok"
        yield loopback, anywhere


async def test_host_listeners_are_unreachable(
    box: Box, ns_config: NamespaceConfig, host_listeners: tuple[int, int]
) -> None:
    _, anywhere = host_listeners
    gateway = str(ns_config.subnet.network_address + 1)
    targets = [f"{host}:{port}" for host in ("127.0.0.1", gateway) for port in host_listeners]
    targets += [f"{address}:{anywhere}" for address in host_addresses() if address != "127.0.0.1"]
    results = await probe(box, *targets)
    assert all(outcome != "ok" for outcome in results.values()), results
    # The same probe does connect to a listener inside the sandbox.
    await start_listener(box, "127.0.0.1")


# privileges ---------------------------------------------------------------------------------


async def test_the_sandbox_has_no_privileges(box: Box) -> None:
    attempts = {
        "sysctl": "echo other > /proc/sys/kernel/hostname",
        "mount": "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
        "chroot": "chroot / true",
        "setuid binary": "su -c true root < /dev/null",
        "raw socket": "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
        "device": "python3 -c 'import os; os.mknod(\"/tmp/null2\", 0o20666, os.makedev(1, 3))'",
        "write root-owned": "touch /etc/passwd",
    }
    for what, script in attempts.items():
        result = await box.sh(script)
        assert result.exit_code != 0, (what, result)
    assert await box.out("hostname") == box.id


async def test_sys_is_read_only(box: Box) -> None:
    assert (
        await box.out("grep -E ' /sys (sysfs|ro,)' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1") == "ro"
    )
    result = await box.sh("touch /sys/x")
    assert result.exit_code != 0 and "Read-only file system" in result.stderr
    assert await box.out("ls /sys/class/net") == "eth0\nlo"
