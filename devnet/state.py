"""What the devnet remembers, and the SQLite file it can keep it in.

In memory the chain is ``Accounts`` (balances, nonces, recently seen expiring nonces) plus the
list of ``Block``s, each carrying its transactions and receipts. With ``--state FILE`` every
change is also written to SQLite before the RPC call that made it answers — one row per block
and one row holding the accounts snapshot, in one SQLite transaction — so ``make up`` with the
devnet survives restarts and even a SIGKILL loses nothing that a client was told happened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from devnet.tip20 import Call, Log


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """A mined transaction. ``signature`` and ``fee_payer_signature`` are ``(yParity, r, s)``;
    the faucet's mints are system transactions without a signature."""

    hash: str
    block_number: int
    index: int
    sender: str
    chain_id: int
    nonce_key: int
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    calls: tuple[Call, ...]
    access_list: tuple[tuple[str, tuple[str, ...]], ...] = ()
    valid_before: int | None = None
    valid_after: int | None = None
    fee_token: str | None = None
    signature: tuple[int, int, int] | None = None
    fee_payer_signature: tuple[int, int, int] | None = None


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    transaction_hash: str
    block_number: int
    index: int
    sender: str
    to: str
    success: bool
    gas_used: int
    cumulative_gas_used: int
    effective_gas_price: int
    fee_token: str
    fee_payer: str
    first_log_index: int
    logs: tuple[Log, ...]


class Block(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    gas_used: int
    transactions: tuple[Transaction, ...] = ()
    receipts: tuple[Receipt, ...] = ()


class Accounts(msgspec.Struct, kw_only=True):
    """Balances (token → holder → base units), next nonces (sender → nonce key → nonce) and
    the expiring-nonce replay set (replay id → ``validBefore``). Addresses are lowercase."""

    chain_id: int
    balances: dict[str, dict[str, int]] = {}
    nonces: dict[str, dict[int, int]] = {}
    expiring: dict[str, int] = {}


class StateError(Exception):
    """The state file cannot be used: not a devnet state file, or another chain's."""


class _ChainOnly(msgspec.Struct):
    chain_id: int


class Store:
    """The ``--state`` SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, body BLOB NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS accounts"
                " (id INTEGER PRIMARY KEY CHECK (id = 0), body BLOB NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"{path} is not a devnet state file (SQLite): {exc}") from None
        self._encoder = msgspec.json.Encoder()

    def check(self, chain_id: int) -> None:
        """Raise ``StateError`` unless the file is new or holds chain ``chain_id``."""
        row = self._db.execute("SELECT body FROM accounts WHERE id = 0").fetchone()
        held = None if row is None else msgspec.json.decode(row[0], type=_ChainOnly).chain_id
        if held is not None and held != chain_id:
            raise StateError(
                f"the state file holds chain {held}, not chain {chain_id}"
                " (use that --chain-id, or another file)"
            )

    def load(self, chain_id: int) -> tuple[Accounts, list[Block]] | None:
        """The saved chain, or None for a new file. Refuses a file of another chain."""
        self.check(chain_id)
        row = self._db.execute("SELECT body FROM accounts WHERE id = 0").fetchone()
        if row is None:
            return None
        accounts = msgspec.json.decode(row[0], type=Accounts)
        decoder = msgspec.json.Decoder(Block)
        blocks = [
            decoder.decode(body) for (body,) in self._db.execute("SELECT body FROM blocks ORDER BY number")
        ]
        return accounts, blocks

    def save(self, accounts: Accounts, block: Block | None = None) -> None:
        """Write the accounts snapshot and, if given, one new block, atomically."""
        with self._db:
            self._db.execute("BEGIN")
            if block is not None:
                self._db.execute(
                    "INSERT INTO blocks (number, body) VALUES (?, ?)",
                    (block.number, self._encoder.encode(block)),
                )
            self._db.execute(
                "INSERT INTO accounts (id, body) VALUES (0, ?)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (self._encoder.encode(accounts),),
            )

    def close(self) -> None:
        self._db.close()
