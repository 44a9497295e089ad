"""A JSON-RPC relay between the gateway under test and the devnet, served by Granian like the
other test servers: ``granian --interface asgi --factory tests.gateway.rpc_proxy:create_app``
with ``RPC_PROXY_UPSTREAM`` set to the devnet's URL.

It passes every call through and counts them by method. ``PUT /control/lose/{seconds}`` makes
it *lose answers* for that long: transactions still reach the chain (and are mined), but the
answers to sends and receipt lookups never come back — the "did my payment land?" situation
the gateway must answer with ``payment-outcome-unknown`` instead of a fresh 402.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
from litestar import Litestar, Request, Response, get, post, put

LOST_METHODS = frozenset(
    {"eth_sendRawTransactionSync", "eth_sendRawTransaction", "eth_getTransactionReceipt"}
)


class _State:
    lose_until = 0.0
    calls: Counter[str] = Counter()
    client: httpx.AsyncClient | None = None


@post("/", status_code=200)
async def relay(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await request.body()
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        message = None
    methods = [m.get("method") for m in (message if isinstance(message, list) else [message])]
    methods = [m for m in methods if isinstance(m, str)]
    _State.calls.update(methods)
    assert _State.client is not None
    answer = await _State.client.post(os.environ["RPC_PROXY_UPSTREAM"], content=body)
    if time.monotonic() < _State.lose_until and LOST_METHODS & set(methods):
        await asyncio.sleep(3600)  # the chain has it; the answer is lost
    return Response(answer.content, media_type="application/json")


@put("/control/lose/{seconds:float}", status_code=200)
async def lose(seconds: float) -> dict[str, float]:
    _State.lose_until = time.monotonic() + seconds
    return {"lose_for_s": seconds}


@get("/control/calls")
async def calls() -> dict[str, int]:
    return dict(_State.calls)


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _open() -> None:
    _State.client = httpx.AsyncClient(timeout=30)


async def _close() -> None:
    if _State.client is not None:
        await _State.client.aclose()


def create_app() -> Litestar:
    return Litestar(
        route_handlers=[relay, lose, calls, health],
        on_startup=[_open],
        on_shutdown=[_close],
        openapi_config=None,
    )
