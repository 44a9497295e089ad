"""Public key lines as the core reads them (``core/services/ssh.py``): the fingerprint is
OpenSSH's own, the comment is dropped, and anything that is not a key of a listed type is
refused; tokens are user-name safe."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from contracts import ssh
from core.errors import BadRequest
from core.services.ssh import new_token, parse_public_key


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_fingerprints_are_openssh_s(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "me@laptop", "-f", str(key)], check=True)
    line = key.with_suffix(".pub").read_text()
    canonical, fingerprint = parse_public_key(line)
    assert canonical == " ".join(line.split()[:2])
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)], capture_output=True, check=True
    )
    assert fingerprint == listed.stdout.split()[1].decode()


def _blob(kind: str) -> str:
    name = kind.encode()
    return base64.b64encode(len(name).to_bytes(4, "big") + name + b"\x00" * 8).decode()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-dss " + _blob("ssh-dss"),
        "ssh-ed25519 not*base64",
        "ssh-ed25519 " + _blob("ssh-rsa"),  # the data is another type's
        "ssh-ed25519-cert-v01@openssh.com " + _blob("ssh-ed25519-cert-v01@openssh.com"),
    ],
)
def test_what_is_not_a_key_is_refused(line: str) -> None:
    with pytest.raises(BadRequest):
        parse_public_key(line)


def test_tokens_are_user_names() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert len(token) == ssh.SSH_TOKEN_LENGTH
        assert set(token) <= set(ssh.SSH_TOKEN_CHARS)
