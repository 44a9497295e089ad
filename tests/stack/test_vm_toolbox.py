"""The whole toolbox in one QEMU microVM, through the gateway: everything the agent does besides
exec — run-code, sessions, file operations and byte streams, git, metrics, terminals — over
the VM's single virtio-serial port, where hostd's ``SerialMuxer`` and the guest's channel
multiplex every agent connection (one per file stream or terminal, plus the request one).

The container suites (``tests/core/test_toolbox.py``, ``test_sessions.py``, ``test_files.py``,
``test_transfers.py``, ``test_git.py``, ``test_terminals.py``) prove the behaviour in detail;
this module proves the same routes work when the sandbox is a VM (on virtio-serial here,
where no ``/dev/vhost-vsock`` exists: the fixture checks QEMU's command line), and checks what
differs there: metrics must be the VM's own (its RAM, vCPUs and disk, not the host's), and several
streams must share the one port — a 10 MiB download while a terminal sits idle and another
floods output nobody reads, with execs and run-code going on meanwhile.

One VM serves every test here (a module fixture): under TCG a boot costs seconds of a CPU.
The tests touch disjoint paths, so their order does not matter. Git's remotes live inside
the sandbox (``file://``), as in ``tests/core/test_git.py``: the sandbox reaches no other
address.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.core.test_git import ORIGIN, SEED
from tests.stack.test_vm_sandboxes import closing_texts, read_until, run, sh
from tests.support import wait_for
from tests.vm_stack import TIMEOUT_S, VmStack, qemu_pids, the_vm_is_gone

pytestmark = [pytest.mark.stack, pytest.mark.vm]

MiB = 1024 * 1024
RAM_MB = 512
DISK_GB = 3


@dataclass(frozen=True)
class Box:
    """The module's VM sandbox and a gateway client for it."""

    vm: VmStack
    c: httpx.Client
    sid: str

    def ok(self, resp: httpx.Response, status: int = 200) -> Any:
        assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
        return resp.json() if resp.content else None

    def sh(self, script: str, *args: str) -> str:
        return sh(self.c, self.sid, script, *args)

    def ws(self, path: str, **kwargs: Any) -> ClientConnection:
        url = self.vm.stack.config.gateway_url.replace("http://", "ws://") + path
        return connect(
            url,
            additional_headers={"authorization": f"Bearer {self.vm.key}"},
            open_timeout=TIMEOUT_S,
            proxy=None,
            **kwargs,
        )


@pytest.fixture(scope="module")
def box(vm_stack: VmStack) -> Iterator[Box]:
    with vm_stack.client() as c:
        created = c.post("/v1/sandboxes", json={"cpu": 1, "ram_mb": RAM_MB, "disk_gb": DISK_GB})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        pids = qemu_pids(sid)
        assert len(pids) == 1, "the sandbox is a QEMU microVM"
        if not Path("/dev/vhost-vsock").exists():  # else DNAH_QEMU_CHANNEL=auto may pick vsock
            argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
            assert b"virtserialport,chardev=agent,name=agent" in argv, "the agent is on virtio-serial"
        try:
            yield Box(vm_stack, c, sid)
        finally:
            deleted = c.delete(f"/v1/sandboxes/{sid}")
            assert deleted.status_code == 200, deleted.text
            the_vm_is_gone(vm_stack, sid)


def run_code(box: Box, **body: object) -> dict:
    return dict(box.ok(box.c.post(f"/v1/sandboxes/{box.sid}/run-code", json=body)))


