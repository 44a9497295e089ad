"""JSON-RPC errors, shaped and numbered the way an Ethereum node (reth, which Tempo runs on)
answers, so clients take the same code paths against the devnet as against the chain.

- ``-32700``/``-32600``/``-32601``/``-32602``/``-32603``: JSON-RPC 2.0's own errors.
- ``-32000``: the node refused the transaction or request (bad signature, wrong chain id, nonce,
  funds, "already known", expired ``validBefore``…), with a node-like message.
- ``3``: a call reverted; ``data`` holds the revert bytes, exactly as for ``eth_call`` and
  ``eth_estimateGas`` on reth and geth.
- ``-32003``: something the real chain would do but this stand-in does not implement
  (non-TIP-20 call targets, passkey and keychain signatures, …). A separate code so a test
  failure can tell "the chain said no" from "the devnet cannot do this".
"""

from __future__ import annotations

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REJECTED = -32000
UNSUPPORTED = -32003
EXECUTION_REVERTED = 3


class RpcError(Exception):
    """An error answered to the caller as a JSON-RPC ``error`` object."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def rejected(message: str) -> RpcError:
    return RpcError(REJECTED, message)


def unsupported(message: str) -> RpcError:
    return RpcError(UNSUPPORTED, f"dnah-devnet does not support this: {message}")


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid params: {message}")
