"""The part of Tempo's TIP-20 token precompile the devnet implements, at the real token
addresses: ``transfer``, ``transferWithMemo`` and the ``balanceOf``/``decimals``/``totalSupply``
reads, plus ``mint`` for the faucet.

Events are emitted exactly as Tempo's precompile emits them (``tempoxyz/tempo``
``crates/precompiles/src/tip20``): a transfer logs ``Transfer(from, to, amount)`` with from/to
as topics 1–2 and the amount as data; ``transferWithMemo`` logs that ``Transfer`` and then
``TransferWithMemo(from, to, amount, memo)`` with the memo as topic 3; a mint logs
``Transfer(0x0, to, amount)`` then ``Mint(to, amount)``. Failures revert with TIP-20's own
errors (``InsufficientBalance(available, required, token)``, ``InvalidRecipient()``).

Anything else — another selector, another address — is refused as unsupported rather than
guessed at: the devnet has no EVM, so it cannot run other contracts.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from contracts.tempo import (
    BALANCE_OF_SELECTOR,
    TIP20_DECIMALS,
    TOKENS,
    TRANSFER_SELECTOR,
    TRANSFER_TOPIC,
    TRANSFER_WITH_MEMO_SELECTOR,
    TRANSFER_WITH_MEMO_TOPIC,
    selector,
    topic,
)
from devnet.errors import unsupported

ZERO_ADDRESS = "0x" + "00" * 20
TOKEN_ADDRESSES = frozenset(token.address.lower() for token in TOKENS)

DECIMALS_SELECTOR = selector("decimals()")
TOTAL_SUPPLY_SELECTOR = selector("totalSupply()")
MINT_TOPIC = topic("Mint(address,uint256)")
INSUFFICIENT_BALANCE_ERROR = selector("InsufficientBalance(uint256,uint256,address)")
INVALID_RECIPIENT_ERROR = selector("InvalidRecipient()")

# Gas per call, on top of the transaction's base cost. A transfer totals 50,000 gas — TIP-1010's
# figure for a standard TIP-20 transfer, which its base fee prices at $0.001.
TRANSFER_GAS = 29_000
READ_GAS = 2_600
_GAS = {
    TRANSFER_SELECTOR: TRANSFER_GAS,
    TRANSFER_WITH_MEMO_SELECTOR: TRANSFER_GAS,
    BALANCE_OF_SELECTOR: READ_GAS,
    DECIMALS_SELECTOR: READ_GAS,
    TOTAL_SUPPLY_SELECTOR: READ_GAS,
}


class Log(msgspec.Struct, frozen=True):
    """An event as it appears in a receipt: lowercase address, 0x-hex topics and data."""

    address: str
    topics: tuple[str, ...]
    data: str


class Revert(Exception):
    """A call failed; ``data`` is the ABI-encoded TIP-20 error, ``reason`` its readable form."""

    def __init__(self, data: bytes, reason: str) -> None:
        super().__init__(reason)
        self.data = data
        self.reason = reason


class Ledger:
    """Token balances with changes held back until ``commit``: the base ledger wraps the
    chain's balances, and ``child()`` opens a layer that can be dropped to undo a reverted
    batch of calls while keeping, say, the fee already taken below it."""

    def __init__(self, base: Mapping[str, Mapping[str, int]], parent: Ledger | None = None) -> None:
        self._base = base
        self._parent = parent
        self.changes: dict[tuple[str, str], int] = {}

    def balance(self, token: str, holder: str) -> int:
        key = (token, holder)
        if key in self.changes:
            return self.changes[key]
        if self._parent is not None:
            return self._parent.balance(token, holder)
        return self._base.get(token, {}).get(holder, 0)

    def set(self, token: str, holder: str, amount: int) -> None:
        self.changes[(token, holder)] = amount

    def move(self, token: str, source: str, target: str, amount: int) -> None:
        """Move ``amount`` or revert with ``InsufficientBalance`` as TIP-20 does."""
        available = self.balance(token, source)
        if amount > available:
            raise Revert(
                INSUFFICIENT_BALANCE_ERROR + _word(available) + _word(amount) + _address_word(token),
                f"InsufficientBalance(available={available}, required={amount}, token={token})",
            )
        self.set(token, source, available - amount)
        self.set(token, target, self.balance(token, target) + amount)

    def total_supply(self, token: str) -> int:
        holders = set(self._base.get(token, {}))
        layer: Ledger | None = self
        while layer is not None:
            holders.update(holder for (t, holder) in layer.changes if t == token)
            layer = layer._parent
        return sum(self.balance(token, holder) for holder in holders)

    def child(self) -> Ledger:
        return Ledger(self._base, self)

    def commit(self) -> None:
        """Fold this layer's changes into its parent. A base ledger has none: the chain
        writes its changes into the balances itself (``Chain._apply``)."""
        if self._parent is not None:
            self._parent.changes.update(self.changes)
            self.changes = {}


class Call(msgspec.Struct, frozen=True):
    """One call of a transaction or ``eth_call``: lowercase target, value, calldata."""

    to: str
    value: int
    data: bytes


def call_gas(call: Call) -> int:
    """Gas the call costs, or ``RpcError`` (unsupported) if the devnet cannot run it."""
    if call.to not in TOKEN_ADDRESSES:
        raise unsupported(f"call to {call.to}, which is not a TIP-20 token this devnet has")
    gas = _GAS.get(call.data[:4])
    if gas is None:
        raise unsupported(
            f"TIP-20 function 0x{call.data[:4].hex()}; the devnet implements transfer, "
            "transferWithMemo, balanceOf, decimals and totalSupply"
        )
    return gas


def execute(ledger: Ledger, sender: str, call: Call) -> tuple[bytes, list[Log]]:
    """Run one supported call (``call_gas`` has accepted it); return its output and logs."""
    token, name, args = call.to, call.data[:4], call.data[4:]
    if name == BALANCE_OF_SELECTOR:
        (holder,) = _words(args, 1)
        return _word(ledger.balance(token, _address(holder))), []
    if name == DECIMALS_SELECTOR:
        return _word(TIP20_DECIMALS), []
    if name == TOTAL_SUPPLY_SELECTOR:
        return _word(ledger.total_supply(token)), []
    if name == TRANSFER_SELECTOR:
        to_word, amount_word = _words(args, 2)
        to, amount = _address(to_word), int.from_bytes(amount_word, "big")
        _transfer(ledger, token, sender, to, amount)
        return _word(1), [transfer_log(token, sender, to, amount)]
    to_word, amount_word, memo = _words(args, 3)
    to, amount = _address(to_word), int.from_bytes(amount_word, "big")
    _transfer(ledger, token, sender, to, amount)
    memo_log = Log(
        address=token,
        topics=(
            _hex(TRANSFER_WITH_MEMO_TOPIC),
            _hex(_address_word(sender)),
            _hex(_address_word(to)),
            _hex(memo),
        ),
        data=_hex(_word(amount)),
    )
    return b"", [transfer_log(token, sender, to, amount), memo_log]


def mint(ledger: Ledger, token: str, to: str, amount: int) -> list[Log]:
    """Create ``amount`` of ``token`` for ``to`` (the faucet's issuer role)."""
    ledger.set(token, to, ledger.balance(token, to) + amount)
    mint_log = Log(
        address=token, topics=(_hex(MINT_TOPIC), _hex(_address_word(to))), data=_hex(_word(amount))
    )
    return [transfer_log(token, ZERO_ADDRESS, to, amount), mint_log]


def transfer_log(token: str, source: str, target: str, amount: int) -> Log:
    """The ``Transfer`` event; the chain also logs one for the fee a transaction paid."""
    return Log(
        address=token,
        topics=(_hex(TRANSFER_TOPIC), _hex(_address_word(source)), _hex(_address_word(target))),
        data=_hex(_word(amount)),
    )


def _transfer(ledger: Ledger, token: str, source: str, target: str, amount: int) -> None:
    if target == ZERO_ADDRESS:
        raise Revert(INVALID_RECIPIENT_ERROR, "InvalidRecipient()")
    ledger.move(token, source, target, amount)


def _words(args: bytes, count: int) -> list[bytes]:
    """Split static ABI arguments into 32-byte words, reverting on a wrong length as a
    Solidity ABI decoder does."""
    if len(args) != 32 * count:
        raise Revert(b"", "invalid calldata length")
    return [args[32 * i : 32 * (i + 1)] for i in range(count)]


def _address(word: bytes) -> str:
    if any(word[:12]):
        raise Revert(b"", "invalid address argument")
    return "0x" + word[12:].hex()


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def _hex(data: bytes) -> str:
    return "0x" + data.hex()
