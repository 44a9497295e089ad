"""Payment settings: presets per network, every variable read, and start-up refusals that name
the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.tempo import PATH_USD, USDC_E
from gateway.config import ConfigError, PaymentConfig, load_config
from pricing import default_table_path
from tests.gateway.servers import gateway_env, granian
from tests.support import wait_for

RECIPIENT = "0x742d35Cc6634c0532925a3b844bC9e7595F8fE00"
REQUIRED = {
    "DNAH_GATEWAY_MODE": "payment",
    "DNAH_PAYMENT_RECIPIENT": RECIPIENT,
    "DNAH_MPP_SECRET": "s" * 32,
    "DNAH_EDGE_TOKEN": "e" * 32,
    "DNAH_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def payment(**env: str) -> PaymentConfig:
    config = load_config({**REQUIRED, **env})
    assert config.payment is not None
    return config.payment


def test_bearer_mode_has_no_payment_settings() -> None:
    assert load_config({}).payment is None
    assert load_config({"DNAH_GATEWAY_MODE": "bearer", "DNAH_MPP_SECRET": "short"}).payment is None


def test_defaults_are_mainnet_usdc() -> None:
    config = load_config(REQUIRED)
    assert config.mode == "payment"
    assert config.payment == PaymentConfig(
        network="mainnet",
        chain_id=4217,
        rpc_url="https://rpc.tempo.xyz",
        currencies=(USDC_E.address,),
        recipient=RECIPIENT,
        realm="localhost",
        secret="s" * 32,
        edge_token="e" * 32,
        redis_url="redis://127.0.0.1:6379/0",
        pricing_file=default_table_path(),
        public_url=None,
        expires_s=300,
        max_body_bytes=32 * 1024 * 1024,
        rpc_timeout_s=10.0,
        confirmation_timeout_s=30.0,
    )


@pytest.mark.parametrize(
    ("network", "chain_id", "rpc_url", "currency"),
    [
        ("mainnet", 4217, "https://rpc.tempo.xyz", USDC_E.address),
        ("testnet", 42431, "https://rpc.moderato.tempo.xyz", PATH_USD.address),
        ("devnet", 1337, "http://127.0.0.1:8545", PATH_USD.address),
    ],
)
def test_network_presets(network: str, chain_id: int, rpc_url: str, currency: str) -> None:
    settings = payment(DNAH_PAYMENT_NETWORK=network)
    assert (settings.chain_id, settings.rpc_url, settings.currencies) == (chain_id, rpc_url, (currency,))


def test_every_variable_is_read(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text('version = 1\ndefault = "0.0001"\n')
    settings = payment(
        DNAH_GATEWAY_MODE="both",
        DNAH_PAYMENT_NETWORK="testnet",
        DNAH_PAYMENT_RPC_URL="http://127.0.0.1:9999",
        DNAH_PAYMENT_CURRENCIES=f"{PATH_USD.address}, {USDC_E.address},{USDC_E.address.lower()}",
        DNAH_PAYMENT_REALM="api.example.com",
        DNAH_PRICING_FILE=str(table),
        DNAH_PUBLIC_URL="https://api.example.com/",
        DNAH_PAYMENT_EXPIRES_S="120",
        DNAH_PAYMENT_MAX_BODY_BYTES="1024",
        DNAH_PAYMENT_RPC_TIMEOUT_S="2.5",
        DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S="12",
    )
    assert settings.chain_id == 42431 and settings.rpc_url == "http://127.0.0.1:9999"
    assert settings.currencies == (PATH_USD.address, USDC_E.address)
    assert settings.realm == "api.example.com" and settings.public_url == "https://api.example.com"
    assert settings.pricing_file == table
    assert (settings.expires_s, settings.max_body_bytes) == (120, 1024)
    assert (settings.rpc_timeout_s, settings.confirmation_timeout_s) == (2.5, 12.0)


def test_realm_defaults_to_the_public_host() -> None:
    assert payment(DNAH_PUBLIC_URL="https://pay.example.com").realm == "pay.example.com"
    assert payment(DNAH_PUBLIC_URL="http://127.0.0.1:3000").realm == "127.0.0.1:3000"


def test_secrets_never_show_in_a_repr() -> None:
    text = repr(payment())
    assert "s" * 32 not in text and "e" * 32 not in text


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DNAH_GATEWAY_MODE", "open", "DNAH_GATEWAY_MODE must be bearer, payment or both, got 'open'"),
        ("DNAH_PAYMENT_RECIPIENT", "", "DNAH_PAYMENT_RECIPIENT is required"),
        ("DNAH_PAYMENT_RECIPIENT", "0x1234", "DNAH_PAYMENT_RECIPIENT must be a 0x address"),
        ("DNAH_MPP_SECRET", "", "DNAH_MPP_SECRET is required"),
        ("DNAH_MPP_SECRET", "short", "DNAH_MPP_SECRET must be at least 32 bytes"),
        ("DNAH_EDGE_TOKEN", "", "DNAH_EDGE_TOKEN is required"),
        ("DNAH_EDGE_TOKEN", "short", "DNAH_EDGE_TOKEN must be at least 32 characters"),
        ("DNAH_REDIS_URL", "", "DNAH_REDIS_URL is required"),
        ("DNAH_REDIS_URL", "http://x", "DNAH_REDIS_URL must be a redis://"),
        ("DNAH_PAYMENT_NETWORK", "ropsten", "DNAH_PAYMENT_NETWORK must be mainnet, testnet or devnet"),
        ("DNAH_PAYMENT_RPC_URL", "localhost:8545", "DNAH_PAYMENT_RPC_URL must be an http(s) URL"),
        ("DNAH_PAYMENT_CURRENCIES", "pathUSD", "DNAH_PAYMENT_CURRENCIES must be a comma-separated list"),
        ("DNAH_PAYMENT_REALM", 'a"b', "DNAH_PAYMENT_REALM must be visible ASCII"),
        ("DNAH_PUBLIC_URL", "example.com", "DNAH_PUBLIC_URL must be an http(s) URL"),
        ("DNAH_PRICING_FILE", "/nonexistent.toml", "DNAH_PRICING_FILE must name a readable price table"),
        ("DNAH_PAYMENT_EXPIRES_S", "5m", "DNAH_PAYMENT_EXPIRES_S must be an integer"),
        ("DNAH_PAYMENT_EXPIRES_S", "0", "DNAH_PAYMENT_EXPIRES_S must be a positive integer"),
        ("DNAH_PAYMENT_MAX_BODY_BYTES", "-1", "DNAH_PAYMENT_MAX_BODY_BYTES must be a positive integer"),
        ("DNAH_PAYMENT_RPC_TIMEOUT_S", "nan", "DNAH_PAYMENT_RPC_TIMEOUT_S must be a positive number"),
        ("DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S", "x", "DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S must be a number"),
    ],
)
def test_bad_values_are_named(name: str, value: str, expected: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != name}
    if value:
        env[name] = value
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_missing_setting_stops_the_server_at_start(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    proc = granian(
        "gateway.app:create_app", gateway_env("http://127.0.0.1:1", DNAH_GATEWAY_MODE="payment"), log
    )
    try:
        returncode = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert returncode != 0
    wait_for(
        lambda: "ConfigError: DNAH_PAYMENT_RECIPIENT is required" in log.read_text(),
        what="the start-up error in the log",
    )


def test_a_broken_price_table_stops_the_server_at_start(tmp_path: Path) -> None:
    table = tmp_path / "prices.toml"
    table.write_text('version = 1\ndefault = "cheap"\n')
    log = tmp_path / "gateway.log"
    env = gateway_env("http://127.0.0.1:1", **REQUIRED, DNAH_PRICING_FILE=str(table))
    env["DNAH_REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing kept there: a cold start
    proc = granian("gateway.app:create_app", env, log)
    try:
        returncode = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert returncode != 0
    wait_for(
        lambda: f"ConfigError: DNAH_PRICING_FILE: {table}:2:" in log.read_text(),
        what="the start-up error in the log",
    )
