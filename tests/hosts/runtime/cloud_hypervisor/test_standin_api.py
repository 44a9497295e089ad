"""Our Cloud Hypervisor client against the API stand-in, without a guest (no QEMU needed).

Every endpoint the client has is called at least once, and every request must conform to
``ch_api.schema.json`` (the stand-in records what it received); the stand-in's refusals of
calls in the wrong state, of a missing VM and of bodies the schema rejects are checked too,
so a stand-in that accepted anything would fail here. Booting a real guest through the
stand-in is the contract suite's part (``test_contract.py``, ``cloud-hypervisor`` param).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hosts.errors import RuntimeFailure
from hosts.runtime.cloud_hypervisor import api
from hosts.runtime.cloud_hypervisor.client import CloudHypervisorClient, CloudHypervisorError, wait_for_api
from tests.hosts.runtime.cloud_hypervisor import ch_schema

STANDIN = Path(__file__).with_name("cloud-hypervisor")


@dataclass
class Vmm:
    socket: Path
    record: Path
    process: asyncio.subprocess.Process
    client: CloudHypervisorClient

    def requests(self) -> list[dict[str, object]]:
        path = self.record / "requests.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def vmm(tmp_path: Path) -> AsyncIterator[Vmm]:
    socket, record = tmp_path / "api.sock", tmp_path / "record"
    record.mkdir()
    process = await asyncio.create_subprocess_exec(
        str(STANDIN),
        "--api-socket",
        f"path={socket}",
        "--standin-record",
        str(record),
        "--standin-version",
        "v9.9",
    )
    client = CloudHypervisorClient(socket, timeout=30)
    try:
        await wait_for_api(socket, timeout=30)
        yield Vmm(socket, record, process, client)
    finally:
        await client.close()
        if process.returncode is None:
            process.kill()
        await process.wait()


def _config(tmp_path: Path) -> api.VmConfig:
    return api.VmConfig(
        payload=api.PayloadConfig(
            kernel=str(tmp_path / "no-vmlinux"), cmdline="console=ttyS0 dnah.channel=vsock"
        ),
        cpus=api.CpusConfig(boot_vcpus=1, max_vcpus=4),
        memory=api.MemoryConfig(size=256 * 2**20, hotplug_size=256 * 2**20, shared=True),
        disks=[api.DiskConfig(path=str(tmp_path / "disk.img"), id="disk0")],
        net=[api.NetConfig(tap="tap0", mac="02:00:00:00:00:01", id="net0")],
        rng=api.RngConfig(src="/dev/urandom"),
        serial=api.ConsoleConfig(mode="File", file=str(tmp_path / "console.log")),
        console=api.ConsoleConfig(mode="Off"),
        vsock=api.VsockConfig(cid=3, socket=str(tmp_path / "vsock.sock")),
    )


async def test_every_endpoint_the_client_calls_conforms_to_the_schema(vmm: Vmm, tmp_path: Path) -> None:
    client = vmm.client
    ping = await client.ping()
    assert (ping.build_version, ping.version, ping.pid) == ("v9.9", "9.9", vmm.process.pid)

    config = _config(tmp_path)
    await client.create(config)
    info = await client.info()
    assert (info.state, info.config) == ("Created", config)
    await client.resize(vcpus=2, ram_bytes=512 * 2**20)  # before boot: recorded in the config
    resized = await client.info()
    assert resized.config.cpus == api.CpusConfig(boot_vcpus=2, max_vcpus=4)
    assert resized.memory_actual_size == 512 * 2**20

    # Calls a VM in state Created refuses, each as the VMM does (its message chain, a 500).
    for call in (client.pause, client.resume, client.shutdown):
        with pytest.raises(CloudHypervisorError) as refused:
            await call()
        assert refused.value.status == 500 and "VM is not running" in refused.value.vmm_message
    with pytest.raises(CloudHypervisorError, match="VM is not running"):
        await client.snapshot(tmp_path)
    with pytest.raises(CloudHypervisorError, match="already created"):
        await client.restore(tmp_path, prefault=False)
    with pytest.raises(CloudHypervisorError, match="already created"):
        await client.create(config)
    with pytest.raises(CloudHypervisorError) as no_kernel:  # QEMU cannot start without one
        await client.boot()
    assert no_kernel.value.status == 500 and "could not boot" in no_kernel.value.vmm_message

    await client.delete()
    with pytest.raises(CloudHypervisorError) as gone:
        await client.info()
    assert gone.value.status == 404
    with pytest.raises(CloudHypervisorError, match="config is missing") as missing:
        await client.boot()
    assert missing.value.status == 404
    with pytest.raises(CloudHypervisorError, match="cannot read the snapshot"):
        await client.restore(tmp_path / "nowhere")
    await client.delete()  # no VM: still fine
    await client.shutdown_vmm()
    assert await vmm.process.wait() == 0

    received = vmm.requests()
    called = {ch_schema.endpoint_of(str(r["path"])) for r in received}
    assert called == set(ch_schema.endpoints()), "an endpoint of the schema was never exercised"
    assert [r for r in received if r["problems"]] == []


async def test_the_standin_refuses_what_the_schema_does_and_records_it(vmm: Vmm) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(vmm.socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost/api/v1") as raw:
        typo = {"payload": {"kernel": "/vmlinux"}, "cpus": {"boot_vcpus": 1, "max_vcpu": 2}}
        answers = [
            await raw.put("/vm.create", json=typo),
            await raw.put("/vm.create", json={**typo, "cpus": {"boot_vcpus": 3, "max_vcpus": 2}}),
            await raw.put("/vm.snapshot", json={"destination_url": "http://example.invalid/snap"}),
            await raw.put("/vm.boot", content=b"{}"),
            await raw.get("/vm.create"),
            await raw.put("/vm.no-such-thing"),
        ]
        assert [a.status_code for a in answers] == [400, 400, 400, 400, 400, 404]
        assert "max_vcpu" in answers[0].text and "boot_vcpus is above max_vcpus" in answers[1].text
    refused = vmm.requests()[1:]  # after the fixture's ping
    assert len(refused) == 6 and all(r["problems"] for r in refused)
    # None of them reached the state machine: a correct create is still the first one.
    await vmm.client.create(api.VmConfig(payload=api.PayloadConfig(kernel="/vmlinux")))
    assert (await vmm.client.info()).state == "Created"


async def test_a_vmm_that_is_not_there_is_a_runtime_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="never answered"):
        await wait_for_api(tmp_path / "none.sock", timeout=0.2)


async def test_answers_match_the_schema(vmm: Vmm) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(vmm.socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost/api/v1") as raw:
        ping = await raw.get("/vmm.ping")
        assert ch_schema.check_answer("vmm.ping", ping.status_code, ping.content) == []
        assert ping.headers["server"].startswith("Cloud Hypervisor API stand-in")
        created = await raw.put("/vm.create", content=b'{"payload": {"kernel": "/vmlinux"}}')
        assert ch_schema.check_answer("vm.create", created.status_code, created.content) == []
        info = await raw.get("/vm.info")
        assert ch_schema.check_answer("vm.info", info.status_code, info.content) == []
