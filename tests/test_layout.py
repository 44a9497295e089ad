"""The architecture, enforced: which package may import which.

gateway, core, hosts and guest never import each other; they meet only in ``contracts``
(and ``pricing``). ``contracts`` imports nothing else from the repository. ``guest`` runs on
a template's bare python3, so it imports only the standard library and itself. Only the
HTTP adapters import the web framework.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "core", "hosts", "guest")
REPO_PACKAGES = (*SERVICES, "contracts", "guard", "pricing", "cli")


def imports_of(package: str) -> dict[str, set[str]]:
    """Top-level modules imported by each file of ``package``."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", SERVICES)
def test_services_never_import_each_other(package: str) -> None:
    others = {p for p in SERVICES if p != package}
    for path, names in imports_of(package).items():
        bad = {n for n in names if n.split(".")[0] in others}
        assert not bad, f"{path} imports {bad}"


def test_contracts_is_a_leaf() -> None:
    for path, names in imports_of("contracts").items():
        bad = {n for n in names if n.split(".")[0] in REPO_PACKAGES and n.split(".")[0] != "contracts"}
        assert not bad, f"{path} imports {bad}"


def test_guard_is_a_leaf() -> None:
    """The edge guard is mounted by gateway, core and hosts, so it may import none of them
    (nor contracts: each process renders its own error body)."""
    for path, names in imports_of("guard").items():
        bad = {n for n in names if n.split(".")[0] in REPO_PACKAGES and n.split(".")[0] != "guard"}
        assert not bad, f"{path} imports {bad}"


def test_guest_is_stdlib_only() -> None:
    for path, names in imports_of("guest").items():
        bad = {
            n for n in names if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "guest"
        }
        assert not bad, f"{path} imports {bad}"


def test_litestar_stays_in_the_adapters() -> None:
    allowed = (
        "core/http/",
        "hosts/app.py",
        "hosts/terminal.py",
        "hosts/transfers.py",
        "hosts/lifecycle.py",
        "gateway/app.py",
    )
    for package in ("core", "hosts", "contracts", "guest"):
        for path, names in imports_of(package).items():
            if any(n.split(".")[0] == "litestar" for n in names):
                assert path.startswith(allowed), f"{path} imports litestar outside an adapter"
