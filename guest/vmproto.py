"""The guest's reading of ``contracts/vm.py``: boot parameters and control lines, stdlib only.

vminit runs on the template's bare python3, so it cannot import msgspec or ``contracts``;
this module parses the same formats by hand and checks the same constraints.
``tests/guest/test_vminit.py`` feeds it what the host's types produce (and back), so the two
cannot drift apart unnoticed.
"""

from __future__ import annotations

import ipaddress
import json
import re

CONTROL_PORT = 53
CMDLINE_PREFIX = "dnah."
MAX_CONTROL_LINE = 8 * 2**20
ENTROPY_MIN_BYTES = 32
ENTROPY_MAX_BYTES = 512
HOSTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HEX32_RE = re.compile(r"[0-9a-f]{32}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAC_RE = re.compile(r"[0-9a-f][02468ace](:[0-9a-f]{2}){5}")
ENV_NAME_RE = re.compile(r"[^=\0]+")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Invalid(ValueError):
    """A boot parameter or control message that does not follow contracts/vm.py."""


def parse_cmdline(cmdline: str) -> dict[str, Any]:
    """``BootParams`` from a kernel command line, as a dict with the contract's field names."""
    values: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith(CMDLINE_PREFIX):
            values[key[len(CMDLINE_PREFIX) :]] = value
    hostname = values.get("hostname", "")
    if not HOSTNAME_RE.fullmatch(hostname):
        raise Invalid(f"dnah.hostname={hostname!r} is missing or invalid")
    address = values.get("address")
    gateway = values.get("gateway")
    _check_network(address, gateway)
    dns = tuple(s for s in values.get("dns", "").split(",") if s)
    for server in dns:
        _ip(server, "dns")
    channel = values.get("channel", "serial")
    if channel not in ("serial", "vsock"):
        raise Invalid(f"dnah.channel={channel!r} is not serial or vsock")
    return {
        "hostname": hostname,
        "address": address,
        "gateway": gateway,
        "dns": dns,
        "channel": channel,
        "agent_uid": _id(values.get("uid", "1000")),
        "agent_gid": _id(values.get("gid", "1000")),
        "configure": values.get("configure") == "1",
    }


def parse_control(line: bytes) -> dict[str, Any]:
    """One control message (a JSON object with a ``t`` tag), checked; ``Invalid`` otherwise."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise Invalid(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise Invalid("a control message is a JSON object")
    kind = message.get("t")
    if kind == "configure":
        env = message.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and ENV_NAME_RE.fullmatch(k) and isinstance(v, str) and "\0" not in v
            for k, v in env.items()
        ):
            raise Invalid("env must map names (no '=' or NUL) to strings (no NUL)")
        return {"t": kind, "env": dict(env)}
    if kind == "identity":
        return _identity(message)
    if kind == "clock":
        return {"t": kind, "unix_time_ns": _time_ns(message.get("unix_time_ns"))}
    if kind == "poweroff":
        return {"t": kind}
    raise Invalid(f"unknown control message {kind!r}")


def encode_reply(error: str | None = None) -> bytes:
    """``ControlReply``: ``{"ok": true}`` or ``{"ok": false, "error": …}``, newline-terminated."""
    reply: dict[str, Any] = {"ok": True} if error is None else {"ok": False, "error": error}
    return json.dumps(reply).encode() + b"\n"


def _identity(message: dict[str, Any]) -> dict[str, Any]:
    hostname, machine_id, boot_id = message.get("hostname"), message.get("machine_id"), message.get("boot_id")
    entropy, unix_time_ns = message.get("entropy"), message.get("unix_time_ns")
    if not isinstance(hostname, str) or not HOSTNAME_RE.fullmatch(hostname):
        raise Invalid(f"hostname {hostname!r} is invalid")
    if not isinstance(machine_id, str) or not HEX32_RE.fullmatch(machine_id):
        raise Invalid("machine_id must be 32 lowercase hex digits")
    if not isinstance(boot_id, str) or not UUID_RE.fullmatch(boot_id):
        raise Invalid("boot_id must be a lowercase UUID")
    if (
        not isinstance(entropy, str)
        or not re.fullmatch(r"[0-9a-f]*", entropy)
        or len(entropy) % 2
        or not ENTROPY_MIN_BYTES <= len(entropy) // 2 <= ENTROPY_MAX_BYTES
    ):
        raise Invalid(f"entropy must be hex of {ENTROPY_MIN_BYTES}-{ENTROPY_MAX_BYTES} bytes")
    address, gateway, mac = message.get("address"), message.get("gateway"), message.get("mac")
    _check_network(address, gateway)
    if mac is not None and (not isinstance(mac, str) or not MAC_RE.fullmatch(mac)):
        raise Invalid(f"mac {mac!r} is not a lowercase unicast MAC")
    return {
        "t": "identity",
        "hostname": hostname,
        "machine_id": machine_id,
        "boot_id": boot_id,
        "entropy": bytes.fromhex(entropy),
        "unix_time_ns": _time_ns(unix_time_ns),
        "address": address,
        "gateway": gateway,
        "mac": mac,
    }


def _time_ns(value: object) -> int:
    if type(value) is not int or value < 0:
        raise Invalid("unix_time_ns must be a non-negative integer")
    return value


def _check_network(address: object, gateway: object) -> None:
    if address is not None:
        if not isinstance(address, str) or "/" not in address:
            raise Invalid(f"address {address!r} needs a prefix length")
        try:
            ipaddress.IPv4Interface(address)
        except ValueError as exc:
            raise Invalid(f"address {address!r}: {exc}") from None
    if gateway is not None:
        if not isinstance(gateway, str):
            raise Invalid(f"gateway {gateway!r} is not a string")
        try:
            ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise Invalid(f"gateway {gateway!r}: {exc}") from None


def _ip(value: str, what: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise Invalid(f"{what} {value!r}: {exc}") from None


def _id(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise Invalid(f"agent id {value!r} out of range")
    return int(value)
