"""The JSON-RPC surface: each method the pympp and mppx clients and servers call, answered in
the shape they read, plus JSON-RPC 2.0 framing (batches, notifications, errors)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from contracts.tempo import (
    BASE_FEE_PER_GAS,
    EXPIRING_NONCE_KEY,
    PATH_USD,
    TRANSFER_TOPIC,
    USDC_E,
)
from tests.devnet.support import (
    FAUCET_AMOUNT,
    Devnet,
    RpcFailure,
    address_topic,
    funded_account,
    new_account,
    raw_hex,
    signed,
    transfer,
    word,
)

PATH = PATH_USD.address
USDC = USDC_E.address.lower()
MINT_TOPIC = "0x0f6798a560793a54c3bcfe86a93cde1e73087d944c0ea20544137d4121396885"


def test_chain_identity(devnet: Devnet) -> None:
    assert devnet.rpc("eth_chainId") == "0x539"
    assert devnet.rpc("net_version") == "1337"
    assert devnet.rpc("web3_clientVersion").startswith("dnah-devnet/")


def test_fee_market_answers(devnet: Devnet) -> None:
    assert int(devnet.rpc("eth_gasPrice"), 16) == BASE_FEE_PER_GAS
    assert devnet.rpc("eth_maxPriorityFeePerGas") == "0x0"
    latest = devnet.rpc("eth_getBlockByNumber", "latest", False)
    assert int(latest["baseFeePerGas"], 16) == BASE_FEE_PER_GAS
    assert int(latest["number"], 16) == int(devnet.rpc("eth_blockNumber"), 16)


def test_fill_transaction_is_left_to_the_client(devnet: Devnet) -> None:
    """viem tries it first and falls back on -32601 (mppx-peer.md §2.2)."""
    with pytest.raises(RpcFailure) as failure:
        devnet.rpc("eth_fillTransaction", {"from": new_account().address})
    assert failure.value.code == -32601


def test_faucet_mints_both_tokens_in_one_block(devnet: Devnet) -> None:
    account = new_account()
    hashes = devnet.rpc("tempo_fundAddress", account.address)

    assert len(hashes) == 2
    receipts = [devnet.rpc("eth_getTransactionReceipt", tx_hash) for tx_hash in hashes]
    assert receipts[0]["blockHash"] == receipts[1]["blockHash"]
    block = devnet.rpc("eth_getBlockByHash", receipts[0]["blockHash"], True)
    assert [tx["hash"] for tx in block["transactions"]] == hashes
    for receipt, token, index in zip(receipts, (PATH, USDC), (0, 1), strict=True):
        holder = account.address.lower()
        assert receipt["status"] == "0x1"
        assert [(log["address"], log["topics"], log["data"], log["logIndex"]) for log in receipt["logs"]] == [
            (token, ["0x" + TRANSFER_TOPIC.hex(), address_topic("0x" + "00" * 20), address_topic(holder)],
             word(FAUCET_AMOUNT), hex(2 * index)),
            (token, [MINT_TOPIC, address_topic(holder)], word(FAUCET_AMOUNT), hex(2 * index + 1)),
        ]  # fmt: skip
    assert devnet.balance(PATH, account.address) == devnet.balance(USDC, account.address) == FAUCET_AMOUNT


def test_eth_call_reads_tip20(devnet: Devnet) -> None:
    account = funded_account(devnet)
    decimals = devnet.rpc("eth_call", {"to": PATH, "data": "0x313ce567"}, "latest")
    supply = int(devnet.rpc("eth_call", {"to": USDC_E.address, "data": "0x18160ddd"}, "latest"), 16)
    assert int(decimals, 16) == 6
    assert supply >= FAUCET_AMOUNT
    assert devnet.balance(USDC, account.address) == FAUCET_AMOUNT


def test_eth_call_simulates_a_tempo_request_without_committing(devnet: Devnet) -> None:
    """The request mppx's server sends three times before broadcasting (mppx-peer.md §2.4)."""
    payer, recipient = funded_account(devnet), new_account()
    call = transfer(recipient.address, 5)
    request = {
        "from": payer.address,
        "type": "0x76",
        "chainId": "0x539",
        "gas": hex(55_000),
        "maxFeePerGas": hex(BASE_FEE_PER_GAS * 6 // 5),
        "nonce": "0xa1b2c3d4e5f6",
        "nonceKey": hex(EXPIRING_NONCE_KEY),
        "validBefore": hex(int(time.time()) + 25),
        "calls": [{"to": PATH, "value": "0x", "data": "0x" + call.data.hex()}],
    }

    assert devnet.rpc("eth_call", request, "latest") == word(1)  # transfer returns true
    assert devnet.balance(PATH, recipient.address) == 0


def test_estimate_gas_for_both_request_shapes(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()
    data = "0x" + transfer(recipient.address, 5).data.hex()
    plain = {"from": payer.address, "to": PATH, "data": data}
    tempo_shape = {
        "from": payer.address,
        "type": "0x76",
        "nonceKey": hex(EXPIRING_NONCE_KEY),
        "calls": [{"to": PATH, "value": "0x", "data": data}, {"to": PATH, "data": data}],
    }
    assert devnet.rpc("eth_estimateGas", plain, "latest") == hex(50_000)
    assert devnet.rpc("eth_estimateGas", tempo_shape) == hex(21_000 + 2 * 29_000)


def test_simulate_v1_runs_calls_in_order_and_keeps_nothing(devnet: Devnet) -> None:
    alice, bob, carol = funded_account(devnet), new_account(), new_account()
    to_bob = "0x" + transfer(bob.address, 300).data.hex()
    to_carol = "0x" + transfer(carol.address, 200).data.hex()
    too_much = "0x" + transfer(carol.address, 200).data.hex()
    payload = {
        "blockStateCalls": [
            {
                "calls": [
                    {"from": alice.address, "to": PATH, "data": to_bob},
                    {"from": bob.address, "to": PATH, "data": to_carol},
                    {"from": bob.address, "to": PATH, "data": too_much},
                ]
            }
        ],
        "validation": False,
    }

    result = devnet.rpc("tempo_simulateV1", payload, "latest")

    calls = result["blocks"][0]["calls"]
    assert [call["status"] for call in calls] == ["0x1", "0x1", "0x0"]
    assert calls[1]["logs"] == [
        {
            "address": PATH,
            "topics": ["0x" + TRANSFER_TOPIC.hex(), address_topic(bob.address), address_topic(carol.address)],
            "data": word(200),
        }
    ]
    assert calls[2]["error"]["message"].startswith("execution reverted: InsufficientBalance(available=100")
    assert devnet.balance(PATH, bob.address) == devnet.balance(PATH, carol.address) == 0


def test_unknown_transactions_and_blocks_are_null(devnet: Devnet) -> None:
    assert devnet.rpc("eth_getTransactionReceipt", "0x" + "ab" * 32) is None
    assert devnet.rpc("eth_getTransactionByHash", "0x" + "ab" * 32) is None
    assert devnet.rpc("eth_getBlockByNumber", hex(10**9), False) is None
    assert devnet.rpc("eth_getBlockByNumber", "earliest", False)["number"] == "0x0"


def test_set_balance_cheat(devnet: Devnet) -> None:
    account = new_account()
    assert devnet.rpc("dnah_setBalance", account.address, USDC_E.address, "123456789") is True
    assert devnet.balance(USDC, account.address) == 123_456_789
    with pytest.raises(RpcFailure) as failure:
        devnet.rpc("dnah_setBalance", account.address, account.address, 1)
    assert failure.value.code == -32003


def test_invalid_params(devnet: Devnet) -> None:
    cases: list[tuple[str, list[object]]] = [
        ("eth_getTransactionReceipt", ["0x1234"]),
        ("eth_getTransactionCount", ["not-an-address"]),
        ("eth_chainId", [1]),
        ("eth_sendRawTransaction", ["76"]),
        ("eth_call", [{"from": "0x" + "11" * 20}]),
    ]
    for method, params in cases:
        with pytest.raises(RpcFailure) as failure:
            devnet.rpc(method, *params)
        assert failure.value.code == -32602, method


def test_json_rpc_framing(devnet: Devnet) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "method": "eth_chainId"},  # a notification: no answer
        {"jsonrpc": "2.0", "id": 7, "method": "no_such_method", "params": []},
        {"id": 8, "method": "eth_chainId"},
    ]
    answers = httpx.post(devnet.url, json=batch).json()
    unknown = {"code": -32601, "message": "the method no_such_method does not exist/is not available"}
    assert answers == [
        {"jsonrpc": "2.0", "id": "a", "result": "0x539"},
        {"jsonrpc": "2.0", "id": 7, "error": unknown},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}},
    ]
    assert httpx.post(devnet.url, content=b"{not json").json()["error"]["code"] == -32700
    assert httpx.post(devnet.url, json=[]).json()["error"]["code"] == -32600
    only_notification = httpx.post(devnet.url, json={"jsonrpc": "2.0", "method": "eth_chainId"})
    assert (only_notification.status_code, only_notification.content) == (204, b"")