def test_run_code(box: Box) -> None:
    cases = {
        "python": "import sys; print(6 * 7); print('oops', file=sys.stderr); sys.exit(3)",
        "bash": "echo $((6 * 7)); echo oops >&2; exit 3",
        "javascript": "console.log(6 * 7); console.error('oops'); process.exit(3)",
    }
    for lang, code in cases.items():
        out = run_code(box, code=code, lang=lang)
        assert (out["stdout"], out["stderr"], out["exit_code"], out["timed_out"]) == (
            "42\n",
            "oops\n",
            3,
            False,
        ), lang

    failed = run_code(box, code="def f():\n    return 1 / 0\n\nf()\n", lang="python")
    assert failed["exit_code"] == 1 and failed["stdout"] == "", failed
    assert failed["stderr"].startswith("Traceback (most recent call last):\n"), failed
    assert "line 2, in f\n" in failed["stderr"]
    assert failed["stderr"].endswith("ZeroDivisionError: division by zero\n"), failed

    # over Linux's 128 KiB per-argument limit: the agent runs it from a file instead
    numbers = list(range(30_000))
    long = "data = [\n" + "".join(f"    {n},\n" for n in numbers) + "]\nprint(len(data), sum(data))\n"
    assert len(long.encode()) > 128 * 1024
    out = run_code(box, code=long, lang="python")
    assert (out["stdout"], out["stderr"], out["exit_code"]) == (f"{len(numbers)} {sum(numbers)}\n", "", 0)

    daytona = box.ok(
        box.c.post(f"/toolbox/{box.sid}/process/code-run", json={"code": "print('dt')", "language": "python"})
    )
    assert (daytona["exitCode"], daytona["result"]) == (0, "dt\n")


def test_sessions_keep_state_and_log_async_commands(box: Box) -> None:
    base = f"/v1/sandboxes/{box.sid}/sessions"
    session = box.ok(box.c.post(base, json={"cwd": "/tmp"}), 201)
    sess = f"{base}/{session['id']}"
    first = box.ok(box.c.post(f"{sess}/exec", json={"cmd": "cd /usr && export GREETING=hi"}))
    assert (first["exit_code"], first["cwd"]) == (0, "/usr")
    out = box.ok(box.c.post(f"{sess}/exec", json={"cmd": "echo $GREETING; pwd; echo oops >&2; false"}))
    assert (out["stdout"], out["stderr"], out["exit_code"], out["cwd"]) == ("hi\n/usr\n", "oops\n", 1, "/usr")
    assert box.c.delete(sess).status_code == 204

    # Daytona's shape: an async command whose logs are read while it runs and after
    dt = f"/toolbox/{box.sid}/process/session"
    box.ok(box.c.post(dt, json={"sessionId": "vm"}), 201)
    box.ok(box.c.post(f"{dt}/vm/exec", json={"command": "cd /tmp && export WHO=vm"}))
    gate = "/tmp/session-gate"
    command = (
        f"echo started $WHO $PWD; while [ ! -e {gate} ]; do sleep 0.1; done;"
        " echo finished; echo e >&2; (exit 4)"
    )
    started = box.ok(box.c.post(f"{dt}/vm/exec", json={"command": command, "runAsync": True}), 202)
    cmd = f"{dt}/vm/command/{started['cmdId']}"

    def logs() -> dict:
        return dict(box.ok(box.c.get(f"{cmd}/logs")))

    wait_for(lambda: logs()["stdout"] == "started vm /tmp\n" or None, what="the first line", timeout_s=60)
    assert "exitCode" not in box.ok(box.c.get(cmd)), "still running: waiting for the gate"
    box.sh(f"touch {gate}")

    def finished() -> dict | None:
        got = dict(box.ok(box.c.get(cmd)))
        return got if "exitCode" in got else None

    done = wait_for(finished, what="the async command finished", timeout_s=60)
    assert done is not None and done["exitCode"] == 4
    assert logs() == {
        "output": "started vm /tmp\nfinished\ne\n",
        "stdout": "started vm /tmp\nfinished\n",
        "stderr": "e\n",
    }
    assert box.c.delete(f"{dt}/vm").status_code == 204


