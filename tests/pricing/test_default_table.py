"""The shipped table: seed 004's routes and prices exactly, plus dnah's own routes."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import default_table_path, load_table

TABLE = load_table(default_table_path())

# Seed 004's priced routes (seed-features §1.3), transcribed: method, path as the seed
# writes it (query strings included), price in base units, description.
SEED_004 = [
    ("GET", "/sandbox", 100, "List all sandboxes"),
    ("GET", "/sandbox/paginated", 100, "List sandboxes (paginated)"),
    ("POST", "/sandbox", 10_000, "Create a sandbox"),
    ("GET", "/sandbox/{id}", 100, "Get sandbox details"),
    ("DELETE", "/sandbox/{id}", 1_000, "Delete a sandbox"),
    ("POST", "/sandbox/{id}/start", 1_000, "Start a sandbox"),
    ("POST", "/sandbox/{id}/stop", 1_000, "Stop a sandbox"),
    ("POST", "/sandbox/{id}/archive", 1_000, "Archive a sandbox"),
    ("POST", "/sandbox/{id}/resize", 2_000, "Resize (cpu/memory/disk)"),
    ("POST", "/sandbox/{id}/backup", 1_000, "Create backup"),
    ("POST", "/sandbox/{id}/recover", 1_000, "Recover from error state"),
    ("POST", "/sandbox/{id}/autostop/{minutes}", 100, "Set auto-stop interval (0 to disable)"),
    ("POST", "/sandbox/{id}/autoarchive/{minutes}", 100, "Set auto-archive interval"),
    ("POST", "/sandbox/{id}/autodelete/{minutes}", 100, "Set auto-delete interval"),
    ("POST", "/sandbox/{id}/public/{bool}", 100, "Set public visibility"),
    ("PUT", "/sandbox/{id}/labels", 100, "Update labels"),
    ("POST", "/sandbox/{id}/ssh-access", 1_000, "Create SSH access token"),
    ("DELETE", "/sandbox/{id}/ssh-access", 100, "Revoke SSH access"),
    ("GET", "/sandbox/ssh-access/validate?token=TOKEN", 100, "Validate SSH token"),
    ("GET", "/sandbox/{id}/toolbox-proxy-url", 100, "Get toolbox proxy URL"),
    ("GET", "/sandbox/{id}/build-logs-url", 100, "Get build logs URL"),
    ("GET", "/sandbox/{id}/ports/{port}/preview-url", 100, "Get port preview URL"),
    ("GET", "/sandbox/{id}/ports/{port}/signed-preview-url", 100, "Get signed preview URL"),
    ("POST", "/sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire", 100, "Expire signed URL"),
    ("POST", "/sandbox/{id}/toolbox/process/execute", 100, "Execute a command"),
    ("GET", "/sandbox/{id}/toolbox/process/sessions", 100, "List process sessions"),
    ("POST", "/sandbox/{id}/toolbox/process/sessions", 100, "Create process session"),
    ("POST", "/sandbox/{id}/toolbox/process/sessions/{sessionId}/exec", 100, "Execute in session"),
    ("DELETE", "/sandbox/{id}/toolbox/process/sessions/{sessionId}", 100, "Kill session"),
    ("GET", "/sandbox/{id}/toolbox/files?path=PATH", 100, "List files"),
    ("DELETE", "/sandbox/{id}/toolbox/files?path=PATH", 100, "Delete a file"),
    ("POST", "/sandbox/{id}/toolbox/files/upload", 100, "Upload a file"),
    ("POST", "/sandbox/{id}/toolbox/files/bulk-upload", 100, "Upload multiple files"),
    ("GET", "/sandbox/{id}/toolbox/files/download?path=PATH", 100, "Download a file"),
    ("POST", "/sandbox/{id}/toolbox/files/bulk-download", 100, "Download multiple files"),
    ("POST", "/sandbox/{id}/toolbox/files/folder?path=PATH&mode=755", 100, "Create a folder"),
    ("POST", "/sandbox/{id}/toolbox/files/move", 100, "Move/rename a file"),
    ("GET", "/sandbox/{id}/toolbox/files/info?path=PATH", 100, "Get file metadata"),
    ("GET", "/sandbox/{id}/toolbox/files/search?path=PATH&pattern=PATTERN", 100, "Search files by name"),
    ("GET", "/sandbox/{id}/toolbox/files/find", 100, "Search file contents"),
    ("POST", "/sandbox/{id}/toolbox/files/replace", 100, "Find and replace in files"),
    ("POST", "/sandbox/{id}/toolbox/files/permissions", 100, "Set file permissions"),
    ("GET", "/sandbox/{id}/toolbox/project-dir", 100, "Get project directory"),
    ("GET", "/sandbox/{id}/toolbox/user-home-dir", 100, "Get user home directory"),
    ("GET", "/sandbox/{id}/toolbox/work-dir", 100, "Get work directory"),
    ("POST", "/sandbox/{id}/toolbox/git/clone", 1_000, "Clone a repository"),
    ("POST", "/sandbox/{id}/toolbox/git/add", 100, "Stage files"),
    ("POST", "/sandbox/{id}/toolbox/git/commit", 100, "Commit changes"),
    ("POST", "/sandbox/{id}/toolbox/git/push", 100, "Push changes"),
    ("POST", "/sandbox/{id}/toolbox/git/pull", 100, "Pull changes"),
    ("GET", "/sandbox/{id}/toolbox/git/branches", 100, "List branches"),
    ("POST", "/sandbox/{id}/toolbox/git/branches", 100, "Create branch"),
    ("DELETE", "/sandbox/{id}/toolbox/git/branches", 100, "Delete branch"),
    ("GET", "/sandbox/{id}/toolbox/git/history", 100, "Get commit history"),
]

SEED_004_FREE = [
    ("GET", "/openapi.json", "OpenAPI 3.1.0 spec"),
    ("GET", "/__mpp/health", "Health check"),
    ("GET", "/__mpp/config", "Payment configuration"),
    ("GET", "/llms.txt", "This document"),
]

# Values a client might put where the seed has a parameter, some of them literals elsewhere.
FILL = {
    "{id}": "sbx-3f9a2c",
    "{minutes}": "15",
    "{bool}": "true",
    "{port}": "3000",
    "{token}": "tok_abc",
    "{sessionId}": "paginated",
}


def concrete(path: str) -> str:
    for param, value in FILL.items():
        path = path.replace(param, value)
    return path


def test_seed_004_has_54_priced_routes() -> None:
    assert len(SEED_004) == 54
    assert len({(m, p.split("?")[0]) for m, p, _, _ in SEED_004}) == 54


@pytest.mark.parametrize(("method", "path", "amount", "description"), SEED_004)
def test_every_seed_004_route_is_in_the_table(method: str, path: str, amount: int, description: str) -> None:
    pattern = path.split("?")[0]
    rules = [r for r in TABLE.routes() if r.pattern == pattern and method in r.methods]
    assert len(rules) == 1, f"{method} {pattern} is not exactly once in the table"
    rule = rules[0]
    assert (rule.amount, rule.description, rule.payable, rule.free) == (amount, description, True, False)


@pytest.mark.parametrize(("method", "path", "amount", "description"), SEED_004)
def test_every_seed_004_route_quotes_its_price(method: str, path: str, amount: int, description: str) -> None:
    quote = TABLE.quote(method, concrete(path))
    assert (quote.amount, quote.description, quote.pattern) == (amount, description, path.split("?")[0])
    assert (quote.free, quote.payable) == (False, True)


@pytest.mark.parametrize(("method", "path", "description"), SEED_004_FREE)
def test_seed_004_free_endpoints(method: str, path: str, description: str) -> None:
    quote = TABLE.quote(method, path)
    assert (quote.amount, quote.price, quote.free, quote.payable, quote.description) == (
        0,
        "0",
        True,
        True,
        description,
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (method, f"/sandbox/sbx-1/toolbox/{rest}")
        for method in ("GET", "POST", "PUT", "DELETE")
        for rest in (
            "git/status",
            "git/checkout",
            "process/session/s1/command/c1/logs",
            "pty",
            "lsp/start",
            "computeruse/screenshot",
            "files/x/y/z",
        )
    ],
)
def test_unlisted_toolbox_routes_are_wildcard_priced(method: str, path: str) -> None:
    quote = TABLE.quote(method, path)
    assert (quote.amount, quote.pattern) == (100, "/sandbox/{id}/toolbox/**")


@pytest.mark.parametrize(
    ("method", "path", "pattern", "description"),
    [
        ("GET", "/sandbox/paginated?page=2&limit=10", "/sandbox/paginated", "List sandboxes (paginated)"),
        (
            "GET",
            "/sandbox/ssh-access/validate?token=abc",
            "/sandbox/ssh-access/validate",
            "Validate SSH token",
        ),
        ("GET", "/sandbox/paginated-not", "/sandbox/{id}", "Get sandbox details"),
        ("DELETE", "/sandbox/paginated", "/sandbox/{id}", "Delete a sandbox"),  # only GET is literal
        ("GET", "/sandbox/ssh-access", "/sandbox/{id}", "Get sandbox details"),
        ("POST", "/sandbox/ssh-access/ssh-access", "/sandbox/{id}/ssh-access", "Create SSH access token"),
    ],
)
def test_seed_004_ordering_notes(method: str, path: str, pattern: str, description: str) -> None:
    # seed-features §1.3 ⚠: the literal routes must win over /sandbox/{id}.
    quote = TABLE.quote(method, path)
    assert (quote.pattern, quote.description) == (pattern, description)


NATIVE = [
    ("POST", "/v1/sandboxes", 10_000, "/v1/sandboxes"),
    ("GET", "/v1/sandboxes?state=running&limit=10", 100, "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/sbx-1", 100, "/v1/sandboxes/{id}"),
    ("DELETE", "/v1/sandboxes/sbx-1", 1_000, "/v1/sandboxes/{id}"),
    ("POST", "/v1/sandboxes/sbx-1/exec", 100, "/v1/sandboxes/{id}/exec"),
    ("POST", "/v1/sandboxes/sbx-1/files/upload", 100, "/v1/sandboxes/{id}/**"),
    ("PATCH", "/v1/sandboxes/sbx-1/anything/else", 100, "/v1/sandboxes/{id}/**"),
    ("GET", "/toolbox/sbx-1/process/execute", 100, "/toolbox/{id}/**"),
    ("POST", "/toolbox/sbx-1/files/upload", 100, "/toolbox/{id}/**"),
    ("PUT", "/toolbox/sbx-1/x", 100, "/toolbox/{id}/**"),
    ("DELETE", "/toolbox/sbx-1/files", 100, "/toolbox/{id}/**"),
    ("POST", "/toolbox/sbx-1/git/clone", 1_000, "/toolbox/{id}/git/clone"),
    ("GET", "/health", 0, "/health"),
    ("GET", "/__mpp/quote?method=POST&path=/sandbox", 0, "/__mpp/quote"),
    ("PATCH", "/sandbox/sbx-1", 100, "default"),
    ("GET", "/nothing/here", 100, "default"),
    ("POST", "/v1/sandboxes/sbx-1", 100, "default"),
    ("PATCH", "/toolbox/sbx-1/x", 100, "default"),  # the seed's four methods only
]


@pytest.mark.parametrize(("method", "path", "amount", "pattern"), NATIVE)
def test_native_and_daytona_toolbox_routes(method: str, path: str, amount: int, pattern: str) -> None:
    quote = TABLE.quote(method, path)
    assert (quote.amount, quote.pattern, quote.payable) == (amount, pattern, True)


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/api-keys"), ("DELETE", "/v1/api-keys/key_1")])
def test_api_keys_are_bearer_only(method: str, path: str) -> None:
    quote = TABLE.quote(method, path)
    assert (quote.payable, quote.free, quote.amount) == (False, False, 0)


def test_default() -> None:
    assert (TABLE.default.amount, TABLE.default.payable, TABLE.default.pattern) == (100, True, "default")


@pytest.mark.parametrize(
    ("method", "path", "amount", "description"), [r for r in SEED_004 if "/toolbox/" in r[1]]
)
def test_both_toolbox_shapes_cost_the_same(method: str, path: str, amount: int, description: str) -> None:
    daytona = concrete(path).replace("/sandbox/sbx-3f9a2c/toolbox/", "/toolbox/sbx-3f9a2c/")
    assert TABLE.quote(method, daytona).amount == amount


def test_against_the_seed_file_itself() -> None:
    """When shared/ is beside the repository, read seed 004's tables directly."""
    seed = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "004_00a0e8a52d010505.txt"
    if not seed.exists():
        pytest.skip("shared/seeds is not beside the repository")
    rows = re.findall(r"\| (GET|POST|PUT|DELETE) \| (/\S+) \| \$([0-9.]+) \| ([^|]+?) \|", seed.read_text())
    assert [(m, p, int(Decimal(c) * 1_000_000), d) for m, p, c, d in rows] == SEED_004
    free = re.findall(r"- `(GET) (/\S+)` — (.+?)(?= - `| ##)", seed.read_text())
    assert free == SEED_004_FREE


