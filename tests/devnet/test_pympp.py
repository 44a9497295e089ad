"""pympp end to end on the devnet: pympp's client pays pympp's server, both talking to the
devnet as they would to Tempo — 402, credential (a signed 0x76 transferWithMemo), validation,
broadcast with ``eth_sendRawTransactionSync``, 200 with the receipt — and the money moves
by exactly the price plus the fee."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak
from mpp.client.transport import PaymentTransport
from mpp.errors import PaymentOutcomeUnknownError
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo_client

from contracts.tempo import DEVNET, PATH_USD, TRANSFER_WITH_MEMO_TOPIC
from tests.devnet.paid_app import PRICE_UNITS, REALM, Handler, paid_handler, respond
from tests.devnet.support import (
    FAUCET_AMOUNT,
    TRANSFER_FEE,
    Devnet,
    address_topic,
    funded_account,
    new_account,
    word,
)

PATH = PATH_USD.address
RESOURCE = f"http://{REALM}/sandboxes"


def served_in_process(handler: Handler) -> httpx.MockTransport:
    """The pympp server behind an httpx transport, no sockets."""

    async def serve(request: httpx.Request) -> httpx.Response:
        response = await respond(
            handler, request.method, str(request.url), request.headers.multi_items(), request.content or None
        )
        return httpx.Response(
            response.status, headers=response.headers.multi_items(), content=response.body or b""
        )

    return httpx.MockTransport(serve)


def decode_receipt(header: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return decoded


async def test_pympp_client_pays_pympp_server(devnet: Devnet) -> None:
    payer, recipient = funded_account(devnet), new_account()
    handler = paid_handler(devnet.url, recipient.address)
    unpaid = await respond(handler, "GET", RESOURCE, [], None)
    assert unpaid.status == 402
    assert unpaid.headers["www-authenticate"].startswith("Payment ")

    method = tempo_client.charge(
        account=TempoAccount.from_key("0x" + payer.key.hex().removeprefix("0x")),
        chain_id=DEVNET.chain_id,
        rpc_url=devnet.url,
    )
    transport = PaymentTransport(methods=[method], inner=served_in_process(handler))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(RESOURCE)

    assert response.status_code == 200, response.text
    assert response.json() == {"paid": True}
    receipt_header = decode_receipt(response.headers["payment-receipt"])
    assert (receipt_header["method"], receipt_header["status"]) == ("tempo", "success")
    tx_hash = receipt_header["reference"]

    receipt = devnet.rpc("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    assert receipt["from"] == payer.address.lower()
    memo_logs = [log for log in receipt["logs"] if log["topics"][0] == "0x" + TRANSFER_WITH_MEMO_TOPIC.hex()]
    assert len(memo_logs) == 1
    memo_log = memo_logs[0]
    assert memo_log["address"] == PATH
    assert memo_log["topics"][1:3] == [address_topic(payer.address), address_topic(recipient.address)]
    assert memo_log["data"] == word(PRICE_UNITS)
    memo = bytes.fromhex(memo_log["topics"][3][2:])
    assert memo[:4] == keccak(b"mpp")[:4]  # the MPP attribution memo, bound to this challenge
    assert memo[5:15] == keccak(REALM.encode())[:10]

    # pympp signs 1,000,000 gas at maxFee = maxPriority = eth_gasPrice; the chain charges the
    # 50,000 gas used at the base fee, in the currency it transfers.
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - PRICE_UNITS - TRANSFER_FEE
    assert devnet.balance(PATH, recipient.address) == PRICE_UNITS


async def test_a_payer_without_funds_gets_no_resource(devnet: Devnet) -> None:
    """The devnet refuses the broadcast (no fee-token balance). pympp's server treats any
    failure after it has broadcast as "outcome unknown" (500), never a payable 402, so its
    client raises PaymentOutcomeUnknownError — and nothing moved."""
    payer, recipient = new_account(), new_account()
    handler = paid_handler(devnet.url, recipient.address)
    method = tempo_client.charge(
        account=TempoAccount.from_key("0x" + payer.key.hex().removeprefix("0x")),
        chain_id=DEVNET.chain_id,
        rpc_url=devnet.url,
    )
    transport = PaymentTransport(methods=[method], inner=served_in_process(handler))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(PaymentOutcomeUnknownError):
            await client.get(RESOURCE)

    assert devnet.balance(PATH, recipient.address) == 0
    assert devnet.balance(PATH, payer.address) == 0