def test_file_operations(box: Box) -> None:
    base = f"/v1/sandboxes/{box.sid}/files"
    box.sh(
        "set -e; mkdir -p ~/fs/proj/pkg; cd ~/fs; printf 'import os\\nTODO: one\\n' > proj/a.py;"
        " printf 'x = 1\\n# TODO: two\\n' > proj/pkg/b.py; printf hello > notes.txt; chmod 640 notes.txt"
    )
    home = box.sh("echo $HOME").strip()
    root = f"{home}/fs"

    listed = box.ok(box.c.get(f"{base}/list", params={"path": "fs"}))
    notes = {e["name"]: e for e in listed["items"]}["notes.txt"]
    assert (notes["path"], notes["size"], notes["permissions"], notes["owner"]) == (
        f"{root}/notes.txt",
        5,
        "0640",
        "daytona",
    )
    info = box.ok(box.c.get(f"{base}/stat", params={"path": "fs/proj"}))
    assert info["is_dir"] and info["mode"].startswith("drwx")

    assert box.ok(box.c.post(f"{base}/mkdir", params={"path": "fs/made/deep", "mode": "700"})) == {"ok": True}
    assert box.sh("stat -c %a ~/fs/made/deep") == "700\n"
    moved = box.c.post(f"{base}/move", json={"source": "fs/notes.txt", "destination": "fs/made/n.txt"})
    assert box.ok(moved) == {"ok": True}
    assert box.ok(box.c.post(f"{base}/chmod", json={"path": "fs/made/n.txt", "mode": "604"})) == {"ok": True}
    assert box.sh("cat ~/fs/made/n.txt; stat -c ' %a' ~/fs/made/n.txt") == "hello 604\n"

    found = box.ok(box.c.get(f"{base}/find", params={"path": "fs/proj", "pattern": "*.py"}))
    assert found == {"paths": [f"{root}/proj/a.py", f"{root}/proj/pkg/b.py"], "truncated": False}
    grep = box.ok(box.c.get(f"{base}/grep", params={"path": "fs/proj", "pattern": "TODO"}))
    assert [(m["file"], m["line"]) for m in grep["matches"]] == [
        (f"{root}/proj/a.py", 2),
        (f"{root}/proj/pkg/b.py", 2),
    ]
    replaced = box.ok(
        box.c.post(
            f"{base}/replace", json={"path": "fs/proj", "glob": "*.py", "find": "TODO", "replace": "DONE"}
        )
    )
    assert [r["replacements"] for r in replaced["results"]] == [1, 1]
    assert box.sh("cat ~/fs/proj/pkg/b.py") == "x = 1\n# DONE: two\n"

    assert box.c.delete(base, params={"path": "fs/made"}).status_code == 400  # a directory needs recurse
    assert box.ok(box.c.delete(base, params={"path": "fs", "recurse": "true"})) == {"ok": True}
    assert box.sh("test -e ~/fs || echo gone") == "gone\n"


