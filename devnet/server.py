"""The devnet's HTTP front end: JSON-RPC 2.0 over ``POST /`` (single requests and batches),
and ``GET /health`` for readiness checks.

Served by Granian with exactly one worker (``python -m devnet`` sets that up): the chain lives
in the worker's memory, and its operations are synchronous, so one event loop serves any
number of concurrent clients while each RPC call sees and leaves a consistent chain.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import MediaType

from contracts.observability import configure_logging
from devnet.chain import Chain
from devnet.config import load_config
from devnet.rpc import Rpc
from devnet.state import Block, Store

log = structlog.get_logger("devnet.server")


def create_app() -> Litestar:
    """Build the devnet from the environment (see ``devnet/config.py``). Loading the state
    file happens here, not in a lifespan hook, so a bad file stops Granian at start-up."""
    config = load_config()
    configure_logging("devnet", fmt=config.log_format)
    store = Store(config.state) if config.state is not None else None
    saved = store.load(config.chain_id) if store is not None else None
    if saved is None:
        chain = Chain.create(config.chain_id)
        if store is not None:
            store.save(chain.accounts, chain.latest)
    else:
        chain = Chain(*saved)

    def persist(block: Block | None) -> None:
        if store is not None:
            store.save(chain.accounts, block)

    log.info(
        "devnet ready",
        chain_id=chain.chain_id,
        block=chain.latest.number,
        state=str(config.state) if config.state else "memory",
    )
    return Litestar(
        route_handlers=[json_rpc, health],
        state=State({"rpc": Rpc(chain, persist)}),
        on_shutdown=[store.close] if store is not None else [],
    )


@post("/", status_code=200)
async def json_rpc(request: Request[Any, Any, Any]) -> Response[bytes]:
    answer = request.app.state.rpc.handle(await request.body())
    if answer is None:
        return Response(content=b"", status_code=204)
    return Response(content=answer, media_type=MediaType.JSON)


@get("/health")
async def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    chain = request.app.state.rpc.chain
    return {"status": "ok", "chainId": chain.chain_id, "blockNumber": chain.latest.number}
