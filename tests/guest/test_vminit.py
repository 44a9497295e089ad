"""vminit, the microVM's PID 1: the host's boot parameters and control messages read alike on both
ends (unit tests), and a real QEMU boot (TCG) reaching vminit and the agent (``vm`` tests)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Awaitable
from pathlib import Path

import msgspec
import pytest

from contracts import vm
from guest import vmproto
from hosts.agent_client import AgentClient, wait_ready
from hosts.errors import AgentUnavailable, RuntimeFailure
from hosts.vm import control
from hosts.vm.identity import new_identity, refresh_identity
from hosts.vm.images import VmImage
from tests.hosts.vm._boot import BOOT_TIMEOUT_S, GuestVm, booted, vm_image, vm_store, vm_template, wait_exit
from tests.support import await_for

__all__ = ["vm_image", "vm_store", "vm_template"]  # fixtures

# Boot parameters -----------------------------------------------------------------------------

PARAMS = [
    vm.BootParams(hostname="sb-1"),
    vm.BootParams(
        hostname="Sandbox_2.x",
        address="10.214.3.7/24",
        gateway="10.214.3.1",
        dns=("10.214.3.1", "2001:db8::53"),
        channel="vsock",
        agent_uid=1001,
        agent_gid=1002,
        configure=True,
    ),
]


@pytest.mark.parametrize("params", PARAMS, ids=["minimal", "everything"])
def test_boot_params_read_alike_on_both_ends(params: vm.BootParams) -> None:
    cmdline = f"console=ttyS0 panic=-1 {params.to_cmdline()} tsc_early_khz=2596129 quiet"
    assert vm.BootParams.from_cmdline(cmdline) == params
    parsed = vmproto.parse_cmdline(cmdline)
    assert parsed == {**msgspec.structs.asdict(params), "dns": tuple(params.dns)}
    assert vm.BootParams(**parsed) == params


def test_boot_params_are_dotted_words_without_quoting() -> None:
    words = PARAMS[1].to_cmdline().split(" ")
    assert all(re.fullmatch(r"dnah\.[a-z]+=[A-Za-z0-9_.,:/-]+", w) for w in words), words


@pytest.mark.parametrize(
    "fields",
    [
        {"hostname": "-lead"},
        {"hostname": "a/b"},
        {"hostname": "x", "address": "10.0.0.1"},
        {"hostname": "x", "address": "fd00::1/64"},
        {"hostname": "x", "gateway": "10.0.0.300"},
        {"hostname": "x", "dns": ("not-an-ip",)},
        {"hostname": "x", "agent_uid": 0},
    ],
)
def test_invalid_boot_params_are_refused_by_both_ends(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        vm.BootParams(**fields)  # type: ignore[arg-type]
    words = []
    for key, value in fields.items():
        name = {"agent_uid": "uid"}.get(key, key)
        words.append(f"dnah.{name}={','.join(value) if isinstance(value, tuple) else value}")
    with pytest.raises(vmproto.Invalid):
        vmproto.parse_cmdline(" ".join(words))


def test_a_cmdline_without_a_hostname_is_refused() -> None:
    with pytest.raises(vmproto.Invalid, match="hostname"):
        vmproto.parse_cmdline("console=ttyS0 dnah.channel=serial")


# Control messages ----------------------------------------------------------------------------


def test_control_messages_read_alike_on_both_ends() -> None:
    refresh = new_identity("fork-1", address="10.214.9.2/24", gateway="10.214.9.1", mac="02:aa:bb:cc:dd:01")
    parsed = vmproto.parse_control(vm.encode_control(refresh))
    assert parsed == {
        "t": "identity",
        "hostname": "fork-1",
        "machine_id": refresh.machine_id,
        "boot_id": refresh.boot_id,
        "entropy": bytes.fromhex(refresh.entropy),
        "unix_time_ns": refresh.unix_time_ns,
        "address": "10.214.9.2/24",
        "gateway": "10.214.9.1",
        "mac": "02:aa:bb:cc:dd:01",
    }
    assert vmproto.parse_control(vm.encode_control(new_identity("h")))["mac"] is None
    clock = vm.SetClock(unix_time_ns=time.time_ns())
    assert vmproto.parse_control(vm.encode_control(clock)) == {
        "t": "clock",
        "unix_time_ns": clock.unix_time_ns,
    }
    configure = vm.Configure(env={"A": "1", "B": "é \n"})
    assert vmproto.parse_control(vm.encode_control(configure)) == {
        "t": "configure",
        "env": {"A": "1", "B": "é \n"},
    }
    assert vmproto.parse_control(vm.encode_control(vm.Poweroff())) == {"t": "poweroff"}
    assert vm.decode_reply(vmproto.encode_reply()) == vm.ControlReply(ok=True)
    assert vm.decode_reply(vmproto.encode_reply("no")) == vm.ControlReply(ok=False, error="no")


@pytest.mark.parametrize(
    "change",
    [
        {"machine_id": "A" * 32},
        {"boot_id": "not-a-uuid"},
        {"entropy": "ab" * 31},
        {"entropy": "zz" * 32},
        {"unix_time_ns": -1},
        {"hostname": ""},
        {"address": "10.0.0.1"},
        {"mac": "03:00:00:00:00:01"},  # multicast
        {"mac": "02:AA:BB:CC:DD:01"},
        {"mac": "02:aa:bb:cc:dd"},
    ],
)
def test_invalid_identity_refreshes_are_refused_by_both_ends(change: dict[str, object]) -> None:
    raw = {**json.loads(vm.encode_control(new_identity("h"))), **change}
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(raw), type=vm.ControlMessage)
    with pytest.raises(vmproto.Invalid):
        vmproto.parse_control(json.dumps(raw).encode())


@pytest.mark.parametrize(
    "line",
    [
        b"{",
        b"[]",
        b'{"t": "reboot"}',
        b'{"t": "configure", "env": {"A=B": "x"}}',
        b'{"t": "clock", "unix_time_ns": -5}',
        b'{"t": "clock", "unix_time_ns": "1"}',
    ],
)
def test_garbled_control_lines_are_refused(line: bytes) -> None:
    with pytest.raises(vmproto.Invalid):
        vmproto.parse_control(line)


# A real VM -----------------------------------------------------------------------------------

ADDRESS, GATEWAY, DNS = "10.77.0.5/24", "10.77.0.1", "10.77.0.53"


async def _run(client: AgentClient, *argv: str) -> str:
    result = await client.exec(list(argv), timeout_ms=60_000)
    assert result.exit_code == 0, (argv, result.stderr)
    return result.stdout


async def _ready(booted_vm: GuestVm) -> AgentClient:
    try:
        return await wait_ready(booted_vm.agent_socket, timeout=BOOT_TIMEOUT_S)
    except AgentUnavailable:
        pytest.fail(f"the agent never answered; console:\n{booted_vm.console_text()[-3000:]}")


@pytest.mark.vm
async def test_a_booted_vm_runs_the_agent_as_the_oci_runtime_does(vm_image: VmImage, tmp_path: Path) -> None:
    params = vm.BootParams(hostname="vm-one", address=ADDRESS, gateway=GATEWAY, dns=(DNS,), configure=True)
    async with booted(vm_image, tmp_path, params) as guest:
        configure = vm.Configure(env={"GREETING": "hello vm", "PATH": "/usr/bin:/bin"})
        await await_for(
            lambda: _try(control.send(guest.agent_socket, configure, timeout=10)),
            what="vminit to take the configuration",
            timeout_s=BOOT_TIMEOUT_S,
        )
        client = await _ready(guest)
        try:
            assert await _run(client, "id") == "uid=1000(daytona) gid=1000(daytona) groups=1000(daytona)\n"
            assert await _run(client, "hostname") == "vm-one\n"
            assert await _run(client, "pwd") == "/home/daytona\n"
            env = await _run(client, "env")
            assert "GREETING=hello vm\n" in env
            assert "HOME=/home/daytona\n" in env
            assert "PYTHONPATH" not in env
            assert f"inet {ADDRESS} " in await _run(client, "ip", "-4", "addr", "show", "eth0")
            assert f"default via {GATEWAY} dev eth0" in await _run(client, "ip", "route")
            assert await _run(client, "cat", "/etc/resolv.conf") == f"nameserver {DNS}\n"
            assert "vm-one" in await _run(client, "cat", "/etc/hosts")
            mounts = await _run(client, "cat", "/proc/mounts")
            for point, kind in (
                ("/", "ext4"),
                ("/dev/pts", "devpts"),
                ("/dev/shm", "tmpfs"),
                ("/run", "tmpfs"),
            ):
                assert f" {point} {kind} " in mounts, mounts
            assert (await _run(client, "sudo", "-n", "id", "-u")) == "0\n"
            with pytest.raises(RuntimeFailure, match="already configured"):
                await control.send(guest.agent_socket, configure)
        finally:
            await client.close()
        await control.send(guest.agent_socket, vm.Poweroff())
        assert await wait_exit(guest) == 0
        console = guest.console_text()
        assert re.search(r"dnah-vminit: \[[0-9.]+\] power off", console), console[-2000:]
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(guest.disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


@pytest.mark.vm
async def test_identity_refresh_restart_reaping_and_sigterm(vm_image: VmImage, tmp_path: Path) -> None:
    async with booted(vm_image, tmp_path, vm.BootParams(hostname="vm-two", address=ADDRESS)) as guest:
        client = await _ready(guest)
        try:
            old_boot_id = await _run(client, "cat", "/proc/sys/kernel/random/boot_id")
            refresh = msgspec.structs.replace(
                new_identity(
                    "vm-two-fork", address="10.78.0.9/16", gateway="10.78.0.1", mac="02:00:5e:10:00:09"
                ),
                unix_time_ns=time.time_ns() + 10 * 365 * 86400 * 10**9,
            )
            await refresh_identity(guest.agent_socket, refresh)
            assert await _run(client, "hostname") == "vm-two-fork\n"
            assert await _run(client, "cat", "/etc/machine-id") == f"{refresh.machine_id}\n"
            boot_id = await _run(client, "cat", "/proc/sys/kernel/random/boot_id")
            assert boot_id == f"{refresh.boot_id}\n" != old_boot_id
            guest_now = int(await _run(client, "date", "+%s"))
            assert abs(guest_now - refresh.unix_time_ns // 10**9) < 3600
            assert "inet 10.78.0.9/16 " in await _run(client, "ip", "-4", "addr", "show", "eth0")
            assert "default via 10.78.0.1 dev eth0" in await _run(client, "ip", "route")
            assert await _run(client, "cat", "/sys/class/net/eth0/address") == "02:00:5e:10:00:09\n"
            # the clock alone, as after a resume: back from ten years ahead to the host's
            await control.send(guest.agent_socket, vm.SetClock(unix_time_ns=time.time_ns()))
            guest_now = int(await _run(client, "date", "+%s"))
            assert abs(guest_now - time.time()) < 60

            # an orphan (its parent exits at once) is reaped by PID 1 when it ends
            await _run(client, "sh", "-c", "sleep 0.5 & exit 0")
            await await_for(
                lambda: _no_zombies(client), what="no zombie left after the orphan ended", timeout_s=60
            )

            # the agent killed is started again
            old_pid = await _run(client, "pgrep", "-o", "-f", "guest.agent")
            with pytest.raises(Exception):  # noqa: B017 — the connection dies with the agent: any error
                await client.exec(["pkill", "-KILL", "-f", "guest.agent"], timeout_ms=10_000)
        finally:
            await client.close()
        client = await _ready(guest)
        try:
            assert await _run(client, "pgrep", "-o", "-f", "guest.agent") != old_pid
            # vminit stops the agent at once, so the reply may or may not make it out
            with contextlib.suppress(AgentUnavailable):
                await client.exec(["sudo", "-n", "kill", "-TERM", "1"], timeout_ms=10_000)
        finally:
            await client.close()
        assert await wait_exit(guest) == 0
        assert re.search(r"dnah-vminit: \[[0-9.]+\] shutting down", guest.console_text())
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(guest.disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


async def _try(attempt: Awaitable[None]) -> bool:
    try:
        await attempt
    except AgentUnavailable:
        return False
    return True


async def _no_zombies(client: AgentClient) -> bool:
    states = await _run(client, "ps", "-eo", "stat=")
    return "Z" not in states