async def test_concurrent_clients_each_get_their_own_block(devnet: Devnet) -> None:
    payers = [funded_account(devnet) for _ in range(12)]
    recipient = new_account()
    raws = [raw_hex(signed(payer, transfer(recipient.address, 1 + i))) for i, payer in enumerate(payers)]

    async with httpx.AsyncClient() as client:

        async def send(raw: str) -> dict[str, str]:
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransactionSync", "params": [raw]}
            answer = await client.post(devnet.url, json=body)
            result: dict[str, str] = answer.json()["result"]
            return result

        receipts = await asyncio.gather(*(send(raw) for raw in raws))

    assert all(receipt["status"] == "0x1" for receipt in receipts)
    assert len({receipt["blockNumber"] for receipt in receipts}) == len(raws)
    assert devnet.balance(PATH, recipient.address) == sum(range(1, 13))


def test_one_log_line_per_call(devnet: Devnet) -> None:
    marker = f"dnah_marker_{time.monotonic_ns()}"
    devnet.rpc("net_version")
    with pytest.raises(RpcFailure):
        devnet.rpc(marker)

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in devnet.log.read_text().splitlines() if line.startswith("{")]

    deadline = time.monotonic() + 5
    while not any(line.get("method") == marker for line in lines()):
        assert time.monotonic() < deadline, "no log line for the failed call"
        time.sleep(0.05)
    entries = lines()
    [failed] = [line for line in entries if line.get("method") == marker]
    assert (failed["event"], failed["outcome"], failed["code"], failed["service"]) == (
        "rpc",
        "error",
        -32601,
        "devnet",
    )
    assert any(line.get("method") == "net_version" and line["outcome"] == "ok" for line in entries)
