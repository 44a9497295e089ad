"""The agent channel over vhost-vsock: hostd's ``VsockBridge``, how the QEMU backend picks a
channel, and the command line of each.

AF_VSOCK cannot carry a connection on this machine (no ``/dev/vhost-vsock``, no loopback
transport), so the bridge's tests replace its one AF_VSOCK call (``connect``) with Unix sockets:
``GuestStandIn`` is a stand-in for the guest's vsock listeners, a ``python3 -S`` subprocess that
listens on ``vsock-<port>.sock`` and serves each connection with the guest's own relay
(``guest/channel.py``'s ``serve_listener``, which ``serve_vsock`` runs on the AF_VSOCK
listener in the VM) to the real agent (``python3 -S -m guest.agent``) on port 52 and an
upper-casing handler on 53. Everything from the agent socket to the agent is the real code.
``test_a_real_vm_over_vhost_vsock`` boots a VM through vhost-vsock where the kernel offers it,
and says why it skips elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.config import ConfigError, load_config
from hosts.errors import RuntimeFailure
from hosts.runtime import _vsock
from hosts.runtime._channel import SerialMuxer
from hosts.runtime._layout import DiskBase
from hosts.runtime._undo import Undo
from hosts.runtime._vsock import VsockBridge, VsockProbe, probe_vhost_vsock
from hosts.runtime.kvm import KvmProbe
from hosts.runtime.qemu import QemuConfig, QemuRuntime, launcher
from hosts.runtime.qemu.channel import guest_cid, open_channel, select_channel
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from hosts.vm.layout import Machine, RunFiles
from hosts.vm.runtime import Vm
from tests.hosts.conftest import make_spec
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[3]
ENV = {"PYTHONPATH": str(REPO)}

GUEST_STAND_IN = """
import socket, sys, threading
from guest import channel