def blob(size: int) -> Iterator[bytes]:
    """``size`` bytes of a fixed pattern in 1 MiB pieces, for a streamed upload."""
    block = hashlib.sha256(b"vm-toolbox").digest() * (MiB // 32)
    for start in range(0, size, MiB):
        yield block[: min(MiB, size - start)]


BLOB_SHA = hashlib.sha256(b"".join(blob(10 * MiB))).hexdigest()


def put_blob(box: Box, path: str) -> str:
    """Upload the 10 MiB blob to ``path`` as a stream; its sha256 as the sandbox reads it."""
    written = box.ok(
        box.c.put(f"/v1/sandboxes/{box.sid}/files", params={"path": path}, content=blob(10 * MiB))
    )
    assert written["size"] == 10 * MiB
    return box.sh(f"sha256sum {path}").split()[0]


def streamed_sha(box: Box, path: str) -> tuple[str, int]:
    """The sha256 and size of a download read as a stream, never held whole."""
    digest, size = hashlib.sha256(), 0
    with box.c.stream("GET", f"/v1/sandboxes/{box.sid}/files", params={"path": path}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-length"] == str(10 * MiB)
        for chunk in resp.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def test_ten_mib_stream_up_and_down(box: Box) -> None:
    assert put_blob(box, "stream.bin") == BLOB_SHA
    assert streamed_sha(box, "stream.bin") == (BLOB_SHA, 10 * MiB)
    box.sh("rm ~/stream.bin")


def test_git_inside_the_vm(box: Box) -> None:
    box.sh(SEED)  # /tmp/origin.git (main: one, two, three; feature) from a repository git init made
    base = f"/v1/sandboxes/{box.sid}/git"
    assert box.ok(box.c.post(f"{base}/clone", json={"url": ORIGIN, "path": "repo"})) == {"ok": True}
    log = box.ok(box.c.get(f"{base}/log", params={"path": "repo"}))["commits"]
    assert [c["message"] for c in log] == ["three", "two", "one"]
    status = box.ok(box.c.get(f"{base}/status", params={"path": "repo"}))
    assert (status["branch"], status["upstream"], status["files"]) == ("main", "origin/main", [])

    box.sh("cd ~/repo && echo new > new.txt")
    status = box.ok(box.c.get(f"{base}/status", params={"path": "repo"}))
    assert [(f["path"], f["worktree"]) for f in status["files"]] == [("new.txt", "untracked")]
    assert box.ok(box.c.post(f"{base}/add", json={"path": "repo", "files": ["new.txt"]})) == {"ok": True}
    author = {"author_name": "Ada", "author_email": "ada@example.com"}
    sha = box.ok(box.c.post(f"{base}/commit", json={"path": "repo", "message": "add new", **author}))["sha"]
    head = box.ok(box.c.get(f"{base}/log", params={"path": "repo", "limit": 1}))["commits"][0]
    assert (head["sha"], head["message"], head["author_name"]) == (sha, "add new", "Ada")
    assert box.ok(box.c.get(f"{base}/status", params={"path": "repo"}))["ahead"] == 1
    assert box.ok(box.c.post(f"{base}/push", json={"path": "repo"})) == {"ok": True}
    assert box.sh("git --git-dir=/tmp/origin.git rev-parse main").strip() == sha

    assert box.ok(box.c.post(f"{base}/branches", json={"path": "repo", "name": "topic"}), 201) == {"ok": True}
    box.ok(box.c.post(f"{base}/checkout", json={"path": "repo", "ref": "feature"}))  # only origin has it
    assert box.ok(box.c.get(f"{base}/branches", params={"path": "repo"})) == {
        "branches": ["feature", "main", "topic"],
        "current": "feature",
    }
    assert box.sh("cat ~/repo/FEATURE") == "feature\n"
    box.sh("rm -rf ~/repo /tmp/origin.git /tmp/seed")


def metrics(box: Box) -> dict:
    return dict(box.ok(box.c.get(f"/v1/sandboxes/{box.sid}/metrics")))


def test_metrics_are_the_vm_s_own(box: Box) -> None:
    first = metrics(box)
    mem_total_kib = int(box.sh("sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo"))
    assert first["cpu_count"] == 1 and first["state"] == "started", first
    # the guest kernel's MemTotal: its RAM less what the kernel keeps (not the host's GiBs)
    assert first["mem_total_mb"] == mem_total_kib // 1024, first
    assert RAM_MB * 0.75 < first["mem_total_mb"] <= RAM_MB, first
    assert 0 < first["mem_used_mb"] < first["mem_total_mb"], first
    assert first["load_1m"] >= 0

    hold = "import time; b = b'x' * (100 << 20); print(len(b), flush=True); time.sleep(600)"
    pid = box.sh('python3 -c "$1" > /dev/null 2>&1 & echo $!', hold).strip()
    try:

        def grown() -> dict | None:
            m = metrics(box)
            return m if m["mem_used_mb"] >= first["mem_used_mb"] + 95 else None

        now = wait_for(grown, what="100 MiB more in use", timeout_s=TIMEOUT_S)
        assert now is not None and now["mem_used_mb"] <= now["mem_total_mb"]
    finally:
        box.sh(f"kill {pid}")

    # the disk: the guest's only disk is the sandbox's own, of disk_gb; writing grows its use
    assert int(box.sh("cat /sys/block/vda/size")) * 512 == DISK_GB * 2**30
    size, used = (int(n) for n in box.sh("df -B1 --output=size,used / | tail -1").split())
    assert 0.9 * DISK_GB * 2**30 < size <= DISK_GB * 2**30, size
    assert used < size
    box.sh("dd if=/dev/urandom of=$HOME/disk.bin bs=1M count=20 status=none")
    written = metrics(box)["disk_used_mb"]
    assert written >= first["disk_used_mb"] + 20
    # freeing it gives the space back to the host's pool: the guest mounts its disk with
    # ``discard`` and QEMU punches the freed blocks out of the image (``discard=unmap``)
    box.sh("rm ~/disk.bin")

    def given_back() -> bool:
        return bool(metrics(box)["disk_used_mb"] <= written - 15)

    assert wait_for(given_back, what="the freed 20 MB given back to the pool", timeout_s=TIMEOUT_S)


def test_terminal_resize_input_output(box: Box) -> None:
    with box.ws(f"/v1/sandboxes/{box.sid}/terminal?cols=100&rows=30&cwd=/tmp") as ws:
        ready = json.loads(ws.recv(timeout=TIMEOUT_S))
        assert ready["type"] == "ready" and (ready["cols"], ready["rows"]) == (100, 30), ready
        ws.send(b"echo h''i-$(id -un); pwd; stty size\n")
        read_until(ws, rb"hi-daytona\r?\n/tmp\r?\n30 100")
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(b"stty size\n")
        read_until(ws, rb"40 120")
        ws.send(b"exit 3\n")
        assert json.loads(closing_texts(ws)[-1]) == {"type": "exit", "exit_code": 3}

    # Daytona's PTY: made over REST, resized, then attached
    base = f"/toolbox/{box.sid}/process/pty"
    assert box.ok(box.c.post(base, json={"id": "vm", "cols": 90, "rows": 20}), 201) == {"sessionId": "vm"}
    resized = box.ok(box.c.post(f"{base}/vm/resize", json={"cols": 70, "rows": 15}))
    assert (resized["cols"], resized["rows"]) == (70, 15)
    with box.ws(f"{base}/vm/connect") as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT_S)) == {"type": "control", "status": "connected"}
        ws.send(b"echo p''ty-$((6*7)); stty size\n")
        read_until(ws, rb"pty-42\r?\n15 70")
    assert box.c.delete(f"{base}/vm").status_code == 200


