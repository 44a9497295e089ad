"""Checks requests and answers against ``ch_api.schema.json``, our schema of the Cloud
Hypervisor API subset the backend uses (see the schema's own description for its sources).

``check_request`` is what the stand-in runs on every request it receives; a non-empty list of
problems means the VMM would (or should) refuse it, and the stand-in records it so the test
that caused it fails. ``check_answer`` lets tests hold the stand-in's answers to the same
document. The prose rules of ``x-rules`` are checked here by hand.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("ch_api.schema.json")
API_ROOT = "/api/v1/"


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def endpoints() -> dict[str, dict[str, Any]]:
    return dict(document()["endpoints"])


def endpoint_of(path: str) -> str | None:
    """``/api/v1/vm.boot`` → ``vm.boot``; None for a path outside the API root."""
    bare = path.split("?", 1)[0]
    return bare[len(API_ROOT) :] if bare.startswith(API_ROOT) else None


def check_request(method: str, path: str, body: bytes) -> list[str]:
    """Every way the request departs from the schema; empty when it conforms."""
    endpoint = endpoint_of(path)
    if endpoint is None or endpoint not in endpoints():
        return [f"{method} {path}: not an endpoint of the schema"]
    spec = endpoints()[endpoint]
    if method != spec["method"]:
        return [f"{endpoint}: method {method}, the schema says {spec['method']}"]
    if spec["body"] is False:
        return [f"{endpoint}: takes no body, got {len(body)} bytes"] if body.strip() else []
    if not body.strip():
        return [f"{endpoint}: a body is required"]
    try:
        value = json.loads(body)
    except ValueError as exc:
        return [f"{endpoint}: the body is not JSON: {exc}"]
    return [f"{endpoint}: {problem}" for problem in _problems(spec["body"], value)]


def check_answer(endpoint: str, status: int, body: bytes) -> list[str]:
    """Problems with a successful answer: 204 with no body, or 200 with the schema's type."""
    answer = endpoints()[endpoint]["answer"]
    if answer is False:
        if status == 204 and not body:
            return []
        return [f"{endpoint}: expected 204 without a body, got {status}"]
    if status != 200:
        return [f"{endpoint}: expected 200, got {status}"]
    return [f"{endpoint}: {problem}" for problem in _problems(answer, json.loads(body))]


def _problems(schema: dict[str, Any], value: object) -> list[str]:
    root = {**schema, "$defs": document()["$defs"]}
    validator = jsonschema.Draft202012Validator(root)
    found = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if not found and schema.get("$ref") == "#/$defs/VmConfig":
        found += _vm_config_rules(value)
    return found


def _vm_config_rules(config: Any) -> list[str]:
    """The ``x-rules`` of ``VmConfig`` (the body already matched its type)."""
    found = []
    cpus = config.get("cpus")
    if cpus is not None and cpus["boot_vcpus"] > cpus["max_vcpus"]:
        found.append("cpus: boot_vcpus is above max_vcpus")
    payload = config["payload"]
    if "kernel" not in payload and "firmware" not in payload:
        found.append("payload: names neither a kernel nor a firmware")
    return found