E2B_TWINS = [
    # (E2B route, its twin in another shape): the same operation costs the same in every shape
    (("POST", "/v2/sandboxes"), ("POST", "/sandbox")),
    (("GET", "/v2/sandboxes?state=running"), ("GET", "/sandbox")),
    (("GET", "/sandboxes"), ("GET", "/sandbox")),
    (("GET", "/sandboxes/sbx-1"), ("GET", "/sandbox/sbx-1")),
    (("DELETE", "/sandboxes/sbx-1"), ("DELETE", "/sandbox/sbx-1")),
    (("POST", "/sandboxes/sbx-1/pause"), ("POST", "/sandbox/sbx-1/pause")),
    (("POST", "/sandboxes/sbx-1/resume"), ("POST", "/v1/sandboxes/sbx-1/resume")),
    (("POST", "/v2/sandboxes/sbx-1/connect"), ("POST", "/sandbox/sbx-1/start")),
    (("POST", "/sandboxes/sbx-1/connect"), ("POST", "/sandbox/sbx-1/start")),
    (("POST", "/sandboxes/sbx-1/timeout"), ("POST", "/sandbox/sbx-1/autostop/5")),
    (("POST", "/sandboxes/sbx-1/fork"), ("POST", "/sandbox/sbx-1/fork")),
    (("POST", "/sandboxes/sbx-1/snapshots"), ("POST", "/v1/sandboxes/sbx-1/snapshot")),
    (("GET", "/sandboxes/sbx-1/metrics"), ("GET", "/v1/sandboxes/sbx-1/metrics")),
    (("GET", "/envd/sbx-1/files?path=a"), ("GET", "/toolbox/sbx-1/files/download")),
    (("POST", "/envd/sbx-1/files"), ("POST", "/toolbox/sbx-1/files/upload")),
    (("POST", "/envd/sbx-1/filesystem.Filesystem/Stat"), ("GET", "/toolbox/sbx-1/files/info")),
    (("POST", "/envd/sbx-1/process.Process/SendSignal"), ("POST", "/toolbox/sbx-1/process/execute")),
]


@pytest.mark.parametrize(("e2b", "twin"), E2B_TWINS)
def test_e2b_routes_cost_what_their_twins_cost(e2b: tuple[str, str], twin: tuple[str, str]) -> None:
    quote = TABLE.quote(*e2b)
    assert quote.pattern != "default" and quote.payable
    assert quote.amount == TABLE.quote(*twin).amount


@pytest.mark.parametrize(
    "rpc",
    [
        "process.Process/Start",
        "process.Process/Connect",
        "process.Process/StreamInput",
        "filesystem.Filesystem/WatchDir",
    ],
)
def test_envd_streams_are_bearer_only(rpc: str) -> None:
    quote = TABLE.quote("POST", f"/envd/sbx-1/{rpc}")
    assert (quote.payable, quote.free, quote.amount) == (False, False, 0)


def test_envd_health_is_free() -> None:
    assert TABLE.quote("GET", "/envd/sbx-1/health").free
