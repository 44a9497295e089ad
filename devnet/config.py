"""The devnet's settings. ``python -m devnet`` takes them as options and hands them to the
Granian worker through the environment, since the worker is a separate process that builds
the app from ``devnet.server:create_app``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from contracts.tempo import DEVNET

ENV_CHAIN_ID = "DNAH_DEVNET_CHAIN_ID"
ENV_STATE = "DNAH_DEVNET_STATE"
ENV_LOG_FORMAT = "DNAH_LOG_FORMAT"


class DevnetConfig(msgspec.Struct, frozen=True, kw_only=True):
    chain_id: int = DEVNET.chain_id
    state: Path | None = None
    """SQLite file the chain is kept in; None keeps it in memory only."""
    log_format: str | None = None
    """``json`` or ``console``; None picks by whether stderr is a terminal."""

    def to_env(self) -> dict[str, str]:
        env = {ENV_CHAIN_ID: str(self.chain_id)}
        if self.state is not None:
            env[ENV_STATE] = str(self.state)
        if self.log_format is not None:
            env[ENV_LOG_FORMAT] = self.log_format
        return env


def load_config(env: Mapping[str, str] = os.environ) -> DevnetConfig:
    state = env.get(ENV_STATE)
    return DevnetConfig(
        chain_id=int(env.get(ENV_CHAIN_ID, DEVNET.chain_id)),
        state=Path(state) if state else None,
        log_format=env.get(ENV_LOG_FORMAT) or None,
    )
