"""The Cloud Hypervisor API stand-in: NOT Cloud Hypervisor. It serves the subset of Cloud
Hypervisor's REST API that the dnah backend uses, on the ``--api-socket`` path, and runs the
guest with QEMU underneath, so the backend and the contract suite can run on machines where
the real VMM cannot (no usable KVM, no package).

Run it as the real binary would be run (``python -m
tests.hosts.runtime.cloud_hypervisor.standin --api-socket path=/x/api.sock``, or through the
``cloud-hypervisor`` script next to this file); ``--version`` prints a version line like the
real binary's. Its own options: ``--standin-version`` (what ``vmm.ping`` and ``--version``
report; tests use it to play two VMM versions) and ``--standin-record DIR`` (every request,
with the schema problems found in it, appended to ``DIR/requests.jsonl``; tests fail on any
problem).

What it keeps from Cloud Hypervisor:

* every request is checked against ``ch_api.schema.json`` (``ch_schema``); one that does not
  conform is answered 400 with the problems, as the VMM refuses a body it cannot read, and is
  recorded so the test that sent it fails;
* the VM state machine: no VM / Created / Running / Paused, with the VMM's refusals for calls
  in the wrong state (404 when there is no VM configuration, 500 with the VMM's error chain
  as a JSON list of messages otherwise), ``vm.shutdown`` keeping the configuration (state
  Created, bootable again), ``vm.delete`` forgetting it, ``vmm.shutdown`` ending the process,
  and the process ending when the guest powers off;
* hybrid vsock: the ``vsock.socket`` path accepts connections that start with
  ``CONNECT <port>\\n`` and answers ``OK <n>\\n``;
* ``vm.snapshot`` (paused VMs only) writes ``config.json`` (the VM's configuration, which a
  restore reads, as Cloud Hypervisor's does), ``state.json`` and ``memory-ranges`` into the
  ``file://`` directory; ``vm.restore`` takes such a directory into a VMM without a VM and
  leaves the VM paused.

Where it differs (each is also logged when it happens):

* the guest runs in QEMU ``-M microvm`` (TCG here), not in a KVM VM of Cloud Hypervisor's;
* there is no virtio-vsock device: the guest gets a virtio-serial port, and hostd's
  ``SerialMuxer`` (run inside the stand-in) listens on the vsock socket path and plays Cloud
  Hypervisor's muxer. So the guest must use its serial channel: the stand-in rewrites
  ``dnah.channel=vsock`` to ``dnah.channel=serial`` on the kernel command line, the one
  place where the guest sees something other than what the backend asked for. Under TCG it
  also appends ``tsc=reliable tsc_early_khz=`` (what the QEMU backend gives its guests);
* ``memory-ranges`` is a QEMU migration stream (RAM and device state), ``state.json`` a note
  saying so: a stand-in snapshot restores only into the stand-in;
* ``vm.resize`` is checked (within ``max_vcpus`` and the hotplug size) and recorded in the
  configuration ``vm.info`` shows, but microvm cannot hotplug, so the running guest keeps its
  CPUs and memory;
* only the serial port (mode ``File``/``Null``/``Off``) is emulated; ``console`` must be ``Off``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import h11

from tests.hosts.runtime.cloud_hypervisor import ch_schema

NAME = "Cloud Hypervisor API stand-in"
DEFAULT_VERSION = "v0.0.0-dnah-standin"
SERVER_HEADER = f"{NAME} (dnah tests, not Cloud Hypervisor)"
CONFIG_FILE, STATE_FILE, MEMORY_FILE = "config.json", "state.json", "memory-ranges"
_MIB = 2**20
_CHANNEL = re.compile(r"(?<!\S)dnah\.channel=vsock(?!\S)")
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("ch-standin")


class VmmRefusal(Exception):
    """An error answer: ``status`` and the message chain, outermost first, as the VMM sends."""

    def __init__(self, status: int, *chain: str) -> None:
        super().__init__(": ".join(chain))
        self.status = status
        self.chain = list(chain)


def _api_error(action: str, cause: str, *detail: str) -> VmmRefusal:
    """A refusal of the internal API, which the VMM answers 500 (404 for a missing VM)."""
    status = 404 if cause in ("VM is not created", "VM config is missing") else 500
    return VmmRefusal(status, "Error from API", action, cause, *detail)


class Recorder:
    """Appends every request, and what the schema found wrong with it, to a JSON-lines file."""

    def __init__(self, directory: Path | None) -> None:
        self._path = None if directory is None else directory / "requests.jsonl"

    def record(self, method: str, path: str, body: bytes, problems: list[str], status: int) -> None:
        if self._path is None:
            return
        entry = {
            "pid": os.getpid(),
            "method": method,
            "path": path,
            "body": body.decode(errors="replace"),
            "problems": problems,
            "status": status,
        }
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, json.dumps(entry).encode() + b"\n")  # one write: lines never interleave
        finally:
            os.close(fd)


class Guest:
    """The guest, run by QEMU: the stand-in's replacement for Cloud Hypervisor's VM."""

    def __init__(self, workdir: Path, config: dict[str, Any], shape: dict[str, int] | None = None) -> None:
        self.config = config
        """The configuration ``vm.info`` shows (``vm.resize`` updates it)."""
        self.shape = shape or {
            "vcpus": config.get("cpus", {"boot_vcpus": 1})["boot_vcpus"],
            "memory": config.get("memory", {"size": 512 * _MIB})["size"],
        }
        """What QEMU was started with: the same for a restore, whatever resizes said since."""
        self.state = "Running"
        self._workdir = workdir
        self._qmp_path = workdir / "qmp.sock"
        self._serial_path = workdir / "serial.sock"
        self._process: asyncio.subprocess.Process | None = None
        self._qmp: Any = None
        self._muxer: Any = None

    @property
    def exited(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    async def start(self, incoming: Path | None = None) -> None:
        """Launch QEMU (for ``incoming``, loading the migration stream there, left paused)."""
        from hosts.runtime.qemu.qmp import Qmp

        self._workdir.mkdir(parents=True, exist_ok=True)
        for stale in (self._qmp_path, self._serial_path):
            stale.unlink(missing_ok=True)
        argv = self._argv(incoming is not None)
        log.info("stand-in: starting QEMU in place of a Cloud Hypervisor VM: %s", " ".join(argv))
        stderr = open(self._workdir / "qemu.log", "ab")  # noqa: SIM115 — handed to the child
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                preexec_fn=_die_with_parent,
            )
        finally:
            stderr.close()
        try:
            self._qmp = await self._connect(Qmp)
            await self._start_muxer()
            if incoming is not None:
                await self._load(incoming)
                self.state = "Paused"
        except BaseException:
            await self.stop()
            raise

    async def _connect(self, qmp: Any) -> Any:
        """QMP, or the reason QEMU exited before offering it (a missing kernel, a bad option)."""
        assert self._process is not None
        connecting = asyncio.ensure_future(qmp.connect(self._qmp_path, timeout=60.0))
        exited = asyncio.ensure_future(self._process.wait())
        await asyncio.wait({connecting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            tail = (self._workdir / "qemu.log").read_text(errors="replace")[-500:].strip()
            raise RuntimeError(f"QEMU exited with status {exited.result()}: {tail}")
        exited.cancel()
        return connecting.result()

    async def pause(self) -> None:
        await self._qmp.execute("stop")
        self.state = "Paused"

    async def resume(self) -> None:
        await self._qmp.execute("cont")
        self.state = "Running"

    async def snapshot(self, directory: Path) -> None:
        """The paused guest's memory and device state into ``directory``/memory-ranges."""
        target = directory / MEMORY_FILE
        await self._qmp.execute("migrate-set-parameters", {"max-bandwidth": 64 * 2**30})
        await self._qmp.execute("migrate", {"uri": f"exec:cat > {_shell_quote(str(target))}"})
        await self._await_migration("query-migrate", ("completed",))
        with open(target, "rb") as stream:
            os.fsync(stream.fileno())

    async def stop(self) -> None:
        """End QEMU and the muxer; idempotent."""
        if self._muxer is not None:
            with contextlib.suppress(Exception):
                await self._muxer.close()
            self._muxer = None
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                await self._qmp.close()
            self._qmp = None
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        self.state = "Shutdown"

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def _start_muxer(self) -> None:
        vsock = self.config.get("vsock")
        if vsock is None:
            return
        from hosts.runtime._channel import SerialMuxer

        socket = Path(vsock["socket"])
        socket.unlink(missing_ok=True)
        log.info("stand-in: hybrid vsock at %s is a SerialMuxer over a virtio-serial port", socket)
        self._muxer = SerialMuxer(self._serial_path, socket)
        await self._muxer.start()

    async def _load(self, source: Path) -> None:
        stream = source / MEMORY_FILE
        await self._qmp.execute("migrate-incoming", {"uri": f"exec:cat {_shell_quote(str(stream))}"})
        await self._await_migration("query-status", ("paused", "postmigrate"))

    async def _await_migration(self, query: str, done: tuple[str, ...]) -> None:
        deadline = time.monotonic() + 600
        while True:
            answer = await self._qmp.execute(query)
            status = answer.get("status")
            if status in done:
                return
            if status == "failed" or answer.get("status") == "internal-error":
                raise _api_error("The VM could not be snapshotted", f"QEMU migration failed: {answer}")
            if time.monotonic() > deadline:
                raise _api_error("The VM could not be snapshotted", f"QEMU migration stuck: {answer}")
            await asyncio.sleep(0.02)

    def _argv(self, incoming: bool) -> list[str]:
        from hosts.runtime.kvm import probe_kvm
        from hosts.vm.tsc import host_tsc_khz

        config = self.config
        payload = config["payload"]
        memory_mb = max(1, self.shape["memory"] // _MIB)
        kvm = probe_kvm().usable
        cmdline = payload.get("cmdline", "")
        if _CHANNEL.search(cmdline):
            log.info("stand-in: guest told dnah.channel=serial instead of vsock (no virtio-vsock here)")
            cmdline = _CHANNEL.sub("dnah.channel=serial", cmdline)
        if not kvm:  # what TCG needs and the QEMU backend gives its guests (hosts/vm/tsc.py)
            cmdline += " tsc=reliable"
            if (khz := host_tsc_khz()) is not None:
                cmdline += f" tsc_early_khz={khz}"
        argv = [
            shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
            "-M", "microvm",
            "-accel", "kvm" if kvm else "tcg,tb-size=64",
            "-smp", str(self.shape["vcpus"]),
            "-m", f"{memory_mb}M",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", payload["kernel"],
            "-append", cmdline,
            "-qmp", f"unix:{self._qmp_path},server=on,wait=off",
        ]  # fmt: skip
        if kvm:
            argv += ["-cpu", "host"]
        if "initramfs" in payload:
            argv += ["-initrd", payload["initramfs"]]
        serial = config.get("serial", {"mode": "Null"})
        argv += ["-serial", f"file:{serial['file']}" if serial["mode"] == "File" else "null"]
        # The port first: with it after blk, net and rng, the guest here never saw it (no
        # /dev/vport0p1; found by the first stand-in boot); the QEMU backend orders it first too.
        if config.get("vsock") is not None:
            argv += [
                "-device", "virtio-serial-device",
                "-chardev", f"socket,id=agent,path={self._serial_path},server=on,wait=off",
                "-device", "virtserialport,chardev=agent,name=agent",
            ]  # fmt: skip
        for n, disk in enumerate(config.get("disks", [])):
            kind = "qcow2" if disk.get("image_type") == "Qcow2" else "raw"
            readonly = "on" if disk.get("readonly") else "off"
            argv += ["-drive", f"file={disk['path']},format={kind},if=none,id=disk{n},readonly={readonly}"]
            argv += ["-device", f"virtio-blk-device,drive=disk{n}"]
        for n, net in enumerate(config.get("net", [])):
            argv += ["-netdev", f"tap,id=net{n},ifname={net['tap']},script=no,downscript=no"]
            mac = f",mac={net['mac']}" if "mac" in net else ""
            argv += ["-device", f"virtio-net-device,netdev=net{n}{mac}"]
        if (rng := config.get("rng")) is not None:
            argv += [
                "-object",
                f"rng-random,id=rng0,filename={rng['src']}",
                "-device",
                "virtio-rng-device,rng=rng0",
            ]
        if incoming:
            argv += ["-incoming", "defer"]
        return argv


class StandIn:
    """The VMM's state and its answers to each endpoint. Requests are handled one at a time,
    as the VMM's single API thread does."""

    def __init__(self, api_socket: Path, version: str, recorder: Recorder) -> None:
        self.version = version
        self.recorder = recorder
        self.config: dict[str, Any] | None = None
        self.guest: Guest | None = None
        self.finished = asyncio.Event()
        """Set when the process should end (``vmm.shutdown``, the guest powered off)."""
        self._workdir = api_socket.with_name(api_socket.name + ".d")
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._lock:
            problems = ch_schema.check_request(method, path, body)
            endpoint = ch_schema.endpoint_of(path)
            try:
                if endpoint not in ch_schema.endpoints():
                    raise VmmRefusal(404, "Not Found")
                if problems:
                    log.warning("stand-in: request refused by the schema: %s", problems)
                    raise VmmRefusal(400, "Failed to deserialize JSON", *problems)
                value = json.loads(body) if body.strip() else None
                answer = await getattr(self, "_" + endpoint.replace(".", "_"))(value)
                status, content = (204, b"") if answer is None else (200, json.dumps(answer).encode())
            except VmmRefusal as refusal:
                status, content = refusal.status, json.dumps(refusal.chain).encode()
            self.recorder.record(method, path, body, problems, status)
            return status, content

    async def close(self) -> None:
        if self.guest is not None:
            await self.guest.stop()
            self.guest = None

    # endpoints -------------------------------------------------------------------------------

    async def _vmm_ping(self, _body: None) -> dict[str, Any]:
        return {
            "build_version": self.version,
            "version": self.version.removeprefix("v"),
            "pid": os.getpid(),
            "features": ["dnah-stand-in"],
        }

    async def _vmm_shutdown(self, _body: None) -> None:
        await self._vm_delete(None)
        self.finished.set()

    async def _vm_create(self, config: dict[str, Any]) -> None:
        if self.config is not None:
            raise _api_error("The VM could not be created", "VM is already created")
        console = config.get("console", {"mode": "Off"})
        if console["mode"] != "Off":
            raise _api_error("The VM could not be created", f"stand-in limit: console mode {console['mode']}")
        self.config = config

    async def _vm_boot(self, _body: None) -> None:
        if self.guest is not None:
            raise _api_error("The VM could not boot", "VM is already created")
        if self.config is None:
            raise _api_error("The VM could not boot", "VM config is missing")
        await self._launch(self.config, None)

    async def _vm_pause(self, _body: None) -> None:
        guest = self._running("The VM could not be paused")
        if guest.state != "Running":
            raise _api_error(
                "The VM could not be paused", "Error pausing VM", _transition(guest.state, "Paused")
            )
        await guest.pause()

    async def _vm_resume(self, _body: None) -> None:
        guest = self._running("The VM could not resume")
        if guest.state != "Paused":
            raise _api_error(
                "The VM could not resume", "Error resuming VM", _transition(guest.state, "Running")
            )
        await guest.resume()

    async def _vm_snapshot(self, body: dict[str, Any]) -> None:
        action = "The VM could not be snapshotted"
        guest = self._running(action)
        if guest.state != "Paused":
            raise _api_error(action, "Error snapshotting VM", "Trying to snapshot while VM is running")
        directory = Path(body["destination_url"].removeprefix("file://"))
        if not directory.is_dir():
            raise _api_error(action, "Error sending snapshot", f"{directory} is not a directory")
        await guest.snapshot(directory)
        _write_json(directory / CONFIG_FILE, guest.config)
        _write_json(
            directory / STATE_FILE,
            {"vmm": NAME, "version": self.version, "memory": "QEMU migration", "shape": guest.shape},
        )
        log.info(
            "stand-in: snapshot in %s holds a QEMU migration stream, not Cloud Hypervisor state", directory
        )

    async def _vm_restore(self, body: dict[str, Any]) -> None:
        action = "The VM could not be restored"
        if self.guest is not None or self.config is not None:
            raise _api_error(action, "VM is already created")
        source = Path(body["source_url"].removeprefix("file://"))
        try:
            config = json.loads((source / CONFIG_FILE).read_text())
            state = json.loads((source / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise _api_error(
                action, "Error restoring VM", f"cannot read the snapshot in {source}: {exc}"
            ) from None
        if state.get("vmm") != NAME:
            raise _api_error(action, "Error restoring VM", f"{source} was not written by the stand-in")
        problems = ch_schema.check_request(
            "PUT", ch_schema.API_ROOT + "vm.create", json.dumps(config).encode()
        )
        if problems:
            raise VmmRefusal(400, "Error from API", action, "Invalid configuration", *problems)
        await self._launch(config, source, state.get("shape"))

    async def _vm_resize(self, body: dict[str, Any]) -> None:
        action = "The VM could not be resized"
        if self.config is None:
            raise _api_error(action, "VM is not created")
        config = self.guest.config if self.guest is not None else self.config
        cpus = config.setdefault("cpus", {"boot_vcpus": 1, "max_vcpus": 1})
        memory = config.setdefault("memory", {"size": 512 * _MIB})
        if "desired_vcpus" in body and body["desired_vcpus"] > cpus["max_vcpus"]:
            raise _api_error(action, "Error resizing VM", "desired vCPU count exceeds max_vcpus")
        ram = body.get("desired_ram")
        if ram is not None and ram > memory["size"] + memory.get("hotplug_size", 0):
            raise _api_error(action, "Error resizing VM", "desired memory exceeds the hotplug size")
        if "desired_vcpus" in body:
            cpus["boot_vcpus"] = body["desired_vcpus"]
        if ram is not None:
            memory["hotplugged_size"] = max(0, ram - memory["size"])
        if self.guest is not None:
            log.warning(
                "stand-in limit: resize recorded, but microvm cannot hotplug: the guest keeps its size"
            )

    async def _vm_shutdown(self, _body: None) -> None:
        guest = self._running("The VM could not shutdown")
        self.guest = None
        await guest.stop()

    async def _vm_delete(self, _body: None) -> None:
        if self.guest is not None:
            guest, self.guest = self.guest, None
            await guest.stop()
        self.config = None

    async def _vm_info(self, _body: None) -> dict[str, Any]:
        if self.config is None:
            raise _api_error("The VM info is not available", "VM is not created")
        config = self.guest.config if self.guest is not None else self.config
        memory = config.get("memory", {"size": 512 * _MIB})
        return {
            "config": config,
            "state": "Created" if self.guest is None else self.guest.state,
            "memory_actual_size": memory["size"] + memory.get("hotplugged_size", 0),
        }

    # helpers ---------------------------------------------------------------------------------

    def _running(self, action: str) -> Guest:
        if self.guest is None:
            raise _api_error(action, "VM is not running")
        return self.guest

    async def _launch(
        self, config: dict[str, Any], incoming: Path | None, shape: dict[str, int] | None = None
    ) -> None:
        guest = Guest(self._workdir, config, shape)
        try:
            await guest.start(incoming)
        except VmmRefusal:
            raise
        except Exception as exc:
            action = "The VM could not boot" if incoming is None else "The VM could not be restored"
            raise _api_error(action, f"stand-in: QEMU did not start: {exc}") from None
        self.config, self.guest = config, guest
        self._watch = asyncio.ensure_future(self._watch_guest(guest))

    async def _watch_guest(self, guest: Guest) -> None:
        """A guest that powers off (QEMU exits on its own) ends the VMM, as Cloud Hypervisor
        exits when its guest shuts down."""
        code = await guest.wait()
        if self.guest is guest:
            log.info("stand-in: the guest exited (QEMU status %s); the VMM exits too", code)
            await guest.stop()
            self.guest = None
            self.finished.set()


# HTTP over the Unix socket -------------------------------------------------------------------


async def _serve_connection(
    standin: StandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    connection = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body = bytearray()
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                status, content = await standin.handle(
                    request.method.decode(), request.target.decode(), bytes(body)
                )
                headers = [("Server", SERVER_HEADER), ("Content-Length", str(len(content)))]
                if content:
                    headers.append(("Content-Type", "application/json"))
                parts: list[h11.Response | h11.Data | h11.EndOfMessage] = [
                    h11.Response(status_code=status, headers=headers)
                ]
                parts += [h11.Data(data=content)] if content else []
                for part in [*parts, h11.EndOfMessage()]:
                    writer.write(connection.send(part) or b"")
                await writer.drain()
                if connection.our_state is h11.MUST_CLOSE or standin.finished.is_set():
                    break
                connection.start_next_cycle()
            else:  # ConnectionClosed, or PAUSED on a peer that pipelines
                break
    except h11.RemoteProtocolError as exc:
        with contextlib.suppress(Exception):
            writer.write(
                connection.send(h11.Response(status_code=400, headers=[("Content-Length", "0")])) or b""
            )
        log.warning("stand-in: malformed HTTP: %s", exc)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(api_socket: Path, version: str, record: Path | None) -> None:
    standin = StandIn(api_socket, version, Recorder(record))
    api_socket.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda r, w: _serve_connection(standin, r, w), path=str(api_socket)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, standin.finished.set)
    log.info("%s (version %s) serving on %s — this is not Cloud Hypervisor", NAME, version, api_socket)
    try:
        await standin.finished.wait()
    finally:
        server.close()
        await standin.close()
        api_socket.unlink(missing_ok=True)
        log.info("%s exits", NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloud-hypervisor", description=f"{NAME} (for dnah tests)")
    parser.add_argument("--api-socket", help="path=<socket> or <socket>, as the real VMM takes it")
    parser.add_argument("--version", action="store_true")
    parser.add_argument("-v", action="count", default=0, help="accepted and ignored")
    parser.add_argument("--log-file", type=Path, help="where the stand-in logs (default stderr)")
    parser.add_argument(
        "--standin-version", default=os.environ.get("DNAH_CH_STANDIN_VERSION", DEFAULT_VERSION)
    )
    parser.add_argument("--standin-record", type=Path, default=os.environ.get("DNAH_CH_STANDIN_RECORD"))
    args = parser.parse_args(argv)
    if args.version:
        print(f"cloud-hypervisor {args.standin_version}")
        print(f"({NAME}: not Cloud Hypervisor)")
        return 0
    if not args.api_socket:
        parser.error("--api-socket is required (the stand-in has no other interface)")
    socket = Path(args.api_socket.removeprefix("path=").split(",", 1)[0])
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format=f"%(asctime)s {NAME}[%(process)d] %(levelname)s %(message)s",
    )
    asyncio.run(serve(socket, args.standin_version, args.standin_record))
    return 0


def _transition(current: str, wanted: str) -> str:
    return f"invalid VM state transition: {current} to {wanted}"


def _write_json(path: Path, value: object) -> None:
    with open(path, "w") as stream:
        json.dump(value, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _die_with_parent() -> None:
    """In the QEMU child: be killed when the stand-in dies, however it dies (a SIGKILLed VMM
    must not leave its guest running, as a dead Cloud Hypervisor leaves none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
