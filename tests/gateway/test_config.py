"""The gateway's settings: defaults, every accepted variable, and clear refusals at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, load_config
from tests.gateway.servers import gateway_env, granian
from tests.support import wait_for


def test_defaults() -> None:
    assert load_config({}) == GatewayConfig(
        host="127.0.0.1",
        port=3000,
        core_url="http://127.0.0.1:3100",
        mode="bearer",
        upstream_timeout_s=300.0,
        log_format=None,
    )


def test_every_variable_is_read() -> None:
    config = load_config(
        {
            "DNAH_GATEWAY_HOST": "0.0.0.0",
            "DNAH_GATEWAY_PORT": "8080",
            "DNAH_CORE_URL": "https://core.internal:9443/",
            "DNAH_GATEWAY_MODE": "bearer",
            "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S": "2.5",
            "DNAH_LOG_FORMAT": "console",
        }
    )
    assert config == GatewayConfig(
        host="0.0.0.0",
        port=8080,
        core_url="https://core.internal:9443",
        mode="bearer",
        upstream_timeout_s=2.5,
        log_format="console",
    )


def test_empty_values_mean_default() -> None:
    assert load_config({"DNAH_GATEWAY_PORT": "", "DNAH_LOG_FORMAT": ""}) == load_config({})


TIMEOUT = "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DNAH_GATEWAY_MODE", "open", "DNAH_GATEWAY_MODE must be bearer, payment or both, got 'open'"),
        ("DNAH_GATEWAY_PORT", "http", "DNAH_GATEWAY_PORT must be an integer, got 'http'"),
        ("DNAH_GATEWAY_PORT", "70000", "DNAH_GATEWAY_PORT must be between 1 and 65535, got 70000"),
        ("DNAH_GATEWAY_HOST", "a b", "DNAH_GATEWAY_HOST must be an address or host name"),
        ("DNAH_CORE_URL", "127.0.0.1:3100", "DNAH_CORE_URL must look like http://host:port"),
        ("DNAH_CORE_URL", "ftp://core", "DNAH_CORE_URL must look like http://host:port"),
        ("DNAH_CORE_URL", "http://core/api", "DNAH_CORE_URL must look like http://host:port"),
        ("DNAH_CORE_URL", "http://core:99999", "DNAH_CORE_URL must look like http://host:port"),
        ("DNAH_CORE_URL", "http://user:pw@core", "DNAH_CORE_URL must look like http://host:port"),
        ("DNAH_GATEWAY_UPSTREAM_TIMEOUT_S", "soon", "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a number"),
        ("DNAH_GATEWAY_UPSTREAM_TIMEOUT_S", "0", "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a positive number"),
        (
            "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S",
            "-3",
            "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a positive number",
        ),
        (
            "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S",
            "inf",
            "DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a positive number",
        ),
        ("DNAH_LOG_FORMAT", "xml", "DNAH_LOG_FORMAT must be json or console, got 'xml'"),
    ],
)
def test_bad_values_are_named(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    assert str(caught.value).startswith(expected)


def test_bad_config_stops_the_server_at_start(tmp_path: Path) -> None:
    """Granian gives up when the factory raises: the process exits and says why."""
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
