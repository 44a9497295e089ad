"""How long the core waits for hostd: a VM host gets ``vm_host_timeout_s`` for the calls that
boot, shut down or reshape a sandbox (seconds to tens of seconds under TCG), a container host
the plain ``host_timeout_s`` (docs/runtimes.md, "Timeouts on VM hosts").

The hostd here is a real HTTP server on loopback that answers every call ``HOLD_S`` late:
longer than the short timeout, far shorter than the VM one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from contracts.host import SandboxInfo, SandboxSpec
from core.config import load_config
from core.db.hosts import HostRecord
from core.errors import HostUnavailable
from core.hostclient import HostClient
from core.services.hosts import STALE_CREATING_S
from hosts.config import DEFAULT_VM_BOOT_TIMEOUT_S

HOLD_S = 1.0
SHORT_S = 0.2
SPEC = SandboxSpec(id="sb-1", template="dnah-base", cpu=1, ram_mb=512, disk_gb=3)

Call = Callable[[HostClient, HostRecord], Awaitable[SandboxInfo]]
CALLS: dict[str, Call] = {
    "create": lambda c, h: c.create(h, SPEC),
    "start": lambda c, h: c.start(h, SPEC),
    "stop": lambda c, h: c.stop(h, SPEC.id),
    "pause": lambda c, h: c.pause(h, SPEC.id),
    "resume": lambda c, h: c.resume(h, SPEC.id),
    "resize": lambda c, h: c.resize(h, SPEC.id, cpu=2, ram_mb=1024, disk_gb=3),
}


class _SlowHostd(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(HOLD_S)
        body = msgspec.json.encode(SandboxInfo(id=SPEC.id, state="running", ip="10.0.0.2"))
        with contextlib.suppress(OSError):  # the client may have given up
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def hostd_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHostd)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _host(url: str, runtime: str) -> HostRecord:
    return HostRecord(
        id="h-1",
        name="h",
        api_url=url,
        api_token="t",
        runtime=runtime,
        cpu=4,
        ram_mb=8192,
        disk_gb=100,
        templates=["dnah-base"],
        state="ready",
        memory_snapshot=runtime != "oci",
        live_resize=runtime == "oci",
        fork=runtime != "oci",
    )


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("runtime", ["qemu", "cloud-hypervisor"])
async def test_a_vm_host_gets_the_vm_timeout(hostd_url: str, runtime: str, call: str) -> None:
    client = HostClient(timeout_s=SHORT_S, vm_timeout_s=60.0)
    try:
        info = await CALLS[call](client, _host(hostd_url, runtime))
    finally:
        await client.close()
    assert info.state == "running"


@pytest.mark.parametrize("call", list(CALLS))
async def test_a_container_host_keeps_the_plain_timeout(hostd_url: str, call: str) -> None:
    client = HostClient(timeout_s=SHORT_S, vm_timeout_s=60.0)
    try:
        with pytest.raises(HostUnavailable, match="did not answer: ReadTimeout"):
            await CALLS[call](client, _host(hostd_url, "oci"))
    finally:
        await client.close()


def test_the_setting_and_where_its_default_sits() -> None:
    env = {"DNAH_DATABASE_URL": "postgresql://x", "DNAH_REDIS_URL": "redis://x", "DNAH_BOOTSTRAP_TOKEN": "t"}
    defaults = load_config(env)
    assert load_config({**env, "DNAH_VM_HOST_TIMEOUT_S": "75"}).vm_host_timeout_s == 75.0
    # hostd gives up on a boot first (and says why); no sweeper settles a call still in flight
    assert (
        DEFAULT_VM_BOOT_TIMEOUT_S
        < defaults.vm_host_timeout_s
        < min(STALE_CREATING_S, defaults.stale_operation_s)
    )
    assert defaults.host_timeout_s < defaults.vm_host_timeout_s
