"""``dnah wallet``: a throwaway Tempo key, devnet/testnet faucet money, and a balance.

- ``dnah wallet new [--key-file F]`` prints a fresh private key and its address (or writes
  the key to F, mode 0600, and prints only the address).
- ``dnah wallet fund ADDRESS [--rpc URL]`` asks the chain's faucet (``tempo_fundAddress``,
  answered by ``python -m devnet`` and by Tempo's testnet and localnet) for test dollars.
- ``dnah wallet balance ADDRESS [--rpc URL] [--token ADDR]`` prints a TIP-20 balance
  (pathUSD by default).

The RPC defaults to ``$DNAH_RPC_URL``, else the devnet's ``http://127.0.0.1:8545``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx

from cli.request_cmd import NETWORKS, RPC_ENV, TOKEN_NAMES, usd
from contracts.tempo import BALANCE_OF_SELECTOR
from contracts.tempo import PATH_USD as PATH_USD_TOKEN

PATH_USD = PATH_USD_TOKEN.address
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class WalletError(Exception):
    pass


def new_key() -> tuple[str, str]:
    """A fresh secp256k1 key from the OS's CSPRNG: ``(private key hex, checksummed address)``."""
    from eth_account import Account

    key = "0x" + secrets.token_bytes(32).hex()
    return key, str(Account.from_key(key).address)


def rpc(url: str, method: str, params: list[Any], timeout_s: float = 30.0) -> Any:
    """One JSON-RPC call; a JSON-RPC error becomes a ``WalletError``."""
    reply = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=timeout_s
    )
    reply.raise_for_status()
    body = reply.json()
    if body.get("error"):
        error = body["error"]
        raise WalletError(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")
    return body.get("result")


def balance(url: str, address: str, token: str = PATH_USD) -> int:
    """``address``'s balance of the TIP-20 ``token``, in base units."""
    data = "0x" + BALANCE_OF_SELECTOR.hex() + address.lower().removeprefix("0x").rjust(64, "0")
    return int(rpc(url, "eth_call", [{"to": token, "data": data}, "latest"]), 16)


def fund(url: str, address: str) -> Any:
    """Ask the faucet to fund ``address``; returns what the node answered (transaction hashes)."""
    return rpc(url, "tempo_fundAddress", [address])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``wallet`` (``new``, ``fund``, ``balance``) on a ``dnah`` sub-command parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "wallet",
        help="make a key, get test money, read a balance",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="wallet_command", required=True)
    new = sub.add_parser("new", help="print a fresh private key and its address")
    new.add_argument("--key-file", type=Path, metavar="FILE", help="write the key here (0600) instead")
    new.set_defaults(func=cmd_new)
    default_rpc = f"${RPC_ENV}, else {NETWORKS['devnet'].rpc_url}"
    fund_p = sub.add_parser("fund", help="fund an address from the chain's faucet (devnet, testnet)")
    fund_p.add_argument("address", metavar="ADDRESS")
    fund_p.add_argument("--rpc", metavar="URL", help=f"JSON-RPC URL (default: {default_rpc})")
    fund_p.set_defaults(func=cmd_fund)
    bal = sub.add_parser("balance", help="print an address's token balance")
    bal.add_argument("address", metavar="ADDRESS")
    bal.add_argument("--rpc", metavar="URL", help=f"JSON-RPC URL (default: {default_rpc})")
    bal.add_argument("--token", default=PATH_USD, metavar="ADDR", help="TIP-20 token (default: pathUSD)")
    bal.set_defaults(func=cmd_balance)
    return p


def _rpc_url(args: argparse.Namespace) -> str:
    return str(args.rpc or os.environ.get(RPC_ENV) or NETWORKS["devnet"].rpc_url)


def _address(raw: str) -> str:
    if not _ADDRESS.fullmatch(raw):
        raise WalletError(f"not an address (0x and 40 hex digits): {raw!r}")
    return raw


def cmd_new(args: argparse.Namespace) -> int:
    key, address = new_key()
    if args.key_file is None:
        print(f"address     {address}\nprivate key {key}")
        print(f"(export DNAH_PRIVATE_KEY={key} to pay with `dnah request`)", file=sys.stderr)
        return 0
    try:
        fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"dnah wallet: {args.key_file} exists; not overwriting a key", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    print(f"address     {address}\nkey file    {args.key_file}")
    return 0


def cmd_fund(args: argparse.Namespace) -> int:
    url = _rpc_url(args)
    try:
        result = fund(url, _address(args.address))
    except (WalletError, httpx.HTTPError, ValueError) as exc:
        print(f"dnah wallet fund: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"funded {args.address}: {json.dumps(result)}")
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    url = _rpc_url(args)
    try:
        amount = balance(url, _address(args.address), _address(args.token))
    except (WalletError, httpx.HTTPError, ValueError) as exc:
        print(f"dnah wallet balance: {url}: {exc}", file=sys.stderr)
        return 1
    name = TOKEN_NAMES.get(args.token.lower(), args.token)
    print(f"{usd(amount)} {name} ({amount} base units)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cli.wallet_cmd …``: the command without the rest of ``dnah``."""
    parser = argparse.ArgumentParser(prog="dnah")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["wallet", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