def test_streams_share_the_port(box: Box) -> None:
    """A 10 MiB download, a 10 MiB upload, execs and run-code at once, while one terminal
    sits idle and another floods output its client does not read: each is a stream of its
    own on the one serial port, and none waits for another.

    The flood shows interleaving, not back-pressure: the client's socket, the gateway, the
    core and hostd hold about 16 MB of a terminal's unread output before the writer in the
    guest blocks (measured), too much to push through TCG here for every run. A stalled
    stream beside transfers is proven at the channel itself
    (``tests/hosts/runtime/test_channel.py``). The flood's client sends no keepalive pings:
    their pongs would wait behind the output it does not read, and it would give up."""
    assert put_blob(box, "shared.bin") == BLOB_SHA
    errors: list[BaseException] = []
    results: dict[str, object] = {}

    def worker(name: str, job: Callable[[], object]) -> threading.Thread:
        def body() -> None:
            try:
                results[name] = job()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=body, name=name)
        thread.start()
        return thread

    def execs() -> list[str]:
        return [sh(box.c, box.sid, f"echo exec-{i}") for i in range(5)]

    def code() -> str:
        return str(run_code(box, code="print(sum(range(10**5)))", lang="python")["stdout"])

    with (
        box.ws(f"/v1/sandboxes/{box.sid}/terminal") as idle,
        box.ws(f"/v1/sandboxes/{box.sid}/terminal", max_queue=1, ping_interval=None) as flood,
    ):
        for ws in (idle, flood):
            assert json.loads(ws.recv(timeout=TIMEOUT_S))["type"] == "ready"
        flood.send(b"seq 50000; echo fl''ood-$((1+1))\n")  # 290 KB, over a stream's window, unread
        threads = [
            worker("download", lambda: streamed_sha(box, "shared.bin")),
            worker("upload", lambda: put_blob(box, "uploaded.bin")),
            worker("execs", execs),
            worker("code", code),
        ]
        for thread in threads:
            thread.join(TIMEOUT_S)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        assert results == {
            "download": (BLOB_SHA, 10 * MiB),
            "upload": BLOB_SHA,
            "execs": [f"exec-{i}\n" for i in range(5)],
            "code": f"{sum(range(10**5))}\n",
        }
        idle.send(b"echo id''le-$((2+3))\n")
        read_until(idle, rb"idle-5")
        output, _ = read_until(flood, rb"flood-2")
        assert re.search(rb"\r?\n49999\r?\n50000\r?\n", output), output[-200:]
        # both shells exit; reading to the server's close also drains the flood's queue, whose
        # reader a client-side close would otherwise wait behind (then give up after 10 s)
        for ws, exit_code in ((idle, 4), (flood, 5)):
            ws.send(f"exit {exit_code}\n".encode())
            assert json.loads(closing_texts(ws)[-1]) == {"type": "exit", "exit_code": exit_code}
    box.sh("rm ~/shared.bin ~/uploaded.bin")
    assert run(box.c, box.sid, "true")["exit_code"] == 0
