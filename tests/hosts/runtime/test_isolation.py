"""What a namespace sandbox can and cannot reach, probed from inside through its agent.

Every probe that expects a failure is paired with a check that the same probe succeeds where
it should (a listener that answers the host, a path that exists inside), so a test cannot
pass merely because the probe itself is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hosts.runtime.oci import OciConfig
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
    """Every IPv4 address of the host's own interfaces, other dnah bridges left out.

    Another test instance's bridge (another xdist worker's, a benchmark's) can be torn down
    between this listing and the probe; its address then stops being local and a probe of it
    would leave the machine through the sandbox's NAT. Tests never send traffic off the
    machine, so only addresses that stay local for the whole test are probed (the sandbox's
    own bridge address is probed separately, as ``gateway``)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    return [
        line.split()[3].split("/")[0]
        for line in out.stdout.splitlines()
        if not line.split()[1].startswith("dnah")
    ]


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


async def test_no_host_path_is_reachable(box: Box, oci_config: OciConfig, host_secret: Path) -> None:
    sandbox_dir = oci_config.state_dir / "sandboxes" / box.id
    assert await box.out("test -d /workspace && test -d /opt/dnah/guest && echo inside") == "inside"
    for path in (host_secret, oci_config.state_dir, sandbox_dir, Path("/work/main"), Path("/var/cache/dnah")):
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
    two_boxes: tuple[Box, Box], oci_config: OciConfig
) -> None:
    a, b = two_boxes
    await a.out("echo mine > /tmp/only-in-a; echo mine > ~/only-in-a")
    assert await a.out("cat /tmp/only-in-a") == "mine"
    assert await b.out("test -e /tmp/only-in-a || test -e ~/only-in-a || echo absent") == "absent"
    a_dir = oci_config.state_dir / "sandboxes" / a.id
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
    box: Box, oci_config: OciConfig, host_listeners: tuple[int, int]
) -> None:
    _, anywhere = host_listeners
    gateway = str(oci_config.subnet.network_address + 1)
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


# root inside ---------------------------------------------------------------------------------

SYSCALL = """
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
number, *args = (int(a) for a in sys.argv[1:])
result = libc.syscall(number, *(ctypes.c_long(a) for a in args))
print(errno.errorcode.get(ctypes.get_errno(), "ok") if result == -1 else "ok")
"""
_INIT_MODULE, _BPF, _PERF_EVENT_OPEN, _KEYCTL = 175, 321, 298, 250


