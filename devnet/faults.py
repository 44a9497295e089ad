"""A faulty JSON-RPC endpoint: a relay in front of a chain node (the devnet) that fails the way
real RPC endpoints fail, so the payment path can be tested against them.

    python -m devnet.faults --upstream http://127.0.0.1:8545 --port 8546 \\
        --rate 0.2 --seed 7 [--methods eth_sendRawTransactionSync,...] [--hold-s 3]

Every JSON-RPC call to one of the plan's ``methods`` gets a fault with probability ``rate``
(drawn from a ``random.Random(seed)``, so a run can be repeated), its kind drawn by weight:

- ``timeout``: the call reaches the node (a transaction is mined), the answer is held for
  ``hold_s`` — past the caller's RPC timeout — and only then sent, if anyone still listens;
- ``http_5xx``: a 500/502/503/504 from "the load balancer", the call relayed or not;
- ``rpc_error``: a JSON-RPC error instead of the answer: ``-32000 internal error`` (relayed or
  not), ``-32005`` rate limited (not relayed), or, for sends, the answers a node gives to a
  transaction it already has — ``already known`` and ``nonce too low`` — relayed first, so
  they are true;
- ``reset``: the TCP connection is reset (RST), the call relayed or not;
- ``lost``: the call reaches the node, then the connection is closed without an answer.

Only faults that a real endpoint can produce are injected: an error that says the node has the
transaction is only given after the transaction really reached it. ``force`` lists kinds to
inject, in order, on the next matching calls before the random draws start (so a short run
can see every kind). Each injected fault is kept (``GET /control/faults``).

Control routes (not JSON-RPC): ``PUT /control/plan`` (a ``FaultPlan`` as JSON),
``GET /control/faults``, ``GET /control/calls`` (calls by method), ``PUT /control/lose/{s}``
(for ``s`` seconds lose every answer to sends and receipt lookups: the "did my payment
land?" case), ``GET /health``.

It is a small HTTP/1.1 server on asyncio streams rather than an ASGI app because a reset, a
half-finished answer or a held connection are things only the socket owner can do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec

FaultKind = Literal["timeout", "http_5xx", "rpc_error", "reset", "lost"]
FAULT_KINDS: tuple[FaultKind, ...] = ("timeout", "http_5xx", "rpc_error", "reset", "lost")

SEND_METHODS = frozenset({"eth_sendRawTransactionSync", "eth_sendRawTransaction"})
PAYMENT_METHODS = (
    "eth_sendRawTransactionSync",
    "eth_sendRawTransaction",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_getBlockByNumber",
    "eth_call",
    "eth_chainId",
)
"""What a payment server asks a node: sends, receipt and transaction lookups, block time,
balances (``eth_call``) and the chain id."""
LOSE_METHODS = frozenset({*SEND_METHODS, "eth_getTransactionReceipt"})
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


class FaultPlan(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rate: float = 0.0
    """Probability that a call to one of ``methods`` gets a fault."""
    weights: dict[str, float] = msgspec.field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 1.0))
    """Relative weight of each kind (missing kinds: 0)."""
    methods: list[str] = msgspec.field(default_factory=lambda: list(PAYMENT_METHODS))
    seed: int = 0
    hold_s: float = 5.0
    """How long a ``timeout`` holds the answer: more than the caller's RPC timeout."""
    force: list[str] = []
    """Kinds injected, in this order, on the next matching calls (before any random draw);
    ``kind:detail`` also picks the status or error (``http_5xx:503``, ``rpc_error:nonce too low``)."""


class Fault(msgspec.Struct, frozen=True):
    """One injected fault: the call's sequence number, method, kind, what the caller got
    (``detail``) and whether the call reached the node first."""

    n: int
    method: str
    kind: str
    relayed: bool
    detail: str


class Injector:
    """Decides, per call, whether and how it fails. Sans-I/O: the server acts on the answer."""

    def __init__(self, plan: FaultPlan) -> None:
        self.set_plan(plan)
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self._n = 0

    def set_plan(self, plan: FaultPlan) -> None:
        forced = {entry.partition(":")[0] for entry in plan.force}
        unknown = (set(plan.weights) | forced) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        details = {e.partition(":")[2] for e in plan.force if e.startswith("rpc_error:")}
        if details - set(_RPC_ERRORS):
            raise ValueError(f"unknown JSON-RPC errors: {sorted(details - set(_RPC_ERRORS))}")
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._forced = list(plan.force)

    def decide(self, methods: list[str]) -> Fault | None:
        self._n += 1
        self.calls.update(methods)
        targeted = [m for m in methods if m in self.plan.methods]
        if not targeted:
            return None
        detail = None
        if self._forced:
            kind, _, detail = self._forced.pop(0).partition(":")
        elif self._rng.random() < self.plan.rate:
            kinds = [k for k in FAULT_KINDS if self.plan.weights.get(k, 0) > 0]
            if not kinds:
                return None
            kind = self._rng.choices(kinds, weights=[self.plan.weights[k] for k in kinds])[0]
        else:
            return None
        fault = self._shape(self._n, targeted[0], kind, detail, send=bool(SEND_METHODS & set(targeted)))
        self.faults.append(fault)
        return fault

    def _shape(self, n: int, method: str, kind: str, detail: str | None, *, send: bool) -> Fault:
        """The fault's details (``detail`` when forced): what the caller gets, and whether
        the call reaches the node first."""
        coin = self._rng.random() < 0.5
        if kind in ("timeout", "lost"):
            return Fault(n, method, kind, True, kind)
        if kind == "http_5xx":
            return Fault(n, method, kind, coin, detail or str(self._rng.choice((500, 502, 503, 504))))
        if kind == "reset":
            return Fault(n, method, kind, coin, "rst")
        errors = ["internal error", "rate limited"]
        if send:  # what a node says about a transaction it already has (true: relayed first)
            errors += ["already known", "nonce too low"]
        detail = detail or self._rng.choice(errors)
        relayed = detail in ("already known", "nonce too low") or (detail == "internal error" and coin)
        return Fault(n, method, kind, relayed, detail)


