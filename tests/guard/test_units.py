"""The guard's pure parts: the JSON depth scan, content types, the settings loader, the
per-client count."""

from __future__ import annotations

import json

import pytest

from guard.clients import ClientLimiter
from guard.config import ConfigError, load_guard_config
from guard.json_body import is_json_type, nesting_depth


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[[[[[{{{{{"}', 1),  # brackets inside strings are not structure
        (b'["\\"[[[[", [[]]]', 3),  # nor after an escaped quote
        (b"[" * 1000 + b"]" * 1000, 1000),
    ],
)
def test_nesting_depth(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth


def test_nesting_depth_agrees_with_the_structure() -> None:
    value: object = "]}[{"
    for level in range(70):
        value = [value, "[["] if level % 2 else {"k": value, "{": "}"}
    assert nesting_depth(json.dumps(value).encode()) == 70


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"application/problem+json", True),
        (b"application/connect+json", False),  # Connect-RPC envelopes: binary-framed
        (b"Application/Connect+JSON; charset=utf-8", False),
        (b"text/plain", False),
        (b"application/octet-stream", False),
        (b"", False),
    ],
)
def test_json_content_types(content_type: bytes, is_json: bool) -> None:
    assert is_json_type(content_type) is is_json


def test_defaults_differ_per_process_only_in_the_client_cap() -> None:
    gateway, core, hostd = (load_guard_config({}, p) for p in ("gateway", "core", "hostd"))
    assert (gateway.max_per_client, core.max_per_client, hostd.max_per_client) == (64, 256, 256)
    assert gateway.body_timeout_s == core.body_timeout_s == 20.0
    assert gateway.json_max_depth == 64


def test_a_process_variable_overrides_the_shared_one() -> None:
    env = {
        "DNAH_HTTP_BODY_TIMEOUT_S": "7",
        "DNAH_CORE_HTTP_BODY_TIMEOUT_S": "3",
        "DNAH_HTTP_JSON_MAX_MB": "2",
    }
    assert load_guard_config(env, "core").body_timeout_s == 3
    assert load_guard_config(env, "gateway").body_timeout_s == 7
    assert load_guard_config(env, "hostd").json_max_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DNAH_HTTP_HEADER_TIMEOUT_S", "61"),  # Granian's maximum is 60 s
        ("DNAH_HTTP_HEADER_BUFFER_KB", "4"),  # Granian's minimum is 8 KiB
        ("DNAH_HTTP_BODY_TIMEOUT_S", "0"),
        ("DNAH_GATEWAY_HTTP_MAX_PER_CLIENT", "lots"),
    ],
)
def test_a_bad_value_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_guard_config({name: value}, "gateway")


def test_limiter_counts_per_address_and_releases() -> None:
    limiter = ClientLimiter(2)
    with limiter.admit("a") as first, limiter.admit("a") as second, limiter.admit("a") as third:
        assert (first, second, third) == (True, True, False)
        with limiter.admit("b") as other:
            assert other
        assert limiter.in_flight("a") == 2
    assert limiter.in_flight("a") == 0
    with limiter.admit("a") as again:
        assert again
