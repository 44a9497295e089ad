"""``contracts.tempo`` computes selectors and topics from Solidity signatures; these literals,
published in the MPP specs and SDKs, pin them, so a wrong signature cannot slip through."""

from __future__ import annotations

from contracts import tempo


def test_tip20_selectors() -> None:
    assert tempo.TRANSFER_SELECTOR.hex() == "a9059cbb"
    assert tempo.TRANSFER_WITH_MEMO_SELECTOR.hex() == "95777d59"
    assert tempo.BALANCE_OF_SELECTOR.hex() == "70a08231"


TRANSFER = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TRANSFER_WITH_MEMO = "57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0"


def test_tip20_event_topics() -> None:
    assert tempo.TRANSFER_TOPIC.hex() == TRANSFER
    assert tempo.TRANSFER_WITH_MEMO_TOPIC.hex() == TRANSFER_WITH_MEMO


def test_networks() -> None:
    assert (tempo.MAINNET.chain_id, tempo.MAINNET.rpc_url) == (4217, "https://rpc.tempo.xyz")
    assert (tempo.TESTNET.name, tempo.TESTNET.chain_id) == ("moderato", 42431)
    assert tempo.DEVNET.chain_id == 1337
    assert tempo.PRESETS == {"mainnet": tempo.MAINNET, "moderato": tempo.TESTNET, "devnet": tempo.DEVNET}


def test_tokens() -> None:
    assert tempo.PATH_USD.address == "0x20c0000000000000000000000000000000000000"
    assert tempo.USDC_E.address == "0x20C000000000000000000000b9537d11c60E8b50"
    assert {token.decimals for token in tempo.TOKENS} == {tempo.TIP20_DECIMALS} == {6}


def test_fee_constants_price_a_transfer_at_a_tenth_of_a_cent() -> None:
    """TIP-1010: ~50,000 gas at the base fee is 1,000 base units, $0.001."""
    assert 50_000 * tempo.BASE_FEE_PER_GAS // tempo.GAS_PRICE_SCALE == 1_000
    assert tempo.EXPIRING_NONCE_KEY == 2**256 - 1
    assert (tempo.TEMPO_TX_TYPE, tempo.FEE_PAYER_MAGIC_BYTE) == (0x76, 0x78)
