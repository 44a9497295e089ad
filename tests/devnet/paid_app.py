"""A minimal paid resource on pympp's framework-neutral server API, settling on the devnet:
``GET`` anything → 402 with a Tempo charge of 0.25 pathUSD on chain 1337 → 200 with a
``Payment-Receipt`` once paid.

The pympp client test drives ``respond`` in-process; the mppx test needs a real HTTP server,
so ``create_app`` wraps the same thing as a raw ASGI app for Granian, configured from
``DNAH_TEST_DEVNET_URL`` and ``DNAH_TEST_RECIPIENT``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mpp.methods.tempo import server as tempo
from mpp.server import Mpp, Request, Response

from contracts.tempo import DEVNET, PATH_USD

PRICE = "0.25"
PRICE_UNITS = 250_000
REALM = "devnet.test"
SECRET = "devnet-test-secret-of-at-least-32-bytes"

Handler = Callable[[Request], Awaitable[Any]]


def paid_handler(rpc_url: str, recipient: str) -> Handler:
    server = Mpp(
        methods=tempo.charge(
            recipient=recipient, chain_id=DEVNET.chain_id, rpc_url=rpc_url, currencies=[PATH_USD.address]
        ),
        realm=REALM,
        secret_key=SECRET,
    )
    handler: Handler = server.charge(amount=PRICE, description="a devnet test resource")
    return handler


async def respond(
    handler: Handler, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
) -> Response:
    result = await handler(Request(method, url, headers=headers, body=body))
    if result.status != 200:
        challenge: Response = result.challenge
        return challenge
    paid: Response = result.with_receipt(Response.json({"paid": True}))
    return paid


def create_app() -> Callable[..., Awaitable[None]]:
    handler = paid_handler(os.environ["DNAH_TEST_DEVNET_URL"], os.environ["DNAH_TEST_RECIPIENT"])

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        host = dict(headers).get("host", "localhost")
        query = scope["query_string"].decode("latin-1")
        url = f"http://{host}{scope['path']}" + (f"?{query}" if query else "")
        response = await respond(handler, scope["method"], url, headers, body or None)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.multi_items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body or b""})

    return app
