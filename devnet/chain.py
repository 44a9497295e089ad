"""The devnet's chain: it admits transactions the way a Tempo node's pool does, runs them
against the TIP-20 ledger, and seals every accepted transaction into a block of its own at
once (so ``eth_sendRawTransactionSync`` can always answer with the receipt).

Fees follow Tempo's rule exactly, so a payer's balance after a payment is predictable:

- The fee token is the transaction's ``feeToken``; if it has none, the token the transaction's
  first call transfers (when that is a TIP-20 transfer); otherwise pathUSD. The fee payer is
  the sender, or the co-signing fee payer of a sponsored transaction.
- Before the calls run, the fee payer must hold ⌈gas × maxFeePerGas / 10¹²⌉ base units of the
  fee token; that much moves to the fee manager (``0xfeec…``) and the calls see what is left.
- Afterwards the payer is refunded down to ⌈gasUsed × effectiveGasPrice / 10¹²⌉, where
  ``effectiveGasPrice = min(maxFeePerGas, baseFee + maxPriorityFeePerGas)``, the base fee is
  fixed at 20 gwei-equivalent (2×10¹⁰ attodollars), and ``gasUsed`` is fixed per call:
  21,000 + 29,000 per transfer. One transfer therefore costs exactly 1,000 base units
  ($0.001) at the base fee. The receipt ends with ``Transfer(payer, 0xfeec…, fee)`` from the
  fee token, as on Tempo.
- A transaction whose calls revert (e.g. ``InsufficientBalance``) is still mined, with status
  0 and the fee charged: a node does not refuse it, it executes and fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import rlp
from eth_hash.auto import keccak

from contracts.tempo import (
    BASE_FEE_PER_GAS,
    EXPIRING_NONCE_KEY,
    EXPIRING_NONCE_MAX_SECONDS,
    FEE_MANAGER_ADDRESS,
    GAS_PRICE_SCALE,
    PATH_USD,
    TIP20_DECIMALS,
    TOKENS,
    TRANSFER_SELECTOR,
    TRANSFER_WITH_MEMO_SELECTOR,
    selector,
)
from devnet import tip20
from devnet.errors import rejected
from devnet.state import Accounts, Block, Receipt, Transaction
from devnet.tip20 import ZERO_ADDRESS, Call, Ledger, Log, Revert
from devnet.tx import SignedTx, decode_signed

TX_BASE_GAS = 21_000
BLOCK_GAS_LIMIT = 500_000_000
VALID_BEFORE_MIN_SECONDS = 3
"""A Tempo pool refuses a ``validBefore`` this close to now: the transaction could expire
before it is included."""
FAUCET_AMOUNT = 1_000 * 10**TIP20_DECIMALS
MINT_SELECTOR = selector("mint(address,uint256)")
TRANSFER_SELECTORS = (TRANSFER_SELECTOR, TRANSFER_WITH_MEMO_SELECTOR)


def fee_units(gas: int, price: int) -> int:
    """Tempo's ``calc_gas_balance_spending``: attodollars → token base units, rounded up."""
    return -(-gas * price // GAS_PRICE_SCALE)


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of running a list of calls: output of the last call (or revert data)."""

    success: bool
    gas_used: int
    output: bytes
    logs: list[Log]
    reason: str = ""


class Chain:
    """All chain state and every operation on it. Methods are synchronous and never yield,
    so on one event loop each RPC call sees and leaves a consistent chain."""

    def __init__(
        self, accounts: Accounts, blocks: list[Block], clock: Callable[[], float] = time.time
    ) -> None:
        self.accounts = accounts
        self.blocks = blocks
        self._clock = clock
        self._by_hash = {block.hash: block.number for block in blocks}
        self._tx_index: dict[str, tuple[int, int]] = {}
        for block in blocks:
            for tx in block.transactions:
                self._tx_index[tx.hash] = (block.number, tx.index)

    @classmethod
    def create(cls, chain_id: int, clock: Callable[[], float] = time.time) -> Chain:
        """A new chain holding only its genesis block."""
        chain = cls(Accounts(chain_id=chain_id), [], clock)
        chain._seal([], [])
        return chain

    # reads -----------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self.accounts.chain_id

    @property
    def latest(self) -> Block:
        return self.blocks[-1]

    def block(self, number: int) -> Block | None:
        return self.blocks[number] if 0 <= number < len(self.blocks) else None

    def block_by_hash(self, block_hash: str) -> Block | None:
        number = self._by_hash.get(block_hash.lower())
        return None if number is None else self.blocks[number]

    def transaction(self, tx_hash: str) -> Transaction | None:
        where = self._tx_index.get(tx_hash.lower())
        return None if where is None else self.blocks[where[0]].transactions[where[1]]

    def receipt(self, tx_hash: str) -> Receipt | None:
        where = self._tx_index.get(tx_hash.lower())
        return None if where is None else self.blocks[where[0]].receipts[where[1]]

    def balance(self, token: str, holder: str) -> int:
        return self.accounts.balances.get(token.lower(), {}).get(holder.lower(), 0)

    def nonce(self, address: str, nonce_key: int = 0) -> int:
        return self.accounts.nonces.get(address.lower(), {}).get(nonce_key, 0)

    def call(self, sender: str, calls: list[Call]) -> Execution:
        """Run ``calls`` as ``sender`` without keeping any effect (``eth_call``,
        ``eth_estimateGas``, ``tempo_simulateV1``)."""
        return self._run(Ledger(self.accounts.balances), sender, calls)

    def simulate(self, blocks: list[list[tuple[str, list[Call]]]]) -> list[list[Execution]]:
        """Run transactions one after another, each seeing what the ones before it did,
        without keeping any effect (``tempo_simulateV1``). Fees are not charged."""
        ledger = Ledger(self.accounts.balances)
        return [[self._run(ledger, sender, calls) for sender, calls in block] for block in blocks]

    # writes ----------------------------------------------------------------------------------

    def submit(self, raw: bytes) -> Block:
        """Admit, execute and mine a signed transaction; return its (one-transaction) block."""
        signed = decode_signed(raw, self.chain_id)
        tx = signed.tx
        if signed.hash in self._tx_index:
            raise rejected("already known")
        calls = [Call(to="0x" + bytes(c.to).hex(), value=c.value, data=bytes(c.data)) for c in tx.calls]
        if any(call.value for call in calls):
            raise rejected("value transfer in Tempo Transaction not allowed")
        intrinsic = TX_BASE_GAS + sum(tip20.call_gas(call) for call in calls)
        if tx.gas_limit < intrinsic:
            raise rejected(f"intrinsic gas too low: have {tx.gas_limit}, want {intrinsic}")
        if tx.max_fee_per_gas < BASE_FEE_PER_GAS:
            raise rejected(
                f"max fee per gas less than block base fee: address {signed.sender}, "
                f"maxFeePerGas: {tx.max_fee_per_gas}, baseFee: {BASE_FEE_PER_GAS}"
            )
        now = int(self._clock())
        self._check_time_window(tx.valid_before, tx.valid_after, now)
        record_nonce = self._check_nonce(signed, now)
        fee_token = self._fee_token(tx.fee_token, calls)
        upfront = fee_units(tx.gas_limit, tx.max_fee_per_gas)
        available = self.balance(fee_token, signed.fee_payer)
        if available < upfront:
            raise rejected(f"insufficient fee token balance: required {upfront}, but only have {available}")

        ledger = Ledger(self.accounts.balances)
        ledger.move(fee_token, signed.fee_payer, FEE_MANAGER_ADDRESS, upfront)
        execution = self._run(ledger, signed.sender, calls)
        price = min(tx.max_fee_per_gas, BASE_FEE_PER_GAS + tx.max_priority_fee_per_gas)
        fee = fee_units(execution.gas_used, price)
        ledger.move(fee_token, FEE_MANAGER_ADDRESS, signed.fee_payer, upfront - fee)
        logs = [*execution.logs, tip20.transfer_log(fee_token, signed.fee_payer, FEE_MANAGER_ADDRESS, fee)]

        self._apply(ledger)
        record_nonce()
        number = len(self.blocks)
        mined = _transaction(signed, calls, number)
        receipt = Receipt(
            transaction_hash=signed.hash,
            block_number=number,
            index=0,
            sender=signed.sender,
            to=calls[0].to,
            success=execution.success,
            gas_used=execution.gas_used,
            cumulative_gas_used=execution.gas_used,
            effective_gas_price=price,
            fee_token=fee_token,
            fee_payer=signed.fee_payer,
            first_log_index=0,
            logs=tuple(logs),
        )
        return self._seal([mined], [receipt])

    def fund(self, address: str) -> Block:
        """The faucet: mint ``FAUCET_AMOUNT`` of every token to ``address``, one system
        transaction per token, all in one new block."""
        holder = address.lower()
        number = len(self.blocks)
        ledger = Ledger(self.accounts.balances)
        transactions: list[Transaction] = []
        receipts: list[Receipt] = []
        log_index = 0
        for index, token in enumerate(TOKENS):
            address_lc = token.address.lower()
            logs = tip20.mint(ledger, address_lc, holder, FAUCET_AMOUNT)
            data = MINT_SELECTOR + bytes(12) + bytes.fromhex(holder[2:]) + FAUCET_AMOUNT.to_bytes(32, "big")
            tx_hash = (
                "0x" + keccak(f"dnah-devnet faucet {number} {index} {address_lc} {holder}".encode()).hex()
            )
            transactions.append(
                Transaction(
                    hash=tx_hash,
                    block_number=number,
                    index=index,
                    sender=ZERO_ADDRESS,
                    chain_id=self.chain_id,
                    nonce_key=0,
                    nonce=0,
                    gas=0,
                    max_fee_per_gas=0,
                    max_priority_fee_per_gas=0,
                    calls=(Call(to=address_lc, value=0, data=data),),
                )
            )
            receipts.append(
                Receipt(
                    transaction_hash=tx_hash,
                    block_number=number,
                    index=index,
                    sender=ZERO_ADDRESS,
                    to=address_lc,
                    success=True,
                    gas_used=0,
                    cumulative_gas_used=0,
                    effective_gas_price=0,
                    fee_token=address_lc,
                    fee_payer=ZERO_ADDRESS,
                    first_log_index=log_index,
                    logs=tuple(logs),
                )
            )
            log_index += len(logs)
        self._apply(ledger)
        return self._seal(transactions, receipts)

    def set_balance(self, token: str, holder: str, amount: int) -> None:
        """Overwrite a balance (a test cheat, like anvil's ``anvil_setBalance``)."""
        self.accounts.balances.setdefault(token.lower(), {})[holder.lower()] = amount

    # internals -------------------------------------------------------------------------------

    def _run(self, ledger: Ledger, sender: str, calls: list[Call]) -> Execution:
        """Run a batch atomically: either every call's effects reach ``ledger`` or none do."""
        gas = TX_BASE_GAS + sum(tip20.call_gas(call) for call in calls)
        batch = ledger.child()
        output, logs = b"", []
        for call in calls:
            try:
                output, call_logs = tip20.execute(batch, sender.lower(), call)
            except Revert as revert:
                return Execution(
                    success=False, gas_used=gas, output=revert.data, logs=[], reason=revert.reason
                )
            logs.extend(call_logs)
        batch.commit()
        return Execution(success=True, gas_used=gas, output=output, logs=logs)

    def _check_time_window(self, valid_before: int | None, valid_after: int | None, now: int) -> None:
        if valid_before is not None and valid_before <= now + VALID_BEFORE_MIN_SECONDS:
            raise rejected(
                f"'valid_before' {valid_before} is too close to current time "
                f"(min allowed: {now + VALID_BEFORE_MIN_SECONDS})"
            )
        if valid_after is not None and valid_after > now:
            raise rejected(
                f"transaction not valid yet: current block timestamp {now} < validAfter {valid_after} "
                "(dnah-devnet does not queue future transactions)"
            )

    def _check_nonce(self, signed: SignedTx, now: int) -> Callable[[], None]:
        """Check the 2D nonce; return what records its use once the transaction is mined.

        Under the expiring nonce key (2²⁵⁶−1) the nonce is only a discriminator — viem puts
        a random 48-bit value there, pympp 0 — and replay protection is the seen-set keyed by
        ``replay_id`` until ``validBefore``. Any other key is a sequential lane; key 0 is the
        protocol nonce ``eth_getTransactionCount`` reports. The devnet has no queue, so only
        the next nonce of a lane is accepted."""
        tx = signed.tx
        if tx.nonce_key == EXPIRING_NONCE_KEY:
            if tx.valid_before is None:
                raise rejected("expiring nonce transaction requires valid_before to be set")
            if tx.valid_before > now + EXPIRING_NONCE_MAX_SECONDS:
                raise rejected(
                    f"expiring nonce valid_before ({tx.valid_before}) too far in the future: must be within "
                    f"{EXPIRING_NONCE_MAX_SECONDS}s of block timestamp ({now}), "
                    f"max allowed is {now + EXPIRING_NONCE_MAX_SECONDS}"
                )
            seen = self.accounts.expiring
            for replay_id in [key for key, until in seen.items() if until <= now]:
                del seen[replay_id]
            if signed.replay_id in seen:
                raise rejected("nonce manager error: expiring nonce transaction already seen (replay)")
            valid_before = tx.valid_before
            return lambda: seen.__setitem__(signed.replay_id, valid_before)
        expected = self.nonce(signed.sender, tx.nonce_key)
        if tx.nonce < expected:
            raise rejected(f"nonce too low: next nonce {expected}, tx nonce {tx.nonce}")
        if tx.nonce > expected:
            raise rejected(
                f"nonce too high: next nonce {expected}, tx nonce {tx.nonce} "
                "(dnah-devnet does not queue future nonces)"
            )
        nonces = self.accounts.nonces
        return lambda: nonces.setdefault(signed.sender, {}).__setitem__(tx.nonce_key, expected + 1)

    def _fee_token(self, fee_token: bytes | None, calls: list[Call]) -> str:
        if fee_token:
            token = "0x" + bytes(fee_token).hex()
            if token not in tip20.TOKEN_ADDRESSES:
                raise rejected(f"fee token {token} is not a TIP-20 token; fee tokens must be TIP-20 tokens")
            return token
        first = calls[0]
        if first.to in tip20.TOKEN_ADDRESSES and first.data[:4] in TRANSFER_SELECTORS:
            return first.to
        return PATH_USD.address.lower()

    def _apply(self, ledger: Ledger) -> None:
        for (token, holder), amount in ledger.changes.items():
            self.accounts.balances.setdefault(token, {})[holder] = amount

    def _seal(self, transactions: list[Transaction], receipts: list[Receipt]) -> Block:
        number = len(self.blocks)
        parent = self.blocks[-1] if self.blocks else None
        parent_hash = parent.hash if parent else "0x" + "00" * 32
        timestamp = max(parent.timestamp if parent else 0, int(self._clock()))
        header = [
            bytes.fromhex(parent_hash[2:]),
            number,
            timestamp,
            self.chain_id,
            [bytes.fromhex(tx.hash[2:]) for tx in transactions],
        ]
        block = Block(
            number=number,
            hash="0x" + keccak(rlp.encode(header)).hex(),
            parent_hash=parent_hash,
            timestamp=timestamp,
            gas_used=sum(receipt.gas_used for receipt in receipts),
            transactions=tuple(transactions),
            receipts=tuple(receipts),
        )
        self.blocks.append(block)
        self._by_hash[block.hash] = number
        for tx in transactions:
            self._tx_index[tx.hash] = (number, tx.index)
        return block


def _transaction(signed: SignedTx, calls: list[Call], block_number: int) -> Transaction:
    tx = signed.tx
    sig = tx.sender_signature
    fee_payer_sig = tx.fee_payer_signature
    return Transaction(
        hash=signed.hash,
        block_number=block_number,
        index=0,
        sender=signed.sender,
        chain_id=tx.chain_id,
        nonce_key=tx.nonce_key,
        nonce=tx.nonce,
        gas=tx.gas_limit,
        max_fee_per_gas=tx.max_fee_per_gas,
        max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
        calls=tuple(calls),
        access_list=tuple(
            ("0x" + bytes(item.address).hex(), tuple("0x" + bytes(key).hex() for key in item.storage_keys))
            for item in tx.access_list
        ),
        valid_before=tx.valid_before,
        valid_after=tx.valid_after,
        fee_token="0x" + bytes(tx.fee_token).hex() if tx.fee_token else None,
        signature=(sig.v - 27, sig.r, sig.s),
        fee_payer_signature=None
        if fee_payer_sig is None
        else (fee_payer_sig.v, fee_payer_sig.r, fee_payer_sig.s),
    )