def upper(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.sendall(data.upper())

targets = {52: channel.agent_target(sys.argv[2]), 53: channel.in_process(upper)}
for port, target in targets.items():
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{sys.argv[1]}/vsock-{port}.sock")
    listener.listen(128)
    threading.Thread(target=channel.serve_listener, args=(listener, target), daemon=True).start()
threading.Event().wait()
"""
"""A stand-in for vminit's vsock listeners: Unix sockets instead of AF_VSOCK ports, the
guest's relay code behind them."""


@dataclasses.dataclass
class Rig:
    workdir: Path
    bridge: VsockBridge
    guest: subprocess.Popen[bytes]
    ports: list[int]
    """Every port the bridge asked the stand-in for, in order."""

    @property
    def socket(self) -> Path:
        return self.bridge.agent_socket

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """A raw connection after the handshake line; returns the reply line too."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(b"CONNECT %d\n" % port)
        line = await asyncio.wait_for(reader.readline(), 30)
        return reader, writer, line


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dnah-vsock-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def agent(workdir: Path) -> Iterator[Path]:
    socket_path = workdir / "agent.sock"
    argv = [sys.executable, "-S", "-m", "guest.agent", "--uds", str(socket_path)]
    process = subprocess.Popen(argv, env=ENV, cwd=workdir, start_new_session=True, stderr=subprocess.DEVNULL)
    yield socket_path
    _stop(process)


@pytest.fixture
async def rig(workdir: Path, agent: Path) -> AsyncIterator[Rig]:
    argv = [sys.executable, "-S", "-c", GUEST_STAND_IN, str(workdir), str(agent)]
    process = subprocess.Popen(argv, env=ENV, stderr=subprocess.DEVNULL)
    ports: list[int] = []

    async def connect(port: int) -> _vsock.Streams:
        ports.append(port)
        return await asyncio.open_unix_connection(str(workdir / f"vsock-{port}.sock"))

    await asyncio.to_thread(
        wait_for, lambda: (workdir / "vsock-53.sock").exists(), what="the guest stand-in's listeners"
    )
    bridge = VsockBridge(
        guest_cid(ipaddress.IPv4Address("10.224.0.2")), workdir / "bridge.sock", connect=connect
    )
    await bridge.start()
    try:
        yield Rig(workdir, bridge, process, ports)
    finally:
        await bridge.close()
        _stop(process)


# the bridge ----------------------------------------------------------------------------------


async def test_ping_and_exec_through_the_bridge(rig: Rig) -> None:
    client = await wait_ready(rig.socket, timeout=30)
    try:
        assert (await client.ping()).version == guest.PROTOCOL_VERSION
        result = await client.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    finally:
        await client.close()
    assert guest.AGENT_PORT in rig.ports
    assert oct(rig.socket.stat().st_mode & 0o777) == "0o600"


async def test_half_close_reaches_the_guest_and_comes_back(rig: Rig) -> None:
    reader, writer, line = await rig.connect(53)
    assert line == b"OK 53\n"
    writer.write(b"hello ")
    writer.write(b"bridge")
    writer.write_eof()  # the handler reads to EOF before it answers
    assert await asyncio.wait_for(reader.read(), 30) == b"HELLO BRIDGE"  # read() returns at EOF
    writer.close()


async def test_a_large_stream_passes_whole_both_ways(rig: Rig) -> None:
    data = os.urandom(3 * 1024 * 1024).hex().encode()[: 4 * 1024 * 1024]
    reader, writer, line = await rig.connect(53)
    assert line == b"OK 53\n"

    async def send() -> None:
        for at in range(0, len(data), 100_000):
            writer.write(data[at : at + 100_000])
            await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(), 120)
    await sending
    assert received == data.upper()
    writer.close()


async def test_a_port_nobody_serves_closes_the_connection(rig: Rig) -> None:
    _, writer, line = await rig.connect(99)
    assert line == b""  # closed without an OK, as Cloud Hypervisor's muxer does
    assert rig.ports[-1] == 99
    writer.close()
    _, writer, line = await rig.connect(52)  # and the bridge carries on
    assert line == b"OK 52\n"
    writer.close()


@pytest.mark.parametrize(
    "handshake",
    [b"HELLO there\n", b"CONNECT\n", b"CONNECT fifty-two\n", b"CONNECT 99999999999\n", b"CONNECT 52"],
)
async def test_a_malformed_handshake_is_closed_without_reaching_the_guest(rig: Rig, handshake: bytes) -> None:
    reader, writer = await asyncio.open_unix_connection(str(rig.socket))
    writer.write(handshake)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    assert rig.ports == []


async def test_a_guest_that_goes_away_ends_its_streams_and_later_connects_are_refused(rig: Rig) -> None:
    reader, writer, line = await rig.connect(53)
    assert line == b"OK 53\n"
    _stop(rig.guest)
    assert await asyncio.wait_for(reader.read(), 30) == b""  # the stream ended with the guest
    writer.close()
    _, writer, line = await rig.connect(53)
    assert line == b""
    writer.close()


async def test_close_cuts_every_connection_and_removes_the_socket(rig: Rig) -> None:
    reader, writer, line = await rig.connect(53)
    assert line == b"OK 53\n"
    await asyncio.wait_for(rig.bridge.close(), 30)  # without waiting for the client
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    assert not rig.socket.exists()
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(str(rig.socket))
    await rig.bridge.close()  # idempotent


# choosing the channel ------------------------------------------------------------------------


def _probe(usable: bool) -> VsockProbe:
    return VsockProbe(usable, "usable" if usable else "/dev/vhost-vsock does not exist")


def _unused() -> VsockProbe:
    raise AssertionError("an explicit channel must not probe")


def test_auto_picks_vsock_only_where_vhost_vsock_is_usable() -> None:
    assert select_channel("auto", lambda: _probe(True)) == ("vsock", "usable")
    assert select_channel("auto", lambda: _probe(False)) == ("serial", "/dev/vhost-vsock does not exist")


def test_naming_a_channel_overrides_the_probe_both_ways() -> None:
    assert select_channel("serial", _unused) == ("serial", "DNAH_QEMU_CHANNEL=serial")
    assert select_channel("vsock", _unused) == ("vsock", "DNAH_QEMU_CHANNEL=vsock")
    with pytest.raises(ValueError, match="auto, serial or vsock"):
        select_channel("virtio", _unused)


def test_the_setting_reaches_the_qemu_config(tmp_path: Path) -> None:
    def hostd(channel: str | None) -> QemuConfig:
        environ = {"DNAH_BOOTSTRAP_TOKEN": "t", "DNAH_VAR_DIR": str(tmp_path), "DNAH_HOST_RUNTIME": "qemu"}
        if channel is not None:
            environ["DNAH_QEMU_CHANNEL"] = channel
        config = load_config(environ, kvm=lambda: KvmProbe(False, "no"), which=lambda _: None)
        templates = TemplateStore(tmp_path / "templates", tmp_path / "build.sh")
        return QemuConfig.from_hostd(config, templates, vsock=lambda: _probe(usable))

    for usable in (True, False):
        assert hostd(None).channel == ("vsock" if usable else "serial")  # auto is the default
        assert hostd("serial").channel == "serial"
        assert hostd("vsock").channel == "vsock"
    assert hostd("vsock").channel_reason == "DNAH_QEMU_CHANNEL=vsock"
    with pytest.raises(ConfigError, match="DNAH_QEMU_CHANNEL"):
        hostd("pci")


def test_the_probe_wants_a_character_device_that_opens_read_write(tmp_path: Path) -> None:
    missing = probe_vhost_vsock(tmp_path / "vhost-vsock")
    assert not missing.usable and "does not exist" in missing.reason
    (tmp_path / "file").write_bytes(b"")
    assert probe_vhost_vsock(tmp_path / "file") == VsockProbe(
        False, f"{tmp_path / 'file'} is not a character device"
    )
    # /dev/null stands in for a character device that opens: usable if AF_VSOCK sockets exist.
    assert probe_vhost_vsock(Path("/dev/null")).usable


def test_the_guest_cid_is_the_vms_address_and_never_a_reserved_one() -> None:
    assert guest_cid(ipaddress.IPv4Address("10.224.3.5")) == 0x0AE00305
    for reserved in ("0.0.0.0", "0.0.0.2", "255.255.255.255"):
        with pytest.raises(ValueError):
            guest_cid(ipaddress.IPv4Address(reserved))


def test_the_channel_is_served_by_the_transport_the_machine_names(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    address = ipaddress.IPv4Address("10.224.3.5")
    bridge = open_channel("vsock", files, address)
    assert isinstance(bridge, VsockBridge) and bridge.cid == 0x0AE00305 and bridge.agent_socket == files.agent
    muxer = open_channel("serial", files, address)
    assert isinstance(muxer, SerialMuxer) and muxer.agent_socket == files.agent


def test_a_machine_recorded_before_channels_existed_is_serial() -> None:
    old = b'{"cpu":1,"ram_mb":256,"kernel":"/k","initrd":"/i","mac":"02:00:00:00:00:01","accel":"tcg"}'
    assert msgspec.json.decode(old, type=Machine).channel == "serial"


async def test_a_memory_snapshot_taken_over_the_other_channel_is_refused(tmp_path: Path) -> None:
    config = QemuConfig(
        state_dir=tmp_path / "hostd",
        templates=TemplateStore(tmp_path / "templates", tmp_path / "build.sh"),
        pool=PoolConfig(image=tmp_path / "pool.img", size_bytes=2**30, mountpoint=tmp_path / "pool"),
        image_cache=tmp_path / "cache",
        guest_dir=tmp_path / "guest",
        channel="vsock",
    )
    runtime = QemuRuntime(config)
    vm = Vm(make_spec("s1"), DiskBase(template="base", content_hash="h"))
    machine = Machine(
        cpu=1, ram_mb=256, kernel="/k", initrd="/i", mac="02:00:00:00:00:01", accel="tcg", channel="vsock"
    )
    files = tmp_path / "snapshot-files"  # a snapshot from before channels were recorded: serial
    files.mkdir()
    with pytest.raises(RuntimeFailure, match="the serial agent channel; this host gives VMs the vsock one"):
        await runtime._vmm_restore(vm, machine, files, Undo("s1"))


# the command line ----------------------------------------------------------------------------


def test_the_command_line_has_exactly_one_channel_device_in_the_same_place(tmp_path: Path) -> None:
    machine = Machine(cpu=1, ram_mb=256, kernel="/k", initrd="/i", mac="02:00:00:00:00:01", accel="tcg")
    files = RunFiles(tmp_path)
    disk = tmp_path / "d.img"
    serial = launcher.argv("qemu", machine, files, disk=disk, cmdline="x=1", name="s1")
    vsock = launcher.argv("qemu", machine, files, disk=disk, cmdline="x=1", name="s1", vsock_cid=0x0AE00305)
    devices = [serial[i + 1] for i, arg in enumerate(serial) if arg == "-device"]
    assert "virtserialport,chardev=agent,name=agent" in devices
    assert not any("vsock" in d for d in devices)
    assert f"path={launcher.serial_socket(files)},server=on,wait=off" in " ".join(serial)
    vsock_devices = [vsock[i + 1] for i, arg in enumerate(vsock) if arg == "-device"]
    assert vsock_devices[0] == f"vhost-vsock-device,id=vsock0,guest-cid={0x0AE00305}"
    assert "-chardev" not in vsock and not any("serial" in d for d in vsock_devices)
    # The channel takes the serial port's place: the other devices keep their virtio-mmio slots.
    assert vsock_devices[1:] == devices[2:]


# a real VM -----------------------------------------------------------------------------------

VHOST_VSOCK = probe_vhost_vsock()


@pytest.mark.vm
@pytest.mark.skipif(not VHOST_VSOCK.usable, reason=f"no vhost-vsock on this machine: {VHOST_VSOCK.reason}")
async def test_a_real_vm_over_vhost_vsock(template_store: TemplateStore, kernel_index: int) -> None:
    from tests.hosts.runtime.test_qemu import qemu_config

    root = Path(tempfile.mkdtemp(prefix="dnah-qvsock-", dir="/tmp"))
    config = dataclasses.replace(
        qemu_config(root, template_store, (kernel_index + 64) % 256), channel="vsock"
    )
    runtime = QemuRuntime(config)
    sandbox_id = f"v{uuid.uuid4().hex[:12]}"
    try:
        await runtime.recover()
        await runtime.create(make_spec(sandbox_id, env={"GREETING": "over vsock"}))
        machine = msgspec.json.decode(
            (config.state_dir / "sandboxes" / sandbox_id / "machine.json").read_bytes(), type=Machine
        )
        assert machine.channel == "vsock"
        client = await AgentClient.connect(runtime.agent_socket(sandbox_id))
        try:
            assert (await client.exec(["sh", "-c", "echo $GREETING"])).stdout == "over vsock\n"
        finally:
            await client.close()
        await runtime.destroy(sandbox_id)
        await runtime.remove_host_setup()
    finally:
        shutil.rmtree(root, ignore_errors=True)
