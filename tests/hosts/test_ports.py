"""hostd's routes into a sandbox's ports (``hosts/ports/``) on the real hostd (granian, the
OCI runtime) and a real sandbox whose servers (``_port_servers.py``) listen on 127.0.0.1
only: HTTP both ways streamed, server-sent events one by one, WebSockets, the raw tunnel,
the errors, and that nothing is published on the host."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from http.client import HTTPConnection, HTTPResponse
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from contracts.host import HostErrorBody
from hosts.config import load_config
from hosts.runtime.factory import make_runtime
from hosts.templates import TemplateStore
from tests.hosts._hostd_fixtures import (
    HostdProcess,
    KernelNames,
    RecordingCore,
    free_port,
    hostd_env,
    wait_for,
)
from tests.support import exclusive_index

SPEC = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
HTTP_PORT, ECHO_PORT = 8765, 8766
WORK = "/tmp/ports"
"""Where the servers and their go-files live inside the sandbox."""
SERVERS = Path(__file__).with_name("_port_servers.py")
BOX = "ports-box"


@pytest.fixture(scope="module")
def core() -> Iterator[RecordingCore]:
    recorder = RecordingCore(free_port(), heartbeat_interval_s=0.5)
    recorder.start()
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
async def hostd(
    core: RecordingCore, template_store: TemplateStore, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostdProcess]:
    with exclusive_index("ports-tests") as n:
        names = KernelNames(bridge=f"dnahpt{n}", subnet=IPv4Network(f"10.226.{n}.0/24"), cgroup=f"dnahpt{n}")
        var_dir = tmp_path_factory.mktemp("hostd-ports")
        port = free_port()
        env = hostd_env(
            core_url=core.url,
            port=port,
            var_dir=var_dir,
            template_cache=template_store.cache_dir,
            names=names,
        )
        process = HostdProcess(env, port, var_dir / "hostd.log")
        process.start()
        yield process
        with client(process, core) as http:
            for info in http.get("/sandboxes").json():
                assert http.delete(f"/sandboxes/{info['id']}").status_code == 204
        assert process.stop() == 0, process.log()
        runtime = make_runtime(load_config(env), template_store)
        await runtime.recover()
        await runtime.remove_host_setup()


def token(core: RecordingCore) -> str:
    return wait_for(lambda: core.registrations, timeout=15, what="a registration")[-1].api_token


def client(process: HostdProcess, core: RecordingCore) -> httpx.Client:
    return httpx.Client(base_url=process.url, headers={"authorization": f"Bearer {token(core)}"}, timeout=30)


@pytest.fixture(scope="module")
def http(hostd: HostdProcess, core: RecordingCore) -> Iterator[httpx.Client]:
    with client(hostd, core) as c:
        yield c


def sh(http: httpx.Client, sandbox_id: str, script: str) -> str:
    response = http.post(
        f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["sh", "-c", script], "timeout_ms": 20_000}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    return str(result["stdout"])


@pytest.fixture(scope="module")
def box(http: httpx.Client) -> str:
    """A sandbox running the test servers on its loopback."""
    response = http.post("/sandboxes", json={"id": BOX, **SPEC})
    assert response.status_code == 200, response.text
    sh(http, BOX, f"mkdir -p {WORK}")
    uploaded = http.put(
        f"/sandboxes/{BOX}/files", params={"path": f"{WORK}/servers.py"}, content=SERVERS.read_bytes()
    )
    assert uploaded.status_code == 200, uploaded.text
    sh(
        http,
        BOX,
        f"cd {WORK} && setsid python3 servers.py {HTTP_PORT} {ECHO_PORT} {WORK} >log 2>&1 </dev/null &",
    )
    wait_for(
        lambda: sh(http, BOX, f"test -e {WORK}/ready && echo yes || true").strip() == "yes",
        timeout=30,
        what="the servers in the sandbox to listen",
    )
    return BOX


def url(port: int | str, rest: str = "", sandbox_id: str = BOX) -> str:
    return f"/sandboxes/{sandbox_id}/ports/{port}/http{rest}"


def error(response: httpx.Response) -> HostErrorBody:
    """hostd's own error answer: a ``HostErrorBody``, marked as hostd's."""
    body = msgspec.json.decode(response.content, type=HostErrorBody)
    assert response.headers["x-dnah-host-error"] == body.code
    return body


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["x-served-by"] == "sandbox"
    assert "x-dnah-host-error" not in response.headers
    answer: dict[str, Any] = response.json()
    return answer


def header(answer: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in answer["headers"] if key == name]


# HTTP -----------------------------------------------------------------------------------------


def test_a_get_reaches_a_server_bound_to_the_sandboxs_loopback(http: httpx.Client, box: str) -> None:
    answer = echoed(http.get(url(HTTP_PORT, "/echo/a?x=1&y=%20z")))
    assert (answer["method"], answer["target"], answer["length"]) == ("GET", "/echo/a?x=1&y=%20z", 0)
    assert header(answer, "host") == [f"127.0.0.1:{HTTP_PORT}"]


def test_a_head_gets_the_headers_only(http: httpx.Client, box: str) -> None:
    response = http.head(url(HTTP_PORT, "/echo"))
    assert response.status_code == 200 and response.headers["x-served-by"] == "sandbox"
    assert int(response.headers["content-length"]) > 0 and response.content == b""


def test_an_answer_broken_off_is_broken_off(http: httpx.Client, box: str) -> None:
    # The server announces 1000 bytes and closes after 9: the client must not get a response
    # that looks complete.
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url(HTTP_PORT, "/broken"))
    assert echoed(http.get(url(HTTP_PORT, "/echo")))["method"] == "GET"  # hostd carries on


def test_a_post_body_arrives_whole(http: httpx.Client, box: str) -> None:
    body = os.urandom(300_000)
    answer = echoed(http.post(url(HTTP_PORT, "/echo"), content=body))
    assert (answer["method"], answer["length"], answer["sha256"]) == (
        "POST",
        len(body),
        hashlib.sha256(body).hexdigest(),
    )
    assert header(answer, "content-length") == [str(len(body))]

    def chunks() -> Iterator[bytes]:
        yield body[:1000]
        yield body[1000:]

    answer = echoed(http.put(url(HTTP_PORT, "/echo"), content=chunks()))
    assert (answer["method"], answer["sha256"]) == ("PUT", hashlib.sha256(body).hexdigest())
    assert header(answer, "transfer-encoding") == ["chunked"] and header(answer, "content-length") == []


def test_an_upload_streams(http: httpx.Client, box: str) -> None:
    # The second part is sent only once the server has read the first: the body cannot be
    # held whole anywhere on the way.
    sh(http, box, f"rm -f {WORK}/received")
    part = os.urandom(1024 * 1024)

    def body() -> Iterator[bytes]:
        yield part
        wait_for(
            lambda: sh(http, box, f"cat {WORK}/received 2>/dev/null || true").strip() == str(len(part)),
            timeout=30,
            what="the server to read the first part",
        )
        yield part

    response = http.post(
        url(HTTP_PORT, "/upload"), content=body(), headers={"content-length": str(2 * len(part))}
    )
    assert (response.status_code, response.text) == (200, str(2 * len(part)))


def test_headers_are_the_servers_business_only(http: httpx.Client, box: str) -> None:
    response = http.get(
        url(HTTP_PORT, "/echo"),
        headers={
            "x-forwarded-host": "3000-box.preview.example:8443",
            "x-forwarded-proto": "https",
            "x-dnah-authorization": "Basic dXNlcjpwdw==",
            "x-dnah-preview-token": "secret",
            "connection": "x-private",
            "x-private": "hop",
            "te": "trailers",
            "cookie": "a=b",
        },
    )
    answer = echoed(response)
    assert header(answer, "host") == ["3000-box.preview.example:8443"]
    assert header(answer, "x-forwarded-proto") == ["https"]
    # hostd's own token never leaves hostd; the client's travels as x-dnah-authorization
    assert header(answer, "authorization") == ["Basic dXNlcjpwdw=="]
    assert header(answer, "cookie") == ["a=b"]
    for dropped in ("x-dnah-preview-token", "x-private", "te", "x-request-id", "x-dnah-authorization"):
        assert header(answer, dropped) == [], dropped
    assert header(answer, "connection") in ([], ["close"], ["keep-alive"])


def test_the_request_line_is_normalised(hostd: HostdProcess, core: RecordingCore, box: str) -> None:
    # http.client sends the path exactly as given (httpx would remove the dot-segments itself).
    connection = HTTPConnection("127.0.0.1", hostd.port, timeout=30)
    cases = {
        "/a/../../../echo/./x%2Fy/..": "/echo/",
        "/%2e%2e/echo%20/b%zz?q=a%20b|c": "/echo%20/b%25zz?q=a%20b%7Cc",
        "": "/",
    }
    try:
        for rest, expected in cases.items():
            connection.request(
                "GET", url(HTTP_PORT, rest), headers={"authorization": f"Bearer {token(core)}"}
            )
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, body
            assert json.loads(body)["target"] == expected, rest
    finally:
        connection.close()


def test_conflicting_framing_never_reaches_the_server(
    hostd: HostdProcess, core: RecordingCore, box: str
) -> None:
    # Content-Length and Transfer-Encoding together: the body the ASGI server parsed is sent
    # with framing hostd built, one header of it, so no second request can hide in it.
    head = (
        f"POST {url(HTTP_PORT, '/echo')} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token(core)}\r\n"
        "content-length: 4\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    body = "5\r\nhello\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", hostd.port), timeout=30) as sock:
        sock.sendall((head + body).encode())
        response = HTTPResponse(sock)
        response.begin()
        raw = response.read()
    if response.status == 400:
        return  # the ASGI server refused it outright: nothing reached the sandbox either
    assert response.status == 200, raw
    answer = json.loads(raw)
    framing = header(answer, "content-length") + header(answer, "transfer-encoding")
    assert len(framing) == 1, answer["headers"]
    assert answer["length"] in (4, 5) and framing[0] in ("chunked", str(answer["length"]))


def test_a_download_streams(http: httpx.Client, box: str) -> None:
    # The server sends its first MiB and waits for a go-file before the rest: the client can
    # only get that MiB if no hop holds the answer back until it is complete.
    size = 20 * 1024 * 1024
    digest = hashlib.sha256()
    received = 0
    with http.stream("GET", url(HTTP_PORT, f"/big?n={size}")) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        chunks = response.iter_raw()
        while received < 1024 * 1024:
            chunk = next(chunks)
            digest.update(chunk)
            received += len(chunk)
        sh(http, box, f"touch {WORK}/big-go")
        for chunk in chunks:
            digest.update(chunk)
            received += len(chunk)
    block = bytes(range(256)) * 4096
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(block * 20).hexdigest()


def test_server_sent_events_arrive_one_by_one(http: httpx.Client, box: str) -> None:
    sh(http, box, f"rm -f {WORK}/go-*")
    with http.stream("GET", url(HTTP_PORT, "/events?n=3")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        for i in range(3):
            # event i exists only once the test allows it: it must arrive before the next one
            sh(http, box, f"touch {WORK}/go-{i}")
            assert next(lines) == f"id: {i}"
            assert next(lines) == f"data: event {i}"
            assert next(lines) == ""
        assert list(lines) == []


# errors -----------------------------------------------------------------------------------------


def _connections_to(http: httpx.Client, sandbox_id: str, port: int) -> int:
    """Established TCP connections to ``port`` inside the sandbox."""
    table = sh(http, sandbox_id, "cat /proc/net/tcp /proc/net/tcp6")
    return sum(
        1
        for line in table.splitlines()[1:]
        if len(fields := line.split()) > 3 and fields[3] == "01" and fields[1].endswith(f":{port:04X}")
    )


def test_a_client_leaving_ends_the_connection_to_the_server(http: httpx.Client, box: str) -> None:
    # The event stream is silent (no go-file): only the client leaving can end hostd's wait.
    sh(http, box, f"rm -f {WORK}/go-*")
    with http.stream("GET", url(HTTP_PORT, "/events?n=1")) as response:
        assert response.status_code == 200
        wait_for(lambda: _connections_to(http, box, HTTP_PORT) == 1, timeout=30, what="hostd's connection")
    wait_for(lambda: _connections_to(http, box, HTTP_PORT) == 0, timeout=30, what="hostd to close it")


def test_nothing_listening_is_502(http: httpx.Client, box: str) -> None:
    response = http.get(url(9, "/"))
    assert response.status_code == 502
    body = error(response)
    assert body.code == "port_closed" and "port 9" in body.message


def test_an_answer_that_is_not_http_is_502(http: httpx.Client, box: str) -> None:
    response = http.get(url(ECHO_PORT, "/"))  # the echo server sends the request back
    assert response.status_code == 502
    body = error(response)
    assert body.code == "port_closed" and f"port {ECHO_PORT}" in body.message


@pytest.mark.parametrize("port", ["0", "65536", "abc", "-1", "80a", "", "123456"])
def test_bad_ports_are_400(http: httpx.Client, box: str, port: str) -> None:
    response = http.get(url(port, "/"))
    assert response.status_code == 400, response.text
    assert error(response).code == "bad_request"


def test_an_unknown_sandbox_is_404(http: httpx.Client, box: str) -> None:
    for sandbox_id in ("no-such-box", "a%2Fb", "x" * 64):
        response = http.get(url(HTTP_PORT, "/", sandbox_id=sandbox_id))
        assert response.status_code == 404, (sandbox_id, response.text)
        assert error(response).code == "sandbox_not_found"


def test_a_stopped_or_paused_sandbox_is_409(http: httpx.Client, box: str) -> None:
    sandbox_id = "ports-stopped"
    assert http.post("/sandboxes", json={"id": sandbox_id, **SPEC}).status_code == 200
    try:
        assert http.post(f"/sandboxes/{sandbox_id}/stop").status_code == 200
        response = http.get(url(HTTP_PORT, "/", sandbox_id=sandbox_id))
        assert response.status_code == 409
        assert error(response).code == "sandbox_conflict"
        assert closed_with(websocket(http, f"/sandboxes/{sandbox_id}/ports/{ECHO_PORT}/tunnel"))[0] == 4409
        assert http.post(f"/sandboxes/{sandbox_id}/start", json={"id": sandbox_id, **SPEC}).status_code == 200
        assert http.post(f"/sandboxes/{sandbox_id}/pause").status_code == 200
        response = http.get(url(HTTP_PORT, "/", sandbox_id=sandbox_id))
        assert response.status_code == 409 and "paused" in error(response).message
    finally:
        http.delete(f"/sandboxes/{sandbox_id}")


def test_the_token_is_required(hostd: HostdProcess, box: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.get(hostd.url + url(HTTP_PORT, "/echo"), headers=headers)
        assert response.status_code == 401


# WebSockets -------------------------------------------------------------------------------------


def websocket(
    http: httpx.Client, path: str, extra: dict[str, str] | None = None, **kwargs: Any
) -> ClientConnection:
    return connect(
        str(http.base_url).rstrip("/").replace("http://", "ws://") + path,
        additional_headers={"authorization": http.headers["authorization"], **(extra or {})},
        proxy=None,
        open_timeout=30,
        **kwargs,
    )


def closed_with(conn: ClientConnection) -> tuple[int | None, str | None]:
    with conn, pytest.raises(ConnectionClosed):
        while True:
            conn.recv(timeout=30)
    return conn.close_code, conn.close_reason


def test_a_websocket_echoes_text_and_binary(http: httpx.Client, box: str) -> None:
    with websocket(http, url(HTTP_PORT, "/ws"), subprotocols=["chat.v2", "chat.v1"]) as conn:
        assert conn.subprotocol == "chat.v2"
        conn.send("hello")
        assert conn.recv(timeout=30) == "hello"
        payload = os.urandom(200_000)
        conn.send(payload)
        assert conn.recv(timeout=30) == payload
        conn.close(4321, "client leaves")
    assert (conn.close_code, conn.close_reason) == (4321, "client leaves")


def test_a_websocket_upgrade_carries_the_clients_headers_only(http: httpx.Client, box: str) -> None:
    headers = {
        "x-forwarded-host": "8765-box.preview.example",
        "x-dnah-authorization": "Bearer the-clients-own",
        "x-dnah-preview-token": "secret",
        "origin": "https://8765-box.preview.example",
        "cookie": "session=1",
    }
    with websocket(http, url(HTTP_PORT, "/ws/a/../b?q=1"), extra=headers) as conn:
        conn.send("headers?")
        seen = json.loads(conn.recv(timeout=30))
    assert seen["target"] == "/ws/b?q=1"
    assert header(seen, "host") == ["8765-box.preview.example"]
    assert header(seen, "authorization") == ["Bearer the-clients-own"]
    assert header(seen, "origin") == ["https://8765-box.preview.example"]
    assert header(seen, "cookie") == ["session=1"]
    assert header(seen, "x-dnah-preview-token") == [] and header(seen, "x-dnah-authorization") == []


def test_the_servers_close_code_comes_through(http: httpx.Client, box: str) -> None:
    with websocket(http, url(HTTP_PORT, "/ws")) as conn:
        conn.send("close 4100")
        assert closed_with(conn) == (4100, "server says bye")


def test_websocket_refusals_are_close_codes(http: httpx.Client, box: str) -> None:
    assert closed_with(websocket(http, url(9, "/ws")))[0] == 4502
    assert closed_with(websocket(http, url(0, "/ws")))[0] == 4400
    assert closed_with(websocket(http, url(HTTP_PORT, "/ws", sandbox_id="no-such-box")))[0] == 4404


def test_the_tunnel_pipes_bytes_both_ways(http: httpx.Client, box: str) -> None:
    with websocket(http, f"/sandboxes/{box}/ports/{ECHO_PORT}/tunnel") as conn:
        payload = os.urandom(500_000)
        conn.send(payload)
        received = b""
        while len(received) < len(payload):
            message = conn.recv(timeout=30)
            assert isinstance(message, bytes)
            received += message
        assert received == payload
        conn.send(b"bye\n")  # the server closes its end: the tunnel closes
        assert closed_with(conn) == (1000, "")
    assert closed_with(websocket(http, f"/sandboxes/{box}/ports/9/tunnel"))[0] == 4502


def test_the_tunnel_refuses_text(http: httpx.Client, box: str) -> None:
    with websocket(http, f"/sandboxes/{box}/ports/{ECHO_PORT}/tunnel") as conn:
        conn.send("text")
        assert closed_with(conn)[0] == 1003


# nothing on the host ------------------------------------------------------------------------------


def _listening_inodes() -> dict[int, int]:
    """Inode → port of every TCP socket listening in this (the host's) netns."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def _socket_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except OSError:
            continue
    return inodes


def _tree(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def test_nothing_is_published_on_the_host(hostd: HostdProcess, http: httpx.Client, box: str) -> None:
    sh(http, box, f"rm -f {WORK}/go-*")
    with http.stream("GET", url(HTTP_PORT, "/events?n=1")) as response, websocket(http, url(HTTP_PORT, "/w")):
        assert response.status_code == 200
        listening = _listening_inodes()
        assert HTTP_PORT not in listening.values() and ECHO_PORT not in listening.values()
        assert hostd._proc is not None
        hostd_listens = {listening[i] for i in _socket_inodes(_tree(hostd._proc.pid)) if i in listening}
        assert hostd_listens == {hostd.port}
        sh(http, box, f"touch {WORK}/go-0")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=5).close()