_RPC_ERRORS: dict[str, tuple[int, str]] = {
    "internal error": (-32000, "internal error"),
    "rate limited": (-32005, "request rate exceeded"),
    "already known": (-32000, "already known"),
    "nonce too low": (-32000, "nonce too low: next nonce 1, tx nonce 0"),
}


class FaultyRelay:
    """The server: ``await serve(host, port)``; ``port`` is then the bound port."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self.upstream = upstream
        self.injector = Injector(plan)
        self.lose_until = 0.0
        self.port = 0
        self._client: httpx.AsyncClient | None = None
        self._server: asyncio.Server | None = None

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._client = httpx.AsyncClient(timeout=60, trust_env=False)
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._client is not None:
            await self._client.aclose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False ends the connection."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        verb, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY or "chunked" in headers.get("transfer-encoding", ""):
            await _respond(writer, 413, b"", close=True)
            return False
        body = await reader.readexactly(length) if length else b""
        keep = headers.get("connection", "").lower() != "close"
        if verb == "POST" and target == "/":
            return await self._relay(body, writer, keep)
        status, answer = self._control(verb, target, body)
        await _respond(writer, status, answer, close=not keep)
        return keep

    def _control(self, verb: str, target: str, body: bytes) -> tuple[int, bytes]:
        injector = self.injector
        if verb == "GET" and target == "/health":
            return 200, b'{"status":"ok"}'
        if verb == "GET" and target == "/control/calls":
            return 200, msgspec.json.encode(dict(injector.calls))
        if verb == "GET" and target == "/control/faults":
            return 200, msgspec.json.encode({"plan": injector.plan, "faults": injector.faults})
        if verb == "PUT" and target == "/control/plan":
            try:
                injector.set_plan(msgspec.json.decode(body, type=FaultPlan))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                return 400, msgspec.json.encode({"error": str(exc)})
            return 200, msgspec.json.encode(injector.plan)
        if verb == "PUT" and target.startswith("/control/lose/"):
            try:
                seconds = float(target.removeprefix("/control/lose/"))
            except ValueError:
                return 400, b'{"error":"seconds"}'
            self.lose_until = time.monotonic() + seconds
            return 200, msgspec.json.encode({"lose_for_s": seconds})
        return 404, b'{"error":"not found"}'

    async def _relay(self, body: bytes, writer: asyncio.StreamWriter, keep: bool) -> bool:
        message, methods = _methods(body)
        fault = self.injector.decide(methods)
        losing = time.monotonic() < self.lose_until and bool(LOSE_METHODS & set(methods))
        answer = None
        if fault is None or fault.relayed:
            assert self._client is not None
            upstream = await self._client.post(
                self.upstream, content=body, headers={"content-type": "application/json"}
            )
            answer = (upstream.status_code, upstream.content)
        if losing:
            await asyncio.sleep(3600)  # the chain has it; the answer is lost
        if fault is None:
            assert answer is not None
            await _respond(writer, answer[0], answer[1], close=not keep)
            return keep
        if fault.kind == "timeout":
            await asyncio.sleep(self.injector.plan.hold_s)
            assert answer is not None
            await _respond(writer, answer[0], answer[1], close=True)
            return False
        if fault.kind == "lost":
            return False  # closed without an answer
        if fault.kind == "reset":
            _reset(writer)
            return False
        if fault.kind == "http_5xx":
            status = int(fault.detail)
            await _respond(writer, status, f"{status} from the RPC endpoint".encode(), close=True, json=False)
            return False
        code, text = _RPC_ERRORS[fault.detail]
        request_id = message.get("id") if isinstance(message, dict) else None
        error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": text}}
        await _respond(writer, 200, msgspec.json.encode(error), close=not keep)
        return keep


def _methods(body: bytes) -> tuple[Any, list[str]]:
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, []
    calls = message if isinstance(message, list) else [message]
    return message, [c["method"] for c in calls if isinstance(c, dict) and isinstance(c.get("method"), str)]


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool, json: bool = True
) -> None:
    kind = b"application/json" if json else b"text/plain"
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (status, kind, len(body))
    if close:
        head += b"connection: close\r\n"
    writer.write(head + b"\r\n" + body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def start(
    upstream: str, log: Path, *options: str, timeout_s: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``python -m devnet.faults`` (``options``: its command-line options) in a session of
    its own on a free port, output to ``log``; returns the process and its URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    argv = [sys.executable, "-m", "devnet.faults", "--upstream", upstream, "--port", str(port), *options]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"devnet.faults exited with {proc.returncode}: see {log}")
        try:
            httpx.get(url + "/health", timeout=1.0, trust_env=False)
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the node's JSON-RPC URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hold-s", type=float, default=5.0)
    parser.add_argument("--methods", default=",".join(PAYMENT_METHODS))
    parser.add_argument("--force", default="", help="comma-separated kinds to inject first")
    args = parser.parse_args(argv)
    plan = FaultPlan(
        rate=args.rate,
        seed=args.seed,
        hold_s=args.hold_s,
        methods=[m for m in args.methods.split(",") if m],
        force=[k for k in args.force.split(",") if k],
    )

    async def run() -> None:
        relay = FaultyRelay(args.upstream, plan)
        await relay.serve(args.host, args.port)
        print(f"listening on http://{args.host}:{relay.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
