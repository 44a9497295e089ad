"""``python -m devnet`` / ``dnah devnet``: run the devnet in the foreground until SIGINT or
SIGTERM. Use ``main(argv)`` standalone, or ``add_parser(subparsers)`` to mount it as a
subcommand of another argparse CLI (it sets ``func``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from contracts.tempo import DEVNET
from devnet.config import ENV_STATE, DevnetConfig
from devnet.state import StateError, Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8545

DESCRIPTION = (
    "A local stand-in for the Tempo chain: TIP-20 pathUSD and USDC.e, signed 0x76 transactions, "
    "and the JSON-RPC methods MPP clients and servers use. Not a Tempo node."
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("devnet", help="run a local stand-in Tempo chain", description=DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet", description=DESCRIPTION)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve until stopped. Granian runs one worker: the chain lives in its memory."""
    # Imported here so that mounting the subcommand in ``dnah`` costs nothing until it runs.
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    config = DevnetConfig(chain_id=args.chain_id, state=args.state, log_format=args.log_format)
    if config.state is not None:
        try:
            store = Store(config.state)
            try:
                store.check(config.chain_id)
            finally:
                store.close()
        except StateError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    os.environ.pop(ENV_STATE, None)  # "in memory" must not inherit a state file from our caller
    os.environ.update(config.to_env())
    print(
        f"dnah-devnet (a stand-in for Tempo, chain id {config.chain_id}) on http://{args.host}:{args.port}"
        f" — state: {config.state or 'in memory'}",
        file=sys.stderr,
        flush=True,
    )
    Granian(
        "devnet.server:create_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels.warning,
    ).serve()
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--chain-id",
        type=int,
        default=DEVNET.chain_id,
        help=f"chain id (default {DEVNET.chain_id}, Tempo localnet's)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="SQLite file to keep the chain in across restarts (default: memory)",
    )
    parser.add_argument("--log-format", choices=("json", "console"), default=None, help="log line format")
