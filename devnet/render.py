"""The JSON-RPC shapes of blocks, Tempo transactions, receipts and logs, as a Tempo node
returns them (field names and hex quantities per the Ethereum JSON-RPC spec, plus Tempo's
``calls``, ``nonceKey``, ``validBefore``, ``feeToken``, ``feePayer``…).

Receipt and block ``logsBloom`` are real 2048-bit blooms of the logs. The trie roots
(``stateRoot``, ``transactionsRoot``, ``receiptsRoot``) are not computed and are zero: nothing
the SDKs do reads them, and the block hash is the devnet's own (see ``chain._seal``).
"""

from __future__ import annotations

from typing import Any

import rlp
from eth_hash.auto import keccak

from contracts.tempo import BASE_FEE_PER_GAS, TEMPO_TX_TYPE
from devnet.chain import BLOCK_GAS_LIMIT
from devnet.state import Block, Receipt, Transaction
from devnet.tip20 import ZERO_ADDRESS, Log

ZERO_HASH = "0x" + "00" * 32
EMPTY_UNCLES_HASH = "0x" + keccak(rlp.encode([])).hex()
TX_TYPE = hex(TEMPO_TX_TYPE)


def quantity(value: int) -> str:
    return hex(value)


def block(block: Block, full_transactions: bool) -> dict[str, Any]:
    return {
        "number": quantity(block.number),
        "hash": block.hash,
        "parentHash": block.parent_hash,
        "timestamp": quantity(block.timestamp),
        "gasLimit": quantity(BLOCK_GAS_LIMIT),
        "gasUsed": quantity(block.gas_used),
        "baseFeePerGas": quantity(BASE_FEE_PER_GAS),
        "miner": ZERO_ADDRESS,
        "difficulty": "0x0",
        "extraData": "0x",
        "nonce": "0x0000000000000000",
        "mixHash": ZERO_HASH,
        "sha3Uncles": EMPTY_UNCLES_HASH,
        "uncles": [],
        "logsBloom": bloom([log for receipt in block.receipts for log in receipt.logs]),
        "stateRoot": ZERO_HASH,
        "transactionsRoot": ZERO_HASH,
        "receiptsRoot": ZERO_HASH,
        "withdrawals": [],
        "transactions": [
            transaction(tx, block) if full_transactions else tx.hash for tx in block.transactions
        ],
    }


def transaction(tx: Transaction, block: Block) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": TX_TYPE,
        "hash": tx.hash,
        "from": tx.sender,
        "blockHash": block.hash,
        "blockNumber": quantity(block.number),
        "transactionIndex": quantity(tx.index),
        "chainId": quantity(tx.chain_id),
        "nonceKey": quantity(tx.nonce_key),
        "nonce": quantity(tx.nonce),
        "gas": quantity(tx.gas),
        "maxFeePerGas": quantity(tx.max_fee_per_gas),
        "maxPriorityFeePerGas": quantity(tx.max_priority_fee_per_gas),
        "gasPrice": quantity(block.receipts[tx.index].effective_gas_price),
        "calls": [
            {"to": call.to, "value": quantity(call.value), "input": "0x" + call.data.hex()}
            for call in tx.calls
        ],
        "accessList": [{"address": address, "storageKeys": list(keys)} for address, keys in tx.access_list],
        "aaAuthorizationList": [],
        "to": None,
        "value": "0x0",
        "input": "0x",
    }
    if tx.valid_before is not None:
        out["validBefore"] = quantity(tx.valid_before)
    if tx.valid_after is not None:
        out["validAfter"] = quantity(tx.valid_after)
    if tx.fee_token is not None:
        out["feeToken"] = tx.fee_token
    if tx.signature is not None:
        out["signature"] = {"type": "secp256k1", **_signature(tx.signature)}
    if tx.fee_payer_signature is not None:
        out["feePayerSignature"] = _signature(tx.fee_payer_signature)
    return out


def receipt(receipt: Receipt, block: Block) -> dict[str, Any]:
    return {
        "type": TX_TYPE,
        "transactionHash": receipt.transaction_hash,
        "transactionIndex": quantity(receipt.index),
        "blockHash": block.hash,
        "blockNumber": quantity(block.number),
        "from": receipt.sender,
        "to": receipt.to,
        "contractAddress": None,
        "status": "0x1" if receipt.success else "0x0",
        "gasUsed": quantity(receipt.gas_used),
        "cumulativeGasUsed": quantity(receipt.cumulative_gas_used),
        "effectiveGasPrice": quantity(receipt.effective_gas_price),
        "feeToken": receipt.fee_token,
        "feePayer": receipt.fee_payer,
        "logs": [
            log(entry, receipt, block, receipt.first_log_index + offset)
            for offset, entry in enumerate(receipt.logs)
        ],
        "logsBloom": bloom(list(receipt.logs)),
    }


def log(entry: Log, receipt: Receipt, block: Block, log_index: int) -> dict[str, Any]:
    return {
        "address": entry.address,
        "topics": list(entry.topics),
        "data": entry.data,
        "blockHash": block.hash,
        "blockNumber": quantity(block.number),
        "blockTimestamp": quantity(block.timestamp),
        "transactionHash": receipt.transaction_hash,
        "transactionIndex": quantity(receipt.index),
        "logIndex": quantity(log_index),
        "removed": False,
    }


def simulated_logs(logs: list[Log]) -> list[dict[str, Any]]:
    """Logs of a simulated call, which belong to no block or transaction."""
    return [{"address": entry.address, "topics": list(entry.topics), "data": entry.data} for entry in logs]


def bloom(logs: list[Log]) -> str:
    """The 2048-bit log bloom: 3 bits per address and per topic, from its keccak-256."""
    bits = 0
    for entry in logs:
        for item in (entry.address, *entry.topics):
            digest = keccak(bytes.fromhex(item[2:]))
            for i in (0, 2, 4):
                bits |= 1 << (int.from_bytes(digest[i : i + 2], "big") & 2047)
    return "0x" + bits.to_bytes(256, "big").hex()


def _signature(sig: tuple[int, int, int]) -> dict[str, str]:
    y_parity, r, s = sig
    return {"r": quantity(r), "s": quantity(s), "yParity": quantity(y_parity), "v": quantity(y_parity)}
