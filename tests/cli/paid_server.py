"""A tiny real MPP server for the ``dnah request`` tests: pympp's ``Mpp`` with a Tempo charge on
the devnet (chain 1337, pathUSD), as a raw ASGI app served by Granian.

Settings come from the environment: ``PAID_RPC_URL`` (the devnet), ``PAID_RECIPIENT``,
``PAID_SECRET``.

- ``GET /health``, ``GET /free``: no payment.
- ``POST /sandbox`` $0.01, ``GET /sandbox`` $0.0001: paid; the answer echoes the body.
- ``POST /flaky`` $0.001: settles the payment but answers ``503 payment-outcome-unknown`` the
  first time; the same credential sent again gets the stored success (what dnah's gateway
  does), a new credential would be charged again.
- ``GET /stats``: how many requests were paid and how many challenges issued.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from mpp.methods.tempo import server as tempo
from mpp.server import Mpp, PaymentVerified, Request, Response

PATH_USD = "0x20c0000000000000000000000000000000000000"
PRICES = {
    ("POST", "/sandbox"): ("0.01", "Create a sandbox"),
    ("GET", "/sandbox"): ("0.0001", "List sandboxes"),
    ("POST", "/flaky"): ("0.001", "Flaky operation"),
}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    mpp = Mpp(
        methods=tempo.charge(
            chain_id=1337,
            rpc_url=os.environ["PAID_RPC_URL"],
            currencies=[PATH_USD],
            recipient=os.environ["PAID_RECIPIENT"],
        ),
        realm="127.0.0.1",
        secret_key=os.environ["PAID_SECRET"],
    )
    stats = {"paid": 0, "challenges": 0}
    settled: dict[str, Response] = {}

    async def handle(
        method: str, url: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        if path in ("/health", "/free") and method == "GET":
            return Response.json({"free": True})
        if path == "/stats":
            return Response.json(stats)
        if (method, path) not in PRICES:
            return Response.json({"message": "not found"}, status=404)
        credential = dict((k.lower(), v) for k, v in headers).get("authorization", "")
        if path == "/flaky" and credential in settled:
            return settled[credential]
        price, description = PRICES[(method, path)]
        result = await mpp.charge(amount=price, description=description)(Request(method, url, headers, body))
        if not isinstance(result, PaymentVerified):
            stats["challenges"] += 1
            return result.challenge
        stats["paid"] += 1
        answer = result.with_receipt(Response.json({"ok": True, "echo": body.decode() or None}))
        if path == "/flaky":
            settled[credential] = answer
            problem = {
                "type": "https://paymentauth.org/problems/payment-outcome-unknown",
                "title": "Payment outcome unknown",
                "status": 503,
            }
            return Response(
                503,
                {"content-type": "application/problem+json", "retry-after": "0"},
                json.dumps(problem),
            )
        return answer

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = dict(headers).get("host", "127.0.0.1")
        query = scope.get("query_string", b"").decode()
        url = f"http://{host}{scope['path']}" + (f"?{query}" if query else "")
        response = await handle(scope["method"], url, scope["path"], headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.multi_items()],
            }
        )
        await send({"type": "http.response.body", "body": response.body or b""})

    return app
