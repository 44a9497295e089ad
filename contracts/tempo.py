"""The Tempo chain as dnah sees it: networks, stablecoins, and the on-chain constants that the
gateway (which verifies payments) and the devnet (which stands in for the chain) must agree on.

Where the values come from:

- Chain ids and RPC URLs: Tempo's published networks, as hard-coded in pympp 0.16
  (``mpp/methods/tempo/_defaults.py``) and mppx 0.11. Mainnet is 4217, the "Moderato" testnet
  42431; 1337 is the id of Tempo's own localnet image (viem ``tempoLocalnet``), which dnah's
  devnet reuses so SDKs treat it as a local Tempo chain.
- Token addresses: the TIP-20 precompiles at ``0x20c0…``. pathUSD is Tempo's native stablecoin
  (the default fee token); USDC.e is bridged USDC, the default charge currency on mainnet.
  Every TIP-20 token has 6 decimals, so one base unit is $0.000001.
- ABI fragments: Tempo's TIP-20 interface (``tempoxyz/tempo``
  ``crates/contracts/src/precompiles/tip20.rs``). Selectors and topics are computed here from
  their Solidity signatures with keccak-256; ``tests/contracts/test_tempo.py`` pins them to
  the literal values published in the MPP specs so a typo in a signature cannot go unnoticed.
- Fees: TIP-1010 (mainnet gas parameters) sets the base fee to 2×10¹⁰ attodollars per gas, and
  Tempo converts gas cost to token units by dividing by 10¹² (attodollars → microdollars),
  rounding up (``calc_gas_balance_spending`` in ``tempo-primitives``). Fees are collected by the
  fee manager precompile at ``0xfeec…``.
- Transactions: type ``0x76`` is the Tempo transaction; ``0x78`` is the magic byte a fee payer
  signs under. Nonce key 2²⁵⁶−1 selects an expiring nonce (TIP-1009), whose ``validBefore``
  may lie at most 300 s ahead (since hardfork T11).

This module imports nothing else from the repository.
"""

from __future__ import annotations

import msgspec
from eth_hash.auto import keccak

__all__ = [
    "BALANCE_OF_SELECTOR",
    "BASE_FEE_PER_GAS",
    "DEVNET",
    "EXPIRING_NONCE_KEY",
    "EXPIRING_NONCE_MAX_SECONDS",
    "FEE_MANAGER_ADDRESS",
    "FEE_PAYER_MAGIC_BYTE",
    "GAS_PRICE_SCALE",
    "MAINNET",
    "MAINNET_RPC_URL",
    "PATH_USD",
    "PRESETS",
    "TEMPO_TX_TYPE",
    "TESTNET",
    "TESTNET_RPC_URL",
    "TIP20_DECIMALS",
    "TOKENS",
    "TRANSFER_SELECTOR",
    "TRANSFER_TOPIC",
    "TRANSFER_WITH_MEMO_SELECTOR",
    "TRANSFER_WITH_MEMO_TOPIC",
    "USDC_E",
    "ChainPreset",
    "Token",
    "selector",
    "topic",
]


class ChainPreset(msgspec.Struct, frozen=True, kw_only=True):
    """A Tempo network a payment can settle on."""

    name: str
    chain_id: int
    rpc_url: str


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A TIP-20 stablecoin. ``address`` is spelled as the SDKs spell it, because the address
    string becomes part of the HMAC-bound challenge; compare addresses case-insensitively."""

    symbol: str
    address: str
    decimals: int


# networks ------------------------------------------------------------------------------------

MAINNET_RPC_URL = "https://rpc.tempo.xyz"
TESTNET_RPC_URL = "https://rpc.moderato.tempo.xyz"

MAINNET = ChainPreset(name="mainnet", chain_id=4217, rpc_url=MAINNET_RPC_URL)
TESTNET = ChainPreset(name="moderato", chain_id=42431, rpc_url=TESTNET_RPC_URL)
DEVNET = ChainPreset(name="devnet", chain_id=1337, rpc_url="http://127.0.0.1:8545")

PRESETS: dict[str, ChainPreset] = {preset.name: preset for preset in (MAINNET, TESTNET, DEVNET)}

# tokens --------------------------------------------------------------------------------------

TIP20_DECIMALS = 6

PATH_USD = Token(symbol="pathUSD", address="0x20c0000000000000000000000000000000000000", decimals=6)
USDC_E = Token(symbol="USDC.e", address="0x20C000000000000000000000b9537d11c60E8b50", decimals=6)
TOKENS: tuple[Token, ...] = (PATH_USD, USDC_E)

# TIP-20 ABI ----------------------------------------------------------------------------------


def selector(signature: str) -> bytes:
    """The 4-byte function selector of a Solidity signature such as ``transfer(address,uint256)``."""
    return keccak(signature.encode())[:4]


def topic(signature: str) -> bytes:
    """The 32-byte ``topics[0]`` of a Solidity event signature."""
    return keccak(signature.encode())


TRANSFER_SELECTOR = selector("transfer(address,uint256)")
TRANSFER_WITH_MEMO_SELECTOR = selector("transferWithMemo(address,uint256,bytes32)")
BALANCE_OF_SELECTOR = selector("balanceOf(address)")

# Transfer(address indexed from, address indexed to, uint256 amount)
TRANSFER_TOPIC = topic("Transfer(address,address,uint256)")
# TransferWithMemo(address indexed from, address indexed to, uint256 amount, bytes32 indexed memo)
TRANSFER_WITH_MEMO_TOPIC = topic("TransferWithMemo(address,address,uint256,bytes32)")

# transactions and fees -----------------------------------------------------------------------

TEMPO_TX_TYPE = 0x76
FEE_PAYER_MAGIC_BYTE = 0x78

EXPIRING_NONCE_KEY = 2**256 - 1
EXPIRING_NONCE_MAX_SECONDS = 300

BASE_FEE_PER_GAS = 20_000_000_000
"""Attodollars (10⁻¹⁸ USD) per gas: a ~50,000-gas TIP-20 transfer costs $0.001."""
GAS_PRICE_SCALE = 10**12
"""Attodollars per token base unit: fee in base units = ⌈gas × price / GAS_PRICE_SCALE⌉."""
FEE_MANAGER_ADDRESS = "0xfeec000000000000000000000000000000000000"
