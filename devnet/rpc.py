"""The JSON-RPC 2.0 surface: every method the pympp and mppx clients and servers call on a
Tempo node (``shared/research/mppx-peer.md`` §2.5, §3), plus the faucet and one test cheat.

Method                      Behaviour
--------------------------  --------------------------------------------------------------------
eth_chainId / net_version   the chain id (hex / decimal string)
web3_clientVersion          ``dnah-devnet/<version>``
eth_blockNumber             the latest block number
eth_getBlockByNumber/Hash   the block (``baseFeePerGas`` included), hashes or full transactions
eth_gasPrice                the base fee (2×10¹⁰); pympp signs with maxFee = maxPriority = this
eth_maxPriorityFeePerGas    0; viem then signs with maxFee = 1.2 × base fee
eth_estimateGas             gas of the calls: both the 0x76 ``{from, calls: [...]}`` request and
                            a plain ``{from, to, data}``; a revert is error 3 with revert data
eth_call                    runs the calls on the latest state, keeps nothing; output of the last
                            call (``balanceOf`` → the balance); a revert is error 3
eth_sendRawTransaction      admits, executes and mines a signed 0x76 transaction → its hash
eth_sendRawTransactionSync  same, ``[raw, timeoutMs?]`` → the receipt (mined at once, so the
                            timeout never runs out)
eth_getTransactionByHash    the mined transaction, Tempo-shaped (``calls``, ``nonceKey``…) or null
eth_getTransactionReceipt   the receipt or null
eth_getTransactionCount     the protocol nonce (nonce key 0) of an address
tempo_simulateV1            ``[{blockStateCalls: [{calls: [...]}]}, block]`` → per-call status,
                            return data, gas and logs, each call seeing the previous ones
tempo_fundAddress           mints 1,000 pathUSD and 1,000 USDC.e → the two mint tx hashes
dnah_setBalance             ``[address, token, amount]`` sets a TIP-20 balance (tests) → true

``eth_fillTransaction`` is deliberately absent: it answers -32601 like any unknown method, and
viem (under mppx) then prepares the transaction from ``eth_getBlockByNumber``,
``eth_maxPriorityFeePerGas`` and ``eth_estimateGas`` — the path observed against real nodes
without the method. Block parameters are accepted and ignored: every read sees the latest state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
import structlog

from contracts.tempo import BASE_FEE_PER_GAS
from devnet import render
from devnet.chain import Chain, Execution
from devnet.errors import (
    EXECUTION_REVERTED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    invalid_params,
    unsupported,
)
from devnet.state import Block
from devnet.tip20 import TOKEN_ADDRESSES, ZERO_ADDRESS, Call

log = structlog.get_logger("devnet.rpc")

Persist = Callable[[Block | None], None]
"""Called after every change, with the new block if one was mined, before the answer goes out."""


def _client_version() -> str:
    try:
        return f"dnah-devnet/{version('dnah')}"
    except PackageNotFoundError:
        return "dnah-devnet/dev"


class Rpc:
    def __init__(self, chain: Chain, persist: Persist) -> None:
        self.chain = chain
        self._persist = persist
        self._client_version = _client_version()
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": self.eth_chain_id,
            "net_version": self.net_version,
            "web3_clientVersion": self.web3_client_version,
            "eth_blockNumber": self.eth_block_number,
            "eth_getBlockByNumber": self.eth_get_block_by_number,
            "eth_getBlockByHash": self.eth_get_block_by_hash,
            "eth_gasPrice": self.eth_gas_price,
            "eth_maxPriorityFeePerGas": self.eth_max_priority_fee_per_gas,
            "eth_estimateGas": self.eth_estimate_gas,
            "eth_call": self.eth_call,
            "eth_sendRawTransaction": self.eth_send_raw_transaction,
            "eth_sendRawTransactionSync": self.eth_send_raw_transaction_sync,
            "eth_getTransactionByHash": self.eth_get_transaction_by_hash,
            "eth_getTransactionReceipt": self.eth_get_transaction_receipt,
            "eth_getTransactionCount": self.eth_get_transaction_count,
            "tempo_simulateV1": self.tempo_simulate_v1,
            "tempo_fundAddress": self.tempo_fund_address,
            "dnah_setBalance": self.dnah_set_balance,
        }

    # transport -------------------------------------------------------------------------------

    def handle(self, body: bytes) -> bytes | None:
        """Answer one HTTP body: a request object or a batch. None when nothing is owed (only
        notifications)."""
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError:
            log.info("rpc", method=None, outcome="error", code=PARSE_ERROR)
            return msgspec.json.encode(_error(None, RpcError(PARSE_ERROR, "parse error")))
        if isinstance(message, list):
            if not message:
                return msgspec.json.encode(_error(None, RpcError(INVALID_REQUEST, "empty batch")))
            answers = [answer for item in message if (answer := self._one(item)) is not None]
            return msgspec.json.encode(answers) if answers else None
        answer = self._one(message)
        return None if answer is None else msgspec.json.encode(answer)

    def _one(self, request: object) -> dict[str, Any] | None:
        started = time.perf_counter()
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            log.info("rpc", method=None, outcome="error", code=INVALID_REQUEST)
            return _error(None, RpcError(INVALID_REQUEST, "invalid request"))
        method, request_id = request["method"], request.get("id")
        params = request.get("params", [])
        try:
            handler = self._methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
            if not isinstance(params, list):
                raise invalid_params("params must be an array")
            result = handler(params)
        except RpcError as exc:
            log.info(
                "rpc", method=method, outcome="error", code=exc.code, message=exc.message, ms=_ms(started)
            )
            return None if "id" not in request else _error(request_id, exc)
        except Exception:
            log.exception("rpc", method=method, outcome="error", code=INTERNAL_ERROR, ms=_ms(started))
            return (
                None
                if "id" not in request
                else _error(request_id, RpcError(INTERNAL_ERROR, "internal error"))
            )
        log.info("rpc", method=method, outcome="ok", ms=_ms(started))
        return None if "id" not in request else {"jsonrpc": "2.0", "id": request_id, "result": result}

    # chain and blocks ------------------------------------------------------------------------

    def eth_chain_id(self, params: list[Any]) -> str:
        _arity(params, 0)
        return render.quantity(self.chain.chain_id)

    def net_version(self, params: list[Any]) -> str:
        _arity(params, 0)
        return str(self.chain.chain_id)

    def web3_client_version(self, params: list[Any]) -> str:
        _arity(params, 0)
        return self._client_version

    def eth_block_number(self, params: list[Any]) -> str:
        _arity(params, 0)
        return render.quantity(self.chain.latest.number)

    def eth_get_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        _arity(params, 1, 2)
        tag = params[0]
        if tag in ("latest", "pending", "safe", "finalized"):
            block: Block | None = self.chain.latest
        elif tag == "earliest":
            block = self.chain.block(0)
        else:
            block = self.chain.block(_quantity(tag))
        return None if block is None else render.block(block, _flag(params, 1))

    def eth_get_block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        _arity(params, 1, 2)
        block = self.chain.block_by_hash(_hash(params[0]))
        return None if block is None else render.block(block, _flag(params, 1))

    # fees and execution ----------------------------------------------------------------------

    def eth_gas_price(self, params: list[Any]) -> str:
        _arity(params, 0)
        return render.quantity(BASE_FEE_PER_GAS)

    def eth_max_priority_fee_per_gas(self, params: list[Any]) -> str:
        _arity(params, 0)
        return "0x0"

    def eth_estimate_gas(self, params: list[Any]) -> str:
        _arity(params, 1, 3)
        execution = self.chain.call(*_call_request(params[0]))
        return render.quantity(_succeeded(execution).gas_used)

    def eth_call(self, params: list[Any]) -> str:
        _arity(params, 1, 3)
        execution = self.chain.call(*_call_request(params[0]))
        return "0x" + _succeeded(execution).output.hex()

    def tempo_simulate_v1(self, params: list[Any]) -> dict[str, Any]:
        _arity(params, 1, 2)
        payload = params[0]
        if not isinstance(payload, dict) or not isinstance(payload.get("blockStateCalls"), list):
            raise invalid_params("expected {blockStateCalls: [{calls: [...]}, ...]}")
        blocks = []
        for state_block in payload["blockStateCalls"]:
            calls = state_block.get("calls") if isinstance(state_block, dict) else None
            if not isinstance(calls, list):
                raise invalid_params("every blockStateCalls entry needs a calls array")
            blocks.append([_call_request(request) for request in calls])
        results = self.chain.simulate(blocks)
        head = self.chain.latest
        return {
            "blocks": [
                {
                    "number": render.quantity(head.number + 1 + i),
                    "timestamp": render.quantity(head.timestamp),
                    "baseFeePerGas": render.quantity(BASE_FEE_PER_GAS),
                    "calls": [_simulated(execution) for execution in executions],
                }
                for i, executions in enumerate(results)
            ]
        }

    # transactions ----------------------------------------------------------------------------

    def eth_send_raw_transaction(self, params: list[Any]) -> str:
        _arity(params, 1)
        block = self.chain.submit(_data(params[0]))
        self._persist(block)
        return block.transactions[0].hash

    def eth_send_raw_transaction_sync(self, params: list[Any]) -> dict[str, Any]:
        _arity(params, 1, 2)
        if len(params) == 2 and params[1] is not None:
            _amount(params[1])  # pympp sends the timeout as a JSON number, EIP-7966 as hex
        block = self.chain.submit(_data(params[0]))
        self._persist(block)
        return render.receipt(block.receipts[0], block)

    def eth_get_transaction_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        _arity(params, 1)
        tx = self.chain.transaction(_hash(params[0]))
        if tx is None:
            return None
        return render.transaction(tx, self.chain.blocks[tx.block_number])

    def eth_get_transaction_receipt(self, params: list[Any]) -> dict[str, Any] | None:
        _arity(params, 1)
        receipt = self.chain.receipt(_hash(params[0]))
        if receipt is None:
            return None
        return render.receipt(receipt, self.chain.blocks[receipt.block_number])

    def eth_get_transaction_count(self, params: list[Any]) -> str:
        _arity(params, 1, 2)
        return render.quantity(self.chain.nonce(_address(params[0])))

    # faucet and cheats -----------------------------------------------------------------------

    def tempo_fund_address(self, params: list[Any]) -> list[str]:
        _arity(params, 1)
        block = self.chain.fund(_address(params[0]))
        self._persist(block)
        return [tx.hash for tx in block.transactions]

    def dnah_set_balance(self, params: list[Any]) -> bool:
        _arity(params, 3)
        holder, token = _address(params[0]), _address(params[1])
        if token not in TOKEN_ADDRESSES:
            raise unsupported(f"balances of {token}, which is not a TIP-20 token this devnet has")
        self.chain.set_balance(token, holder, _amount(params[2]))
        self._persist(None)
        return True


# parameters ----------------------------------------------------------------------------------


def _arity(params: list[Any], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(params) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise invalid_params(f"expected {expected} parameters, got {len(params)}")


def _flag(params: list[Any], index: int) -> bool:
    if len(params) <= index:
        return False
    if not isinstance(params[index], bool):
        raise invalid_params("expected a boolean")
    return params[index]


def _quantity(value: object) -> int:
    if isinstance(value, str) and value.startswith("0x") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise invalid_params(f"expected a hex quantity, got {value!r}")


def _amount(value: object) -> int:
    """A hex quantity, a decimal string or a JSON integer, at least zero."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _quantity(value)


