"""The SSH gateway end to end, with OpenSSH's own clients (ssh, scp, sftp) against the real
stack: tokens and keys, commands with separate stdout/stderr and exit codes, stdin, an
interactive terminal with a window change, file copies both ways, SFTP, local port
forwarding, and every way in that must be refused."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import pty
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.support import free_port, wait_for

CLIENT_OPTIONS = [
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
]


@pytest.fixture
def sandbox(org: httpx.Client) -> str:
    response = org.post("/v1/sandboxes", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def token(org: httpx.Client, sandbox: str) -> str:
    response = org.post(f"/v1/sandboxes/{sandbox}/ssh-access", json={"expires_in_minutes": 30})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def ssh(
    stack: Stack, user: str, *args: str, key: Path | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    identity = ["-i", str(key)] if key else ["-o", "IdentityFile=none"]
    argv = ["ssh", "-p", str(stack.ssh_port), *CLIENT_OPTIONS, *identity, f"{user}@127.0.0.1", *args]
    return subprocess.run(argv, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_a_command_keeps_stdout_stderr_and_the_exit_status(stack: Stack, token: str) -> None:
    done = ssh(stack, token, "echo out; echo err >&2; whoami; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\ndaytona\n", b"err\n")


def test_stdin_is_streamed_to_the_command(stack: Stack, token: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    done = ssh(stack, token, "sha256sum", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_an_interactive_terminal_with_a_window_change(stack: Stack, token: str) -> None:
    master, slave = pty.openpty()
    _set_size(slave, rows=30, cols=100)
    argv = ["ssh", "-tt", "-p", str(stack.ssh_port), *CLIENT_OPTIONS, "-o", "IdentityFile=none"]
    proc = subprocess.Popen([*argv, f"{token}@127.0.0.1"], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        screen = bytearray()
        os.write(master, b"stty size; tty; echo $((6*7))x\n")
        _read_until(master, screen, b"42x")
        assert b"30 100" in screen and b"/dev/pts/" in screen
        _set_size(master, rows=40, cols=120)
        proc.send_signal(signal.SIGWINCH)
        wait_for(lambda: _size_seen(master, screen), what="the new window size in the sandbox")
        os.write(master, b"exit 5\n")
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _size_seen(master: int, screen: bytearray) -> bool:
    os.write(master, b"stty size | sed 's/ /x/'\n")
    try:
        _read_until(master, screen, b"40x120", timeout_s=2)
    except TimeoutError:
        return False
    return True


def _set_size(fd: int, *, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, screen: bytearray, marker: bytes, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while marker not in screen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {marker!r} in {bytes(screen[-300:])!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            screen += os.read(fd, 65536)


def test_scp_up_and_down(stack: Stack, token: str, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    port = ["-P", str(stack.ssh_port), *CLIENT_OPTIONS, "-o", "IdentityFile=none"]
    up = subprocess.run(
        ["scp", *port, str(source), f"{token}@127.0.0.1:/tmp/up.bin"], capture_output=True, timeout=60
    )
    assert up.returncode == 0, up.stderr
    owner = ssh(stack, token, "stat -c %U /tmp/up.bin")
    assert owner.stdout == b"daytona\n"  # written by the sandbox user, inside the sandbox
    back = tmp_path / "down.bin"
    down = subprocess.run(
        ["scp", *port, f"{token}@127.0.0.1:/tmp/up.bin", str(back)], capture_output=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == source.read_bytes()


def test_sftp_in_batch_mode(stack: Stack, token: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello over sftp\n")
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir box\ncd box\nput {tmp_path / 'a.txt'}\nls\nget a.txt {tmp_path / 'b.txt'}\n")
    argv = [
        "sftp",
        "-P",
        str(stack.ssh_port),
        *CLIENT_OPTIONS,
        "-o",
        "IdentityFile=none",
        "-b",
        str(batch),
    ]
    done = subprocess.run([*argv, f"{token}@127.0.0.1"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"a.txt" in done.stdout
    assert (tmp_path / "b.txt").read_text() == "hello over sftp\n"
    assert ssh(stack, token, "cat ~/box/a.txt").stdout == b"hello over sftp\n"


def test_local_port_forwarding_to_a_server_in_the_sandbox(stack: Stack, token: str) -> None:
    base = ["ssh", "-p", str(stack.ssh_port), *CLIENT_OPTIONS, "-o", "IdentityFile=none"]
    script = (
        "mkdir -p /tmp/www && echo forwarded > /tmp/www/index.txt && cd /tmp/www"
        " && exec python3 -m http.server 8765 --bind 127.0.0.1"
    )
    server = subprocess.Popen(
        [*base, f"{token}@127.0.0.1", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    local = free_port()
    tunnel = subprocess.Popen(
        [
            *base,
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"{local}:localhost:8765",
            f"{token}@127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def fetched() -> str | None:
            try:
                response = httpx.get(f"http://127.0.0.1:{local}/index.txt", timeout=5)
            except httpx.HTTPError:
                return None
            return response.text if response.status_code == 200 else None

        assert wait_for(fetched, what="the sandbox's server through ssh -L") == "forwarded\n"
        assert fetched() == "forwarded\n"  # a second connection over the same SSH connection
    finally:
        for proc in (tunnel, server):
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["forged", "revoked", "expired"])
def test_tokens_that_must_not_work(
    stack: Stack, org: httpx.Client, sandbox: str, token: str, kind: str
) -> None:
    if kind == "forged":
        token = "A" * 32
    elif kind == "revoked":
        assert org.delete(f"/sandbox/{sandbox}/ssh-access", params={"token": token}).status_code == 200
    else:
        asyncio.run(_expire(stack, sandbox))
    done = ssh(stack, token, "echo in")
    assert done.returncode == 255 and b"in" not in done.stdout
    assert b"Permission denied" in done.stderr


async def _expire(stack: Stack, sandbox: str) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            "UPDATE ssh_access SET expires_at = now() - interval '1 second' WHERE sandbox_id = $1", sandbox
        )
    finally:
        await conn.close()


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    made = []
    for name in ("one", "two"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        made.append(path)
    yield made[0], made[1]


def test_keys_open_their_own_sandbox_only_and_rotation_revokes(
    stack: Stack, org: httpx.Client, sandbox: str, keys: tuple[Path, Path]
) -> None:
    one, two = keys
    other = org.post("/v1/sandboxes", json={}).json()["id"]
    public = one.with_suffix(".pub").read_text()
    set_one = org.post(f"/v1/sandboxes/{sandbox}/ssh-keys", json={"keys": [public]})
    assert set_one.status_code == 200, set_one.text
    assert set_one.json()["ssh_command"].endswith(f"{sandbox}@127.0.0.1")
    assert ssh(stack, sandbox, "hostname", key=one).returncode == 0
    refused = ssh(stack, other, "hostname", key=one)  # the key is the first sandbox's only
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    rotate = org.post(
        f"/v1/sandboxes/{sandbox}/ssh-keys", json={"keys": [two.with_suffix(".pub").read_text()]}
    )
    assert [k["public_key"] for k in rotate.json()["keys"]] == [
        " ".join(two.with_suffix(".pub").read_text().split()[:2])
    ]
    assert ssh(stack, sandbox, "true", key=one).returncode == 255
    assert ssh(stack, sandbox, "true", key=two).returncode == 0
    assert (
        org.post(f"/v1/sandboxes/{sandbox}/ssh-keys", json={"keys": ["ssh-ed25519 bm90IGEga2V5"]}).status_code
        == 400
    )


def test_daytonas_ssh_command_works_as_printed(
    stack: Stack, org: httpx.Client, sandbox: str, tmp_path: Path
) -> None:
    created = org.post(f"/sandbox/{sandbox}/ssh-access", params={"expiresInMinutes": 5})
    assert created.status_code == 200, created.text
    access = created.json()
    assert access["sandboxId"] == sandbox and access["sshCommand"] == (
        f"ssh -p {stack.ssh_port} {access['token']}@127.0.0.1"
    )
    # the host key a client will see is the one the gateway keeps in the var dir
    host_key = (stack.var / "ssh_host_ed25519_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{stack.ssh_port} {host_key[0]} {host_key[1]}\n")
    argv = shlex.split(access["sshCommand"])
    strict = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
    done = subprocess.run(
        [argv[0], *strict, *argv[1:], "echo", "as printed"], capture_output=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, b"as printed\n"), done.stderr
    valid = org.get("/sandbox/ssh-access/validate", params={"token": access["token"]}).json()
    assert valid == {"valid": True, "sandboxId": sandbox}
    assert org.delete(f"/sandbox/{sandbox}/ssh-access").status_code == 200  # all of its tokens
    assert org.get("/sandbox/ssh-access/validate", params={"token": access["token"]}).json()["valid"] is False


def test_a_stopped_sandbox_says_so(stack: Stack, org: httpx.Client, sandbox: str, token: str) -> None:
    assert org.post(f"/v1/sandboxes/{sandbox}/stop").status_code == 200
    done = ssh(stack, token, "true")
    assert done.returncode == 255
    assert b"stopped" in done.stderr


def test_a_client_that_leaves_takes_its_command_along(stack: Stack, token: str) -> None:
    base = ["ssh", "-p", str(stack.ssh_port), *CLIENT_OPTIONS, "-o", "IdentityFile=none"]
    # stdin at its end from the start: the process runs on with its input closed
    client = subprocess.Popen([*base, f"{token}@127.0.0.1", "sleep 4242"], stdin=subprocess.DEVNULL)

    def running() -> bool:
        return ssh(stack, token, "pgrep -f 'sleep 4242'").returncode == 0

    try:
        wait_for(running, what="the command running in the sandbox")
    finally:
        client.kill()
        client.wait(timeout=30)
    wait_for(lambda: not running(), what="the command killed after its client left")