async def test_root_inside_is_contained(box: Box, host_secret: Path) -> None:
    """``sudo`` gives root inside; root can still do none of what would reach the host."""
    assert await box.out("sudo -n id -u") == "0"
    status = await box.out("sudo -n grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert status.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]
    assert await box.out("sudo -n touch /etc/owned-by-root && echo ok") == "ok"  # root inside works
    attempts = {
        "mount": "mkdir -p /tmp/m && sudo -n mount -t tmpfs none /tmp/m",
        "bind mount": "sudo -n mount --bind / /tmp/m",
        "user namespace": "sudo -n unshare -U true",
        "unprivileged user namespace": "unshare -U true",
        "other namespaces": "sudo -n unshare -m -n -p -f true",
        "sysctl": "echo other | sudo -n tee /proc/sys/kernel/hostname",
        "sysfs": "echo 1 | sudo -n tee /sys/kernel/mm/ksm/run",
        "sysrq": "echo h | sudo -n tee /proc/sysrq-trigger",
        "raw socket": "sudo -n python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
        "packet socket": "sudo -n python3 -c 'import socket as s; s.socket(s.AF_PACKET, s.SOCK_RAW)'",
        "address": "sudo -n ip addr add 10.99.0.9/32 dev eth0",
        "route": "sudo -n ip route replace default via 127.0.0.1 dev lo",
        "link down": "sudo -n ip link set eth0 down",
        "device node": "sudo -n mknod /tmp/mem c 1 1",
        "host file": f"sudo -n cat {host_secret}",
        "kernel log": "sudo -n dmesg",
        "chroot escape": "sudo -n chroot /proc/1/root true && sudo -n ls /proc/1/root/../..",
        "hostname": "sudo -n hostname other",
        "clock": "sudo -n date -s '2001-01-01'",
    }
    for what, script in attempts.items():
        result = await box.sh(script)
        if what == "chroot escape":  # chroot works (CAP_SYS_CHROOT) but stays in the sandbox
            assert "dnah-secret" not in result.stdout
            continue
        assert result.exit_code != 0, (what, result)
    for name, number in {
        "init_module": _INIT_MODULE,
        "bpf": _BPF,
        "perf_event_open": _PERF_EVENT_OPEN,
    }.items():
        outcome = await box.out(f"sudo -n python3 -c '{SYSCALL}' {number} 0 0 0 0 0")
        assert outcome == "EPERM", (name, outcome)
    assert await box.out(f"sudo -n python3 -c '{SYSCALL}' {_KEYCTL} 0 0 0 0 0") == "EPERM"
    assert await box.out("sudo -n insmod /nonexistent.ko 2>&1 || true") != ""
    assert await box.out("hostname") == box.id
    assert await box.out("ip -4 -o addr show dev eth0 | wc -l") == "1"


async def test_root_inside_sees_no_host_process(box: Box) -> None:
    listing = await box.out("sudo -n ps -e -o pid=,comm=")
    assert all(int(line.split()[0]) < 1000 for line in listing.splitlines()), listing
    assert not any("pytest" in line or "runc" in line for line in listing.splitlines())


@pytest.fixture
async def host_services() -> AsyncIterator[dict[str, int]]:
    """Listeners where Postgres, Redis, core, hostd and the gateway would be (loopback and
    any address), so the probes below hit a real listener."""
    with listener("127.0.0.1") as loopback, listener("0.0.0.0") as anywhere:
        yield {"loopback": loopback, "anywhere": anywhere}


async def test_root_inside_reaches_no_host_service(
    box: Box, oci_config: OciConfig, host_services: dict[str, int]
) -> None:
    gateway = str(oci_config.subnet.network_address + 1)
    ports = [5432, 6379, 8000, 8080, 8787, *host_services.values()]
    targets = [f"{host}:{port}" for host in ("127.0.0.1", gateway, *host_addresses()) for port in ports]
    result = await box.client.exec(["sudo", "-n", "python3", "-c", PROBE, *targets], timeout_ms=60_000)
    assert result.exit_code == 0, result
    assert all(outcome != "ok" for outcome in json.loads(result.stdout).values()), result.stdout


async def test_the_tools_work_under_the_filter(box: Box) -> None:
    script = (
        "set -e; python3 -c 'import threading, subprocess, multiprocessing; print(1)';"
        " git init -q /tmp/repo && git -C /tmp/repo status --short; node -e 'console.log(2)';"
        " bash -c 'echo 3'; sudo -n true; dpkg -s bash > /dev/null; pip --version > /dev/null;"
        " python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'print(4)';"
        " python3 -c 'import os, pty; pid, fd = pty.fork();"
        ' os.execvp("echo", ["echo", "pty"]) if pid == 0 else print(os.read(fd, 100).decode().strip())\''
    )
    assert (await box.out(script)).split() == ["1", "2", "3", "4", "pty"]


SUBVOLUME = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/tmp", os.O_RDONLY)
args = ctypes.create_string_buffer(bytes(8) + b"nested", 4096)  # struct btrfs_ioctl_vol_args
result = libc.syscall(16, fd, ctypes.c_ulong(int(sys.argv[1], 16)), args)  # ioctl
print(errno.errorcode.get(ctypes.get_errno(), "ok") if result == -1 else "made")
"""


async def test_no_subvolume_escapes_the_disk_quota_and_reflinks_still_work(box: Box) -> None:
    """A btrfs subvolume made inside the disk would be outside its quota: the filter refuses
    btrfs' volume ioctls (to root too, and with junk in the request's upper 32 bits, which
    the kernel ignores), while ``cp --reflink`` (FICLONE) keeps working."""
    for request in ("5000940E", "50009418", "50009401", "50009417", "FFFFFFFF5000940E"):
        for sudo in ("", "sudo -n "):
            outcome = await box.out(f"{sudo}python3 -c '{SUBVOLUME}' {request}")
            assert outcome == "EPERM", (request, sudo, outcome)
    assert await box.out("ls /tmp | grep -c nested || true") == "0"
    copied = "head -c 1000000 /dev/urandom > /tmp/a && cp --reflink=always /tmp/a /tmp/b && cmp /tmp/a /tmp/b"
    assert await box.out(f"{copied} && echo same") == "same"


async def test_sudo_apt_get_installs_a_local_package(box: Box, oci_config: OciConfig, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "usr/local/bin").mkdir(parents=True)
    (package / "DEBIAN/control").write_text(
        "Package: dnah-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.invalid>\n"
        "Description: a probe\n"
    )
    script = package / "usr/local/bin/dnah-probe"
    script.write_text("#!/bin/sh\necho installed as $(id -un)\n")
    script.chmod(0o755)
    deb = tmp_path / "x.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(package), str(deb)], check=True)
    # Into the sandbox's disk from the host, owned by daytona's host uid.
    inside = oci_config.pool.mountpoint / "disks" / box.id / "tmp/x.deb"
    inside.write_bytes(deb.read_bytes())
    os.chown(inside, oci_config.uid_base + 1000, oci_config.uid_base + 1000)
    result = await box.sh("cd /tmp && sudo -n apt-get install -y -q ./x.deb", timeout_ms=120_000)
    assert result.exit_code == 0, result
    assert await box.out("dnah-probe") == "installed as daytona"
    assert await box.out("stat -c %U /usr/local/bin/dnah-probe") == "root"


async def test_a_fork_bomb_is_stopped_by_the_pids_limit(two_boxes: tuple[Box, Box]) -> None:
    a, b = two_boxes
    bomb = (
        "import os, time\n"
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print('stopped', exc.errno, n >= 400, flush=True); break\n"
        "    if pid == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "    n += 1\n"
    )
    result = await a.client.exec(["timeout", "-s", "KILL", "20", "python3", "-c", bomb], timeout_ms=30_000)
    assert "stopped 11 True" in result.stdout, result  # EAGAIN, after hundreds of forks
    assert await b.out("echo answering") == "answering"
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks
    await a.sh("pkill -KILL -f 'time.sleep' || true")


async def test_writing_past_disk_gb_fails_and_the_sandbox_lives_on(box: Box) -> None:
    """``box`` has disk_gb=1; its template alone uses a good part of it."""
    result = await box.sh("dd if=/dev/zero of=/tmp/big bs=1M count=1536 conv=fsync 2>&1", timeout_ms=120_000)
    assert result.exit_code != 0, result
    assert "Disk quota exceeded" in result.stdout or "No space left" in result.stdout, result
    assert await box.out("rm /tmp/big; echo answering") == "answering"


@contextlib.contextmanager
def internet(n: int) -> Iterator[str]:
    """A stand-in for the internet: a network namespace of the test's own with a veth to the
    host (198.18.n.0/30, the benchmarking range) and a TCP listener at 198.18.n.2:8080.
    Returns that target. Nothing outside the machine is involved."""
    name, host_end, ns_end = f"dnahinet{n}", f"dnahiv{n}h", f"dnahiv{n}n"
    host_ip, ns_ip = f"198.18.{n}.1", f"198.18.{n}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    server = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_end)
        ip("-n", name, "link", "set", ns_end, "up")
        ip("-n", name, "link", "set", "lo", "up")
        accept = f"import socket\ns = socket.create_server(('{ns_ip}', 8080))\nprint(1, flush=True)\n"
        accept += "while True: s.accept()[0].close()"
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, "python3", "-c", accept], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "1"
        with socket.create_connection((ns_ip, 8080), timeout=5):  # reachable from the host
            pass
        yield f"{ns_ip}:8080"
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


async def test_egress_none_keeps_packets_in_and_nat_lets_them_out(
    box: Box, oci_config: OciConfig, kernel_index: int
) -> None:
    """The test runtimes run with egress off (``DNAH_SANDBOX_EGRESS=none``): a host beyond the
    machine's own addresses is unreachable. Turning NAT on (the default outside tests) reaches
    the same host, so the refusal is the rule's doing, not a broken probe."""
    network = box.runtime._network
    assert not oci_config.egress and not network.egress
    with internet(kernel_index) as target:
        assert (await probe(box, target))[target] != "ok"
        network.egress = True
        await asyncio.to_thread(network.ensure_host)
        try:
            assert (await probe(box, target))[target] == "ok"
        finally:
            network.egress = False
            await asyncio.to_thread(network.ensure_host)
        assert (await probe(box, target))[target] != "ok"