def _data(value: object) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise invalid_params(f"expected 0x-prefixed hex data, got {value!r}")


def _address(value: object) -> str:
    data = _data(value)
    if len(data) != 20:
        raise invalid_params(f"expected a 20-byte address, got {value!r}")
    return "0x" + data.hex()


def _hash(value: object) -> str:
    data = _data(value)
    if len(data) != 32:
        raise invalid_params(f"expected a 32-byte hash, got {value!r}")
    return "0x" + data.hex()


def _call_request(request: object) -> tuple[str, list[Call]]:
    """The sender and calls of a call request: Tempo's ``calls`` array first, then a top-level
    ``to``/``data`` call if present (the plain Ethereum shape, and how pympp puts the last
    call of a ``tempo_simulateV1`` transaction). Gas and fee fields are not used."""
    if not isinstance(request, dict):
        raise invalid_params("expected a transaction request object")
    raw_calls = request.get("calls") or []
    if not isinstance(raw_calls, list):
        raise invalid_params("calls must be an array")
    if request.get("to") is not None:
        raw_calls = [*raw_calls, request]
    if not raw_calls:
        raise invalid_params("the request has no call (neither calls nor to)")
    calls = []
    for raw in raw_calls:
        if not isinstance(raw, dict) or raw.get("to") is None:
            raise unsupported("contract creation calls")
        value = raw.get("value")
        calls.append(
            Call(
                to=_address(raw["to"]),
                value=0 if value in (None, "0x") else _quantity(value),
                data=_data(raw.get("input") or raw.get("data") or "0x"),
            )
        )
    sender = request.get("from")
    return (ZERO_ADDRESS if sender is None else _address(sender)), calls


def _succeeded(execution: Execution) -> Execution:
    if not execution.success:
        raise RpcError(
            EXECUTION_REVERTED, f"execution reverted: {execution.reason}", "0x" + execution.output.hex()
        )
    return execution


def _simulated(execution: Execution) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": "0x1" if execution.success else "0x0",
        "returnData": "0x" + execution.output.hex(),
        "gasUsed": render.quantity(execution.gas_used),
        "logs": render.simulated_logs(execution.logs),
    }
    if not execution.success:
        result["error"] = {
            "code": EXECUTION_REVERTED,
            "message": f"execution reverted: {execution.reason}",
            "data": "0x" + execution.output.hex(),
        }
    return result


def _error(request_id: object, error: RpcError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
