"""Real QEMU microVMs through the whole product (gateway → core → hostd → QEMU → vminit → agent),
driven the way a user drives them: the public API only, checked from inside the guest through
``exec`` and, for what only the host can see (the QEMU process, its netns, cgroup and files),
on the host.

One VM lives through the whole lifecycle — create, exec, 10 MB up and down, a terminal, pause
and resume, a memory snapshot and a restore, a fork, stop and start, destroy — plus the fork's
child: two VMs in all, because each costs seconds of CPU under TCG. The steps run in one test
function, in order, each one's assertions naming it, since every step needs the VM as the
previous one left it.

A process started before the snapshot proves memory was captured: a tiny TCP server holding a
random token that exists only in its memory. After a restore the same process (same pid)
answers the same token, though it had been killed after the snapshot; the fork's child
answers it too, as its own machine (its hostname, boot id and disk of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import wait_for
from tests.vm_stack import TIMEOUT_S, VmStack, qemu_pids, the_vm_is_gone, traces

pytestmark = [pytest.mark.stack, pytest.mark.vm]

MiB = 1024 * 1024
PORT = 7777
SERVER = f"""
import os, secrets, socket
token = secrets.token_hex(16)  # in this process's memory only
server = socket.create_server(("127.0.0.1", {PORT}))
while True:
    conn, _ = server.accept()
    conn.sendall(f"{{token}} {{os.getpid()}}\\n".encode())
    conn.close()
"""
ASK = f"""
import socket
try:
    print(socket.create_connection(("127.0.0.1", {PORT}), timeout=5).recv(100).decode().strip())
except OSError as exc:
    print("down", type(exc).__name__)
"""


def run(c: httpx.Client, sid: str, script: str, *args: str) -> dict:
    """``sh -c script sh args…`` in the sandbox, as its user."""
    cmd = ["sh", "-c", script, "sh", *args]
    resp = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": cmd, "timeout_ms": 60_000})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def sh(c: httpx.Client, sid: str, script: str, *args: str) -> str:
    out = run(c, sid, script, *args)
    assert out["exit_code"] == 0, out
    return str(out["stdout"])


def ask(c: httpx.Client, sid: str) -> str:
    """What the background server in ``sid`` answers: ``<token> <pid>``, or ``down …``."""
    return sh(c, sid, 'python3 -c "$1"', ASK).strip()


def answering(c: httpx.Client, sid: str) -> str | None:
    """The server's answer once it answers, else None (for ``wait_for``)."""
    answer = ask(c, sid)
    return None if answer.startswith("down") else answer


def act(c: httpx.Client, sid: str, verb: str, status: int = 200, **body: object) -> dict:
    resp = c.post(f"/v1/sandboxes/{sid}/{verb}", json=body)
    assert resp.status_code == status, f"{verb}: {resp.status_code} {resp.text}"
    return dict(resp.json())


def state(c: httpx.Client, sid: str) -> str:
    return str(c.get(f"/v1/sandboxes/{sid}").json()["state"])


def boot_id(c: httpx.Client, sid: str) -> str:
    return sh(c, sid, "cat /proc/sys/kernel/random/boot_id").strip()


def terminal(vm: VmStack, sid: str) -> ClientConnection:
    url = vm.stack.config.gateway_url.replace("http://", "ws://") + f"/v1/sandboxes/{sid}/terminal?cols=90"
    return connect(
        url, additional_headers={"authorization": f"Bearer {vm.key}"}, open_timeout=TIMEOUT_S, proxy=None
    )


def read_until(ws: ClientConnection, pattern: bytes) -> tuple[bytes, list[str]]:
    """Terminal output up to ``pattern``, and the text messages seen meanwhile."""
    output, texts = bytearray(), []
    deadline = time.monotonic() + TIMEOUT_S
    while re.search(pattern, output) is None:
        message = ws.recv(timeout=max(1.0, deadline - time.monotonic()))
        if isinstance(message, bytes):
            output += message
        else:
            texts.append(message)
    return bytes(output), texts


def closing_texts(ws: ClientConnection) -> list[str]:
    """The text messages a terminal sends until the server closes it."""
    texts = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            message = ws.recv(timeout=TIMEOUT_S)
            if isinstance(message, str):
                texts.append(message)
    return texts


