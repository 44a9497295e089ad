"""What a QEMU microVM sandbox can reach, probed from inside through the public API, and what the
host sees of its VMM.

The network probes are those of the OCI suites (``tests/stack/test_isolation.py``,
``tests/hosts/runtime/test_isolation.py``): a VM's TAP sits in the sandbox's netns behind the
same veth, bridge port isolation and nftables rules, so the same things must stay out of
reach — the host's services on the bridge address and on every host address, the other
sandbox, anything beyond the machine with egress off. Here they run as root too, and after
root has re-addressed the guest: in a VM root owns the kernel (addresses, routes, raw
sockets), so the host's rules, not the guest's, must be what holds.

The boundary is the hypervisor's, so the checks of it are new: the guest runs a kernel of its
own (its boot id is not the host's, which a container shares), sees none of the host's
processes or mounts and no disk but its own virtio disk of ``disk_gb``; on the host, the QEMU
process runs in the sandbox's cgroup and network namespace.

Left out, with the reason: the OCI container boundary's checks — the seccomp allowlist, the
user namespace and uid mapping, masked and read-only ``/proc`` and ``/sys``, refused mounts,
sysctls, module loading, raw sockets and device nodes, btrfs subvolume ioctls, the pids
limit on the sandbox's processes. In a VM they are the guest kernel's business and root
inside may do all of it to its own kernel; none of it reaches the host's kernel, whose only
exposure is QEMU's emulated devices (virtio-blk, -net, -serial, -rng). ``disk_gb`` is the
size of the guest's disk (checked below) instead of a quota.

Every probe that must fail is paired with one that succeeds where it should (a listener the
host reaches, an address the guest reaches, a path that exists), so a broken probe cannot pass.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts.runtime.test_isolation import PROBE, host_addresses, internet
from tests.support import exclusive_index, wait_for
from tests.vm_stack import VmStack, qemu_pids

pytestmark = [pytest.mark.stack, pytest.mark.vm]

LISTEN_PORT = 8765


class Guest:
    """A VM sandbox, driven through the gateway as its org."""

    def __init__(self, client: httpx.Client, sid: str) -> None:
        self.client = client
        self.id = sid
        info = client.get(f"/v1/sandboxes/{sid}").json()
        self.disk_gb = int(info["disk_gb"])

    def run(self, script: str, *args: str) -> dict:
        cmd = ["sh", "-c", script, "sh", *args]
        resp = self.client.post(f"/v1/sandboxes/{self.id}/exec", json={"cmd": cmd, "timeout_ms": 120_000})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def out(self, script: str, *args: str) -> str:
        result = self.run(script, *args)
        assert result["exit_code"] == 0, result
        return str(result["stdout"]).strip()

    def probe(self, *targets: str, root: bool = False) -> dict[str, str]:
        """``{"host:port": "ok" or the connect error}`` for each target, from inside."""
        sudo = "sudo -n " if root else ""
        return dict(json.loads(self.out(sudo + 'python3 -c "$@"', PROBE, *targets)))

    @property
    def address(self) -> str:
        return self.out("ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -1")

    def listen(self) -> None:
        """A TCP listener on every address, port ``LISTEN_PORT``, in the background inside
        (started once); returns once it accepts."""
        target = f"127.0.0.1:{LISTEN_PORT}"
        if self.probe(target)[target] == "ok":
            return
        server = f"import socket\ns = socket.create_server(('0.0.0.0', {LISTEN_PORT}))\n"
        server += "while True: s.accept()[0].close()"
        self.out('setsid python3 -c "$1" > /dev/null 2>&1 < /dev/null &', server)
        wait_for(lambda: self.probe(target)[target] == "ok", what=f"a listener in {self.id}", timeout_s=60)


def connect(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "ok"
    except OSError as exc:
        return type(exc).__name__


@pytest.fixture(scope="module")
def guests(vm_stack: VmStack) -> Iterator[tuple[Guest, Guest]]:
    """Two VM sandboxes of one org (so only the runtime keeps them apart)."""
    with vm_stack.client() as client:
        ids = []
        try:
            for _ in range(2):
                resp = client.post("/v1/sandboxes", json={"ram_mb": 512})
                assert resp.status_code == 201, resp.text
                ids.append(resp.json()["id"])
            yield Guest(client, ids[0]), Guest(client, ids[1])
        finally:
            for sid in ids:
                client.delete(f"/v1/sandboxes/{sid}")


@pytest.fixture
def host_listeners() -> Iterator[tuple[int, int]]:
    """Listeners on the host's 127.0.0.1 and 0.0.0.0, as hostd, Postgres or Redis would be;
    both answer the host itself."""
    with socket.create_server(("127.0.0.1", 0)) as loopback, socket.create_server(("0.0.0.0", 0)) as anywhere:
        ports = loopback.getsockname()[1], anywhere.getsockname()[1]
        assert connect("127.0.0.1", ports[0]) == connect("127.0.0.1", ports[1]) == "ok"
        yield ports


def host_targets(vm: VmStack, ports: tuple[int, int]) -> list[str]:
    """The host's services as a guest could try them: the stack's own ports, Postgres' and
    Redis' usual ones and the test's listeners, on the bridge address and every host address."""
    config = vm.stack.config
    every = [config.gateway_port, config.core_port, config.hostd_port, 5432, 6379, *ports]
    hosts = [vm.bridge_address, *(a for a in host_addresses() if a != "127.0.0.1")]
    return [f"{host}:{port}" for host in hosts for port in every]


# the network ---------------------------------------------------------------------------------


def test_the_guest_reaches_no_host_service(
    vm_stack: VmStack, guests: tuple[Guest, Guest], host_listeners: tuple[int, int]
) -> None:
    a, _ = guests
    assert a.out("ip route | awk '/default/ {print $3}'") == vm_stack.bridge_address
    # the host reaches the guest over the bridge: the network is there
    a.listen()
    assert connect(a.address, LISTEN_PORT) == "ok"
    targets = host_targets(vm_stack, host_listeners)
    for root in (False, True):
        results = a.probe(*targets, root=root)
        assert all(outcome != "ok" for outcome in results.values()), (root, results)


def test_sandboxes_cannot_reach_each_other(guests: tuple[Guest, Guest]) -> None:
    a, b = guests
    a.listen()
    target = f"{a.address}:{LISTEN_PORT}"
    assert connect(a.address, LISTEN_PORT) == "ok", "the host reaches a's listener"
    assert a.probe(target)[target] == "ok", "a reaches itself on its own address"
    assert b.probe(target)[target] != "ok"
    assert b.probe(target, root=True)[target] != "ok"


def test_root_re_addressing_the_guest_gains_nothing(
    vm_stack: VmStack, guests: tuple[Guest, Guest], host_listeners: tuple[int, int]
) -> None:
    """Root in the guest takes another address of the subnet (and, on top, the bridge's own)
    and probes again: the host's rules match the sandbox's port, not the addresses it claims."""
    a, b = guests
    spare = re.sub(r"\.\d+$", ".250", vm_stack.bridge_address)
    a.out(f"sudo -n ip addr add {spare}/24 dev eth0")
    try:
        assert spare in a.out("ip -4 -o addr show dev eth0")
        b.listen()
        b_target = f"{b.address}:{LISTEN_PORT}"
        targets = [*host_targets(vm_stack, host_listeners), b_target]
        results = a.probe(*targets, root=True)
        assert all(outcome != "ok" for outcome in results.values()), results
    finally:
        a.out(f"sudo -n ip addr del {spare}/24 dev eth0")
    assert b.probe(b_target)[b_target] == "ok", "b's listener was there all along"


def test_egress_none_keeps_packets_in(guests: tuple[Guest, Guest]) -> None:
    """The test stacks run with ``DNAH_SANDBOX_EGRESS=none``: a network beyond the machine's own
    addresses (a stand-in in a netns of the test's own, which the host itself reaches) is
    unreachable from the guest, root included."""
    a, _ = guests
    with exclusive_index("runtime-tests", 256) as n, internet(n) as target:
        host, port = target.split(":")
        assert connect(host, int(port)) == "ok"
        assert a.probe(target)[target] != "ok"
        assert a.probe(target, root=True)[target] != "ok"


# the hypervisor boundary ---------------------------------------------------------------------


def test_the_guest_runs_a_kernel_of_its_own(guests: tuple[Guest, Guest]) -> None:
    a, _ = guests
    host_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    a_boot, b_boot = (g.out("cat /proc/sys/kernel/random/boot_id") for g in guests)
    assert len({host_boot, a_boot, b_boot}) == 3, "a container would share the host's boot id"
    assert "vminit" in a.out("tr '\\0' ' ' < /proc/1/cmdline")


def test_the_guest_sees_no_host_process(guests: tuple[Guest, Guest]) -> None:
    a, _ = guests
    listing = a.out("sudo -n ps -e -o pid=,comm=")
    commands = {line.split(None, 1)[1] for line in listing.splitlines()}
    assert {"python3", "ps"} <= commands, commands  # the probe sees the guest's own
    host_only = {"pytest", "granian", "postgres", "redis-server", "qemu-system-x86", "runc"}
    assert not commands & host_only, commands
    assert any("pytest" in p for p in _host_commands()), "the host does run them"


def _host_commands() -> list[str]:
    return subprocess.run(["ps", "-e", "-o", "args="], capture_output=True, text=True).stdout.splitlines()


def test_the_guest_sees_no_host_mount_or_disk(vm_stack: VmStack, guests: tuple[Guest, Guest]) -> None:
    a, _ = guests
    mounts = a.out("cat /proc/mounts")
    assert re.search(r"^/dev/vda / ext4 ", mounts, re.MULTILINE), mounts
    host_paths = [str(vm_stack.var), "/work", "/var/cache/dnah", str(vm_stack.var / "hostd" / "pool")]
    host_mounts = Path("/proc/mounts").read_text()
    assert str(vm_stack.var / "hostd" / "pool") in host_mounts, "the host has the pool mounted"
    assert not any(path in mounts for path in host_paths), mounts
    for path in host_paths:
        assert a.out(f"test -e {path} && echo there || echo absent") == "absent", path
    # one block device with a disk on it: the sandbox's own virtio disk, of its disk_gb
    devices = a.out("sudo -n sh -c 'for d in /sys/block/*; do echo ${d##*/} $(cat $d/size); done'")
    disks = {name: int(sectors) for name, sectors in (line.split() for line in devices.splitlines())}
    assert {name for name, sectors in disks.items() if sectors > 0} == {"vda"}, disks
    assert disks["vda"] * 512 == a.disk_gb * 2**30


def test_qemu_runs_in_the_sandboxs_cgroup_and_netns(vm_stack: VmStack, guests: tuple[Guest, Guest]) -> None:
    for guest in guests:
        [pid] = qemu_pids(guest.id)
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        parent = vm_stack.stack.config.cgroup
        for controller in ("memory", "cpu", "pids"):
            v1 = [line for line in cgroups if controller in line.split(":")[1].split(",")]
            lines = v1 or [line for line in cgroups if line.startswith("0::")]  # v2: one tree
            assert lines and all(line.endswith(f"/{parent}/{guest.id}") for line in lines), (
                controller,
                cgroups,
            )
        netns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout
        assert netns.split() == [vm_stack.netns(guest.id)]
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        # in that netns the TAP QEMU opened, and no address: the guest holds the sandbox's
        inside = subprocess.run(
            ["ip", "-n", vm_stack.netns(guest.id), "-4", "-o", "addr"], capture_output=True, text=True
        ).stdout
        assert guest.address not in inside
        links = subprocess.run(
            ["ip", "-n", vm_stack.netns(guest.id), "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "tap0" in links
