"""hostd's terminal WebSocket (``hosts/terminal.py``, ``WS /sandboxes/{id}/pty``) on the real
hostd and a real sandbox: the token is required, refusals are close codes, and a terminal
carries input, output and the exit."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from contracts import guest
from tests.hosts._hostd_fixtures import HostdProcess, RecordingCore
from tests.hosts.test_app import core, create, current_token, hostd, http

__all__ = ["core", "hostd", "http"]  # fixtures used by this module

_reply = msgspec.json.Decoder(guest.StreamReply)


def pty_socket(hostd: HostdProcess, sandbox_id: str, token: str | None) -> ClientConnection:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = hostd.url.replace("http://", "ws://") + f"/sandboxes/{sandbox_id}/pty"
    return connect(url, additional_headers=headers, proxy=None, open_timeout=10)


def closed_with(conn: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        while True:
            conn.recv(timeout=10)
    return conn.close_code, conn.close_reason


@pytest.mark.parametrize("token", [None, "wrong"])
def test_the_token_is_required(hostd: HostdProcess, core: RecordingCore, token: str | None) -> None:
    current_token(core)  # hostd is up and registered
    with pytest.raises(InvalidStatus) as refused:
        pty_socket(hostd, "x", token).close()
    assert refused.value.response.status_code == 403


def test_refusals_are_close_codes(hostd: HostdProcess, core: RecordingCore) -> None:
    token = current_token(core)
    with pty_socket(hostd, "no-such-box", token) as conn:
        conn.send(msgspec.json.encode(guest.PtyAttach(id=0, session_id="s", create=True)).decode())
        code, reason = closed_with(conn)
        assert code == 4404 and reason
    with pty_socket(hostd, "no-such-box", token) as conn:
        conn.send('{"t":"fs.read","id":0,"path":"/etc/passwd"}')
        assert closed_with(conn) == (4400, "the first message must be a pty.attach opener")


def test_a_terminal_round_trip(hostd: HostdProcess, core: RecordingCore, http: httpx.Client) -> None:
    token = current_token(core)
    sandbox_id = "pty-box"
    create(http, sandbox_id)
    try:
        with pty_socket(hostd, sandbox_id, token) as conn:
            opener = guest.PtyAttach(id=0, session_id="t", create=True, cols=77, rows=11)
            conn.send(msgspec.json.encode(opener).decode())
            first = _reply.decode(conn.recv(timeout=10))
            assert isinstance(first, guest.PtyAttached) and first.session.ephemeral
            conn.send(json.dumps({"t": "pty.resize", "id": 0, "session_id": "t", "cols": 66, "rows": 12}))
            conn.send(b"stty size; exit 4\n")
            output, texts = bytearray(), []
            with pytest.raises(ConnectionClosed):
                while True:
                    message = conn.recv(timeout=10)
                    if isinstance(message, bytes):
                        output += message
                    else:
                        texts.append(message)
            assert b"12 66" in output
            assert _reply.decode(texts[-1]) == guest.PtyExited(id=0, exit_code=4)
            assert conn.close_code == 1000
    finally:
        http.delete(f"/sandboxes/{sandbox_id}")