class Steps:
    """Seconds each step took, printed at the end (``-s``) for docs/runtimes.md; never asserted."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now


def test_a_vm_sandbox_through_its_whole_life(vm_stack: VmStack) -> None:
    vm, steps = vm_stack, Steps()
    with vm.client() as c:
        # create: a VM on the host, a machine of its own inside
        created = c.post("/v1/sandboxes", json={"ram_mb": 512, "env": {"GREETING": "hello"}})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert created.json()["state"] == "started"
        assert len(qemu_pids(sid)) == 1, "one QEMU process runs the sandbox"
        assert all(traces(vm, sid).values()), traces(vm, sid)
        steps.done("create")

        # exec
        assert sh(c, sid, "echo $GREETING $((6*7)); id -un; hostname") == f"hello 42\ndaytona\n{sid}\n"
        failed = run(c, sid, "echo out; echo err >&2; exit 3")
        assert (failed["stdout"], failed["stderr"], failed["exit_code"]) == ("out\n", "err\n", 3)
        assert "vminit" in sh(c, sid, "tr '\\0' ' ' < /proc/1/cmdline"), "PID 1 is the VM's init"
        steps.done("exec")

        # 10 MB up and down through the toolbox file routes, byte for byte
        data = os.urandom(10 * MiB)
        up = c.post(
            f"/toolbox/{sid}/files/upload",
            params={"path": "/home/daytona/blob.bin"},
            files={"file": ("blob.bin", data)},
        )
        assert up.status_code == 200, up.text
        inside = sh(c, sid, "sha256sum /home/daytona/blob.bin").split()[0]
        assert inside == hashlib.sha256(data).hexdigest()
        down = c.get(f"/toolbox/{sid}/files/download", params={"path": "/home/daytona/blob.bin"})
        assert down.status_code == 200, down.text
        assert down.content == data
        steps.done("10 MB up and down")

        # a terminal: an interactive shell on a PTY, over the gateway's WebSocket
        with terminal(vm, sid) as ws:
            ready = json.loads(ws.recv(timeout=TIMEOUT_S))
            assert ready["type"] == "ready", ready
            ws.send(b"echo p''ty-$((40+2)) $(tty)\n")
            read_until(ws, rb"pty-42 /dev/pts/\d+")
            ws.send(b"exit 5\n")
            assert json.loads(closing_texts(ws)[-1]) == {"type": "exit", "exit_code": 5}
            assert ws.close_code == 1000
        steps.done("terminal")

        # a process to carry across the snapshot: it holds a token in memory only
        sh(c, sid, 'setsid python3 -c "$1" > /dev/null 2>&1 < /dev/null &', SERVER)
        answer = str(wait_for(lambda: answering(c, sid), what="the server answering", timeout_s=TIMEOUT_S))
        pid = answer.split()[1]
        first_boot = boot_id(c, sid)
        steps.done("background server")

        # pause and resume: nothing runs meanwhile; the same process answers after
        assert act(c, sid, "pause")["state"] == "paused"
        paused = c.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]})
        assert paused.status_code == 409, paused.text
        assert len(qemu_pids(sid)) == 1, "a paused VM keeps its QEMU process"
        assert act(c, sid, "resume")["state"] == "started"
        assert ask(c, sid) == answer and boot_id(c, sid) == first_boot
        steps.done("pause and resume")

        # memory snapshot, then change everything: kill the process, write a file
        snap = c.post(f"/v1/sandboxes/{sid}/snapshot")
        assert snap.status_code == 201, snap.text
        assert snap.json()["memory"] is True, "a VM snapshot holds memory"
        sh(c, sid, f"kill {pid}; echo after > ~/after.txt")
        wait_for(lambda: ask(c, sid).startswith("down"), what="the server killed", timeout_s=TIMEOUT_S)
        steps.done("snapshot")

        # restore: the killed process is back, mid-run, and the later file is gone
        restored = act(c, sid, "restore", snapshot_id=snap.json()["id"])
        assert restored["state"] == "started"
        assert ask(c, sid) == answer, "the process started before the snapshot answers after the restore"
        assert sh(c, sid, "test -e ~/after.txt && echo kept || echo gone") == "gone\n"
        assert sh(c, sid, "hostname") == f"{sid}\n"
        steps.done("restore")

        # fork: the child runs the parent's process and has its files; writes diverge
        sh(c, sid, "echo shared > ~/shared.txt")
        fork = c.post(f"/v1/sandboxes/{sid}/fork", json={})
        assert fork.status_code == 201, fork.text
        child = fork.json()["id"]
        assert fork.json()["parent_id"] == sid and fork.json()["state"] == "started"
        assert len(qemu_pids(child)) == 1 and qemu_pids(child) != qemu_pids(sid)
        assert ask(c, child) == answer, "the child continues the parent's running process"
        assert ask(c, sid) == answer, "and the parent still runs it"
        assert sh(c, child, "cat ~/shared.txt") == "shared\n"
        assert sh(c, child, "hostname") == f"{child}\n", "the child is a machine of its own"
        assert boot_id(c, child) != boot_id(c, sid)
        sh(c, child, "echo child > ~/child-only.txt")
        sh(c, sid, "echo parent > ~/parent-only.txt")
        assert sh(c, sid, "ls ~/child-only.txt 2>/dev/null || echo none") == "none\n"
        assert sh(c, child, "ls ~/parent-only.txt 2>/dev/null || echo none") == "none\n"
        sh(c, child, f"kill {pid}")  # the child's copy of the process, not the parent's
        wait_for(lambda: ask(c, child).startswith("down"), what="the child's server killed", timeout_s=60)
        assert ask(c, sid) == answer
        steps.done("fork")

        # destroy the child: its QEMU and everything the host made for it go
        deleted = c.delete(f"/v1/sandboxes/{child}")
        assert deleted.status_code == 200, deleted.text
        assert state(c, child) == "destroyed"
        the_vm_is_gone(vm, child)
        assert ask(c, sid) == answer, "the parent lives on"
        steps.done("destroy the child")

        # stop and start: the disk is kept, the processes are not
        assert act(c, sid, "stop")["state"] == "stopped"
        assert qemu_pids(sid) == [], "a stopped VM has no QEMU process"
        assert act(c, sid, "start")["state"] == "started"
        assert sh(c, sid, "cat ~/parent-only.txt ~/shared.txt") == "parent\nshared\n"
        assert sha_of(c, sid) == hashlib.sha256(data).hexdigest()
        assert ask(c, sid).startswith("down"), "a fresh boot runs none of the old processes"
        assert boot_id(c, sid) != first_boot
        steps.done("stop and start")

        # destroy
        deleted = c.delete(f"/v1/sandboxes/{sid}")
        assert deleted.status_code == 200, deleted.text
        assert state(c, sid) == "destroyed"
        the_vm_is_gone(vm, sid)
        steps.done("destroy")
    print(f"\nVM lifecycle, seconds per step: {steps.seconds}")


def sha_of(c: httpx.Client, sid: str) -> str:
    return sh(c, sid, "sha256sum /home/daytona/blob.bin").split()[0]
