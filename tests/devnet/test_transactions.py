"""Signed Tempo transactions against the real devnet: balances move exactly, receipts and logs
are shaped exactly as a Tempo node's, and everything a node refuses is refused."""

from __future__ import annotations

import time

import attrs
import pytest
from eth_hash.auto import keccak
from pytempo import Call, Signature

from contracts.tempo import (
    BASE_FEE_PER_GAS,
    EXPIRING_NONCE_KEY,
    PATH_USD,
    TRANSFER_TOPIC,
    TRANSFER_WITH_MEMO_TOPIC,
    USDC_E,
)
from tests.devnet.support import (
    FAUCET_AMOUNT,
    FEE_MANAGER,
    TRANSFER_FEE,
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
MEMO = bytes.fromhex("ef1ed71201") + bytes(range(27))
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_transfer_with_memo_moves_exact_amounts_and_logs_like_tip20(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()
    fee_manager_before = devnet.balance(PATH, FEE_MANAGER)
    tx = signed(payer, transfer(recipient.address, 250_000, memo=MEMO))

    receipt = devnet.send(tx)

    sender, to = payer.address.lower(), recipient.address.lower()
    tx_hash = "0x" + keccak(tx.encode()).hex()
    block = devnet.rpc("eth_getBlockByNumber", receipt["blockNumber"], False)
    assert block["transactions"] == [tx_hash]
    location = {
        "blockHash": block["hash"],
        "blockNumber": receipt["blockNumber"],
        "blockTimestamp": block["timestamp"],
        "transactionHash": tx_hash,
        "transactionIndex": "0x0",
        "removed": False,
    }
    assert receipt == {
        "type": "0x76",
        "transactionHash": tx_hash,
        "transactionIndex": "0x0",
        "blockHash": block["hash"],
        "blockNumber": receipt["blockNumber"],
        "from": sender,
        "to": PATH,
        "contractAddress": None,
        "status": "0x1",
        "gasUsed": hex(50_000),
        "cumulativeGasUsed": hex(50_000),
        "effectiveGasPrice": hex(BASE_FEE_PER_GAS),
        "feeToken": PATH,
        "feePayer": sender,
        "logs": [
            {
                "address": PATH,
                "topics": ["0x" + TRANSFER_TOPIC.hex(), address_topic(sender), address_topic(to)],
                "data": word(250_000),
                "logIndex": "0x0",
                **location,
            },
            {
                "address": PATH,
                "topics": [
                    "0x" + TRANSFER_WITH_MEMO_TOPIC.hex(),
                    address_topic(sender),
                    address_topic(to),
                    "0x" + MEMO.hex(),
                ],
                "data": word(250_000),
                "logIndex": "0x1",
                **location,
            },
            {
                "address": PATH,
                "topics": ["0x" + TRANSFER_TOPIC.hex(), address_topic(sender), address_topic(FEE_MANAGER)],
                "data": word(TRANSFER_FEE),
                "logIndex": "0x2",
                **location,
            },
        ],
        "logsBloom": receipt["logsBloom"],
    }
    assert receipt["logsBloom"] == block["logsBloom"] != "0x" + "00" * 256
    assert devnet.rpc("eth_getTransactionReceipt", tx_hash) == receipt
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - 250_000 - TRANSFER_FEE
    assert devnet.balance(PATH, recipient.address) == 250_000
    assert devnet.balance(PATH, FEE_MANAGER) == fee_manager_before + TRANSFER_FEE
    assert devnet.balance(USDC, payer.address) == FAUCET_AMOUNT


def test_mined_transaction_reads_back_in_tempo_shape(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()
    call = transfer(recipient.address, 7, token=USDC_E.address)
    tx = signed(payer, call, fee_token=PATH)
    receipt = devnet.send(tx)

    found = devnet.rpc("eth_getTransactionByHash", receipt["transactionHash"])

    sig = tx.sender_signature
    assert found == {
        "type": "0x76",
        "hash": receipt["transactionHash"],
        "from": payer.address.lower(),
        "blockHash": receipt["blockHash"],
        "blockNumber": receipt["blockNumber"],
        "transactionIndex": "0x0",
        "chainId": hex(1337),
        "nonceKey": hex(EXPIRING_NONCE_KEY),
        "nonce": "0x0",
        "gas": hex(100_000),
        "maxFeePerGas": hex(BASE_FEE_PER_GAS),
        "maxPriorityFeePerGas": "0x0",
        "gasPrice": hex(BASE_FEE_PER_GAS),
        "calls": [{"to": USDC, "value": "0x0", "input": "0x" + call.data.hex()}],
        "accessList": [],
        "aaAuthorizationList": [],
        "to": None,
        "value": "0x0",
        "input": "0x",
        "validBefore": hex(tx.valid_before),
        "feeToken": PATH,
        "signature": {
            "type": "secp256k1",
            "r": hex(sig.r),
            "s": hex(sig.s),
            "yParity": hex(sig.v - 27),
            "v": hex(sig.v - 27),
        },
    }
    # The fee is paid in the feeToken the transaction names, not in the token it moves.
    assert devnet.balance(USDC, payer.address) == FAUCET_AMOUNT - 7
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - TRANSFER_FEE


def test_plain_transfer_and_batch_of_calls(devnet: Devnet) -> None:
    payer, first, second = funded_account(devnet), new_account(), new_account()
    tx = signed(payer, transfer(first.address, 10), transfer(second.address, 20))

    receipt = devnet.send(tx)

    assert receipt["status"] == "0x1"
    assert receipt["gasUsed"] == hex(21_000 + 2 * 29_000)
    assert [log["topics"][0] for log in receipt["logs"]] == ["0x" + TRANSFER_TOPIC.hex()] * 3
    fee = -(-(21_000 + 2 * 29_000) * BASE_FEE_PER_GAS // 10**12)
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - 30 - fee
    assert (devnet.balance(PATH, first.address), devnet.balance(PATH, second.address)) == (10, 20)


def test_fee_is_charged_at_the_effective_price_not_the_cap(devnet: Devnet) -> None:
    """viem signs maxFeePerGas = 1.2 × base fee with no tip: the cap is reserved, the base fee paid."""
    payer = funded_account(devnet)
    tx = signed(payer, transfer(new_account().address, 1), max_fee_per_gas=BASE_FEE_PER_GAS * 6 // 5)

    receipt = devnet.send(tx)

    assert receipt["effectiveGasPrice"] == hex(BASE_FEE_PER_GAS)
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - 1 - TRANSFER_FEE


def test_sponsored_transaction_charges_the_fee_payer(devnet: Devnet) -> None:
    payer, sponsor, recipient = funded_account(devnet), funded_account(devnet), new_account()
    sender_signed = signed(payer, transfer(recipient.address, 500), awaiting_fee_payer=True)
    cosigned = attrs.evolve(sender_signed, fee_token=USDC_E.address).sign(
        sponsor.key.hex(), for_fee_payer=True
    )

    receipt = devnet.send(cosigned)

    assert (receipt["from"], receipt["feePayer"], receipt["feeToken"]) == (
        payer.address.lower(),
        sponsor.address.lower(),
        USDC,
    )
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - 500
    assert devnet.balance(USDC, payer.address) == FAUCET_AMOUNT
    assert devnet.balance(USDC, sponsor.address) == FAUCET_AMOUNT - TRANSFER_FEE

    # The same sender-signed payload with another sponsor is a replay, though its hash differs.
    other = funded_account(devnet)
    again = attrs.evolve(sender_signed, fee_token=PATH).sign(other.key.hex(), for_fee_payer=True)
    with pytest.raises(RpcFailure, match="replay") as failure:
        devnet.send(again)
    assert failure.value.code == -32000


def test_sequential_nonces_on_the_protocol_lane(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()

    def at(nonce: int, amount: int) -> str:
        return raw_hex(
            signed(payer, transfer(recipient.address, amount), nonce_key=0, nonce=nonce, valid_before=None)
        )

    assert devnet.rpc("eth_getTransactionCount", payer.address, "latest") == "0x0"
    devnet.rpc("eth_sendRawTransaction", at(0, 1))
    assert devnet.rpc("eth_getTransactionCount", payer.address, "pending") == "0x1"
    with pytest.raises(RpcFailure, match="nonce too low: next nonce 1, tx nonce 0"):
        devnet.rpc("eth_sendRawTransaction", at(0, 2))
    with pytest.raises(RpcFailure, match="nonce too high"):
        devnet.rpc("eth_sendRawTransaction", at(2, 2))
    devnet.rpc("eth_sendRawTransaction", at(1, 2))
    assert devnet.rpc("eth_getTransactionCount", payer.address) == "0x2"
    assert devnet.balance(PATH, recipient.address) == 3


def test_the_same_raw_transaction_is_accepted_once(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()
    raw = raw_hex(signed(payer, transfer(recipient.address, 100)))

    tx_hash = devnet.rpc("eth_sendRawTransaction", raw)
    with pytest.raises(RpcFailure, match="already known") as failure:
        devnet.rpc("eth_sendRawTransaction", raw)

    assert failure.value.code == -32000
    assert tx_hash == "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    assert devnet.balance(PATH, recipient.address) == 100


def test_recovery_id_0_or_1_is_the_same_transaction_as_27_or_28(devnet: Devnet) -> None:
    """Nodes normalise v before hashing, so both encodings name one transaction."""
    payer, recipient = funded_account(devnet), new_account()
    tx = signed(payer, transfer(recipient.address, 100))
    sig = tx.sender_signature
    low_v = attrs.evolve(tx, sender_signature=Signature(r=sig.r, s=sig.s, v=sig.v - 27))

    tx_hash = devnet.rpc("eth_sendRawTransaction", raw_hex(low_v))

    assert tx_hash == "0x" + keccak(tx.encode()).hex()
    with pytest.raises(RpcFailure, match="already known"):
        devnet.rpc("eth_sendRawTransaction", raw_hex(tx))


def test_a_corrupted_signature_moves_nothing(devnet: Devnet) -> None:
    """Flipping a bit of r recovers some other, unfunded account, or none at all when r is no
    longer a curve point — either way nothing moves, as on any chain."""
    payer, recipient = funded_account(devnet), new_account()
    raw = bytearray(signed(payer, transfer(recipient.address, 100)).encode())
    raw[-40] ^= 0x01  # inside r of the trailing 65-byte signature

    with pytest.raises(
        RpcFailure, match=r"insufficient fee token balance: required 2000, but only have 0|invalid"
    ):
        devnet.rpc("eth_sendRawTransaction", "0x" + raw.hex())

    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT
    assert devnet.balance(PATH, recipient.address) == 0


def test_a_high_s_signature_is_invalid(devnet: Devnet) -> None:
    payer = funded_account(devnet)
    tx = signed(payer, transfer(new_account().address, 100))
    sig = tx.sender_signature
    raw = bytearray(tx.encode())
    raw[-65:] = sig.r.to_bytes(32, "big") + (SECP256K1_N - sig.s).to_bytes(32, "big") + bytes([sig.v ^ 1])

    with pytest.raises(RpcFailure, match="invalid transaction signature") as failure:
        devnet.rpc("eth_sendRawTransaction", "0x" + raw.hex())
    assert failure.value.code == -32000


def test_wrong_chain_id_is_refused(devnet: Devnet) -> None:
    payer = funded_account(devnet)
    with pytest.raises(RpcFailure, match="invalid chain id: have 4217, want 1337"):
        devnet.send(signed(payer, transfer(new_account().address, 1), chain_id=4217))


def test_expired_and_too_distant_valid_before_are_refused(devnet: Devnet) -> None:
    payer = funded_account(devnet)
    now = int(time.time())
    with pytest.raises(RpcFailure, match=r"'valid_before' \d+ is too close to current time"):
        devnet.send(signed(payer, transfer(new_account().address, 1), valid_before=now - 10))
    with pytest.raises(RpcFailure, match=r"expiring nonce valid_before \(\d+\) too far in the future"):
        devnet.send(signed(payer, transfer(new_account().address, 1), valid_before=now + 3_600))
    with pytest.raises(RpcFailure, match="expiring nonce transaction requires valid_before"):
        devnet.send(signed(payer, transfer(new_account().address, 1), valid_before=None))
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT


def test_an_unfunded_fee_payer_is_refused(devnet: Devnet) -> None:
    payer = new_account()
    with pytest.raises(
        RpcFailure, match="insufficient fee token balance: required 2000, but only have 0"
    ) as failure:
        devnet.send(signed(payer, transfer(new_account().address, 1)))
    assert failure.value.code == -32000


def test_a_transfer_beyond_the_balance_reverts_and_still_pays_its_fee(devnet: Devnet) -> None:
    """A node does not refuse it: it executes, fails with TIP-20's InsufficientBalance, and
    is mined with status 0. eth_call and eth_estimateGas report the revert beforehand."""
    payer, recipient = new_account(), new_account()
    devnet.rpc("dnah_setBalance", payer.address, PATH, hex(50_000))
    call = transfer(recipient.address, 100_000)
    request = {"from": payer.address, "to": PATH, "data": "0x" + call.data.hex()}
    with pytest.raises(RpcFailure, match="execution reverted") as failure:
        devnet.rpc("eth_estimateGas", request)
    assert failure.value.code == 3
    assert (
        failure.value.data
        == "0x"
        + (  # InsufficientBalance(available, required, token)
            keccak(b"InsufficientBalance(uint256,uint256,address)")[:4]
            + (50_000).to_bytes(32, "big")
            + (100_000).to_bytes(32, "big")
            + bytes(12)
            + bytes.fromhex(PATH[2:])
        ).hex()
    )

    receipt = devnet.send(signed(payer, call))

    assert receipt["status"] == "0x0"
    assert [log["topics"] for log in receipt["logs"]] == [
        ["0x" + TRANSFER_TOPIC.hex(), address_topic(payer.address), address_topic(FEE_MANAGER)]
    ]
    assert devnet.balance(PATH, payer.address) == 50_000 - TRANSFER_FEE
    assert devnet.balance(PATH, recipient.address) == 0


def test_calls_the_devnet_cannot_run_are_unsupported(devnet: Devnet) -> None:
    payer, stranger = funded_account(devnet), new_account()
    with pytest.raises(RpcFailure, match="not a TIP-20 token") as failure:
        devnet.send(signed(payer, transfer(stranger.address, 1, token=stranger.address)))
    assert failure.value.code == -32003
    approve = Call.create(to=PATH, data=keccak(b"approve(address,uint256)")[:4] + bytes(64))
    with pytest.raises(RpcFailure, match="TIP-20 function") as failure:
        devnet.send(signed(payer, approve))
    assert failure.value.code == -32003
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0x76", "failed to decode signed transaction"),
        ("0x76c3010203", "14 or 15 fields"),
        ("0x7681", "failed to decode signed transaction"),
        ("0x78c0", "0x78 fee payer envelope"),
    ],
)
def test_malformed_transactions_are_refused(devnet: Devnet, raw: str, message: str) -> None:
    with pytest.raises(RpcFailure, match=message) as failure:
        devnet.rpc("eth_sendRawTransaction", raw)
    assert failure.value.code == -32000


def test_trailing_bytes_are_not_a_transaction(devnet: Devnet) -> None:
    payer = funded_account(devnet)
    raw = raw_hex(signed(payer, transfer(new_account().address, 1))) + "00"
    with pytest.raises(RpcFailure, match="failed to decode signed transaction"):
        devnet.rpc("eth_sendRawTransaction", raw)
