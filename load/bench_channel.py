"""What the agent channel costs: pings and a file upload sent straight to the agent's socket
and through ``SerialMuxer`` → serial socket → the guest's ``Demux`` → the agent, no VM.

    .venv/bin/python -m load.bench_channel [--pings 2000] [--upload-mib 32]

It starts a real agent (``python3 -S -m guest.agent``), the guest's demultiplexer in a
``python3 -S`` subprocess on one end of a socket pair, and a byte relay standing in for
QEMU's chardev socket between the muxer and the other end (QEMU adds the same hop). Direct and
channel pings alternate, so drift on the machine touches both alike. It prints P50/P95 of a
ping each way, their difference, and the upload throughput each way. Under a real VM the
virtio-serial port and TCG add their own cost on top; this measures the software of the
channel alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.agent_stream import AgentStream
from hosts.runtime._channel import SerialMuxer

REPO = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(REPO)}
GUEST = (
    "import socket, sys\n"
    "from guest import channel\n"
    "channel.serve_socket(socket.socket(fileno=int(sys.argv[1])),"
    " {52: channel.agent_target(sys.argv[2])})\n"
)


async def relay(guest_end: socket.socket, path: Path) -> tuple[asyncio.Server, asyncio.StreamWriter]:
    """The chardev stand-in: bytes passed on as they come; returns the server and the
    guest's end, whose abort ends the relay."""
    g_reader, g_writer = await asyncio.open_unix_connection(sock=guest_end)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.gather(pump(reader, g_writer), pump(g_reader, writer))

    return await asyncio.start_unix_server(serve, path=str(path)), g_writer


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def upload_rate(socket_path: Path, target: Path, data: bytes) -> float:
    """MiB/s of one upload of ``data``."""
    start = time.perf_counter()
    stream, first = await AgentStream.open(socket_path, guest.FsWrite(id=1, path=str(target)))
    assert isinstance(first, guest.FsReady), first
    await stream.send(data)
    await stream.end()
    done = await stream.read()
    await stream.close()
    assert isinstance(done, guest.FsWritten), done
    return len(data) / (1024 * 1024) / (time.perf_counter() - start)


def main(pings: int, upload_mib: int) -> None:
    """Start the agent and the guest's demultiplexer, measure, stop them."""
    work = Path(tempfile.mkdtemp(prefix="dnah-bench-chan-", dir="/tmp"))
    agent_sock = work / "agent.sock"
    agent = subprocess.Popen(
        [sys.executable, "-S", "-m", "guest.agent", "--uds", str(agent_sock)],
        env=ENV,
        cwd=work,
        stderr=subprocess.DEVNULL,
    )
    host_end, guest_end = socket.socketpair()
    demux = subprocess.Popen(
        [sys.executable, "-S", "-c", GUEST, str(guest_end.fileno()), str(agent_sock)],
        env=ENV,
        pass_fds=(guest_end.fileno(),),
        stderr=subprocess.DEVNULL,
    )
    guest_end.close()
    try:
        asyncio.run(measure(work, host_end, pings, upload_mib))
    finally:
        for process in (demux, agent):
            process.terminate()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


async def measure(work: Path, host_end: socket.socket, pings: int, upload_mib: int) -> None:
    agent_sock, serial_sock, mux_sock = work / "agent.sock", work / "serial.sock", work / "mux.sock"
    server, guest_writer = await relay(host_end, serial_sock)
    muxer = SerialMuxer(serial_sock, mux_sock)
    await muxer.start()
    direct = await wait_ready(agent_sock, timeout=30)
    muxed = await wait_ready(mux_sock, timeout=30)
    try:
        times: dict[str, list[float]] = {"direct": [], "channel": []}
        clients: dict[str, AgentClient] = {"direct": direct, "channel": muxed}
        for i in range(pings + 200):
            order = ("direct", "channel") if i % 2 else ("channel", "direct")
            for name in order:
                start = time.perf_counter()
                await clients[name].ping()
                if i >= 200:  # warm-up
                    times[name].append((time.perf_counter() - start) * 1e6)
        diffs = [c - d for c, d in zip(times["channel"], times["direct"], strict=True)]
        for name, values in times.items():
            print(f"ping {name:8} P50 {pct(values, 0.5):7.0f} µs   P95 {pct(values, 0.95):7.0f} µs")
        print(f"added by the channel: median of pair differences {statistics.median(diffs):.0f} µs")
        data = os.urandom(upload_mib * 1024 * 1024)
        for name, path in (("direct", agent_sock), ("channel", mux_sock)):
            rate = await upload_rate(path, work / f"up-{name}.bin", data)
            print(f"upload {name:8} {upload_mib} MiB: {rate:6.0f} MiB/s")
    finally:
        await direct.close()
        await muxed.close()
        await muxer.close()
        server.close()
        guest_writer.transport.abort()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others, return_exceptions=True)  # the relay's pumps see both ends gone


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--upload-mib", type=int, default=32)
    args = parser.parse_args()
    main(args.pings, args.upload_mib)
