"""The architecture, enforced: which package may import which.

gateway, core, hosts and guest never import each other; they meet only in ``contracts``
(and ``pricing``). ``contracts`` imports nothing else from the repository. ``guest`` runs on
a template's bare python3, so it imports only the standard library and itself. Only the
HTTP adapters import the web framework.
"""

from __future__ import annotations

import ast
import sys
import typing
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


CODE_INTERPRETER = "guest/code_interpreter/"
"""The code-interpreter server: under guest/ because it runs in sandboxes from the agent's
read-only mount, but it is not the agent (a template service on the template's python3 with
jupyter_client)."""


def test_guest_is_stdlib_only() -> None:
    for path, names in imports_of("guest").items():
        if path.startswith(CODE_INTERPRETER):
            continue
        bad = {
            n for n in names if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "guest"
        }
        assert not bad, f"{path} imports {bad}"
        assert not {n for n in names if n.startswith("guest.code_interpreter")}, f"{path} imports the server"


def test_the_code_interpreter_imports_only_jupyter_client_beyond_the_stdlib() -> None:
    for path, names in imports_of("guest").items():
        if path.startswith(CODE_INTERPRETER):
            bad = {n for n in names if n.split(".")[0] not in {*sys.stdlib_module_names, "jupyter_client"}}
            assert not {n for n in bad if not n.startswith("guest.code_interpreter")}, f"{path} imports {bad}"


def test_litestar_stays_in_the_adapters() -> None:
    allowed = (
        "core/http/",
        "hosts/app.py",
        "hosts/terminal.py",
        "hosts/proc.py",
        "hosts/agent_socket.py",
        "hosts/transfers.py",
        "hosts/build_logs.py",
        "hosts/lifecycle.py",
        "hosts/egress/routes.py",
        "gateway/app.py",
    )
    for package in ("core", "hosts", "contracts", "guest"):
        for path, names in imports_of(package).items():
            if any(n.split(".")[0] == "litestar" for n in names):
                assert path.startswith(allowed), f"{path} imports litestar outside an adapter"


def host_to_guest_messages() -> frozenset[str]:
    """The ``contracts.guest`` messages the host sends the agent: relayed requests and stream
    openers. Only services build them; the HTTP adapters translate shapes."""
    from contracts import guest

    sent = (*typing.get_args(guest.HostToGuest), *typing.get_args(guest.StreamOpener))
    return frozenset(cls.__name__ for cls in sent)


def guest_message_uses(tree: ast.AST, messages: frozenset[str]) -> list[str]:
    """Every reference in ``tree`` to one of ``messages`` of ``contracts.guest`` — called,
    converted to, or merely named — whatever the import's spelling (``from contracts import
    guest as g``, ``import contracts.guest``, ``from contracts.guest import FsList as L``); the
    module itself handed around (``getattr(guest, name)``, ``vars(guest)``) or imported by name
    (``importlib``); a star import; and calls of the generic relay (``SandboxService.ask``),
    which takes a message."""
    modules: set[str] = set()
    names: dict[str, str] = {}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "contracts":
            modules.update(a.asname or a.name for a in node.names if a.name == "guest")
        elif isinstance(node, ast.ImportFrom) and node.module == "contracts.guest":
            for alias in node.names:
                if alias.name == "*":
                    found.append(f"line {node.lineno}: from contracts.guest import *")
                names[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.name == "contracts.guest" and a.asname)
    attribute_bases = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in modules and id(node) not in attribute_bases:
            found.append(f"line {node.lineno}: the module {node.id} itself")
        elif isinstance(node, ast.Constant) and node.value == "contracts.guest":
            found.append(f"line {node.lineno}: 'contracts.guest' by name")
        elif isinstance(node, ast.Attribute) and node.attr in messages:
            base = node.value
            if (isinstance(base, ast.Name) and base.id in modules) or (
                isinstance(base, ast.Attribute)
                and base.attr == "guest"
                and isinstance(base.value, ast.Name)
                and base.value.id == "contracts"
            ):
                found.append(f"line {node.lineno}: guest.{node.attr}")
        elif isinstance(node, ast.Name) and names.get(node.id) in messages:
            found.append(f"line {node.lineno}: {names[node.id]}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "ask":
            found.append(f"line {node.lineno}: .ask(…), the generic relay")
    return found


def test_the_http_adapters_never_build_guest_messages() -> None:
    """Adapters call the typed services (``core/services/toolbox/``, ``core/services/``);
    only a service builds what the agent is sent."""
    messages = host_to_guest_messages()
    assert {"FsList", "GitClone", "PtyAttach", "CodeRun"} <= messages
    for path in sorted((ROOT / "core" / "http").rglob("*.py")):
        uses = guest_message_uses(ast.parse(path.read_text(), filename=str(path)), messages)
        assert not uses, f"{path.relative_to(ROOT)} builds guest messages: {uses}"


SHAPES = ("native", "daytona", "e2b")


@pytest.mark.parametrize("shape", SHAPES)
def test_api_shapes_never_import_each_other(shape: str) -> None:
    """What two shapes share lives in ``core/http/common`` or ``core/services``."""
    others = {f"core.http.{s}" for s in SHAPES if s != shape}
    for path, names in imports_of(f"core/http/{shape}").items():
        bad = {n for n in names if n in others or n.startswith(tuple(f"{o}." for o in others))}
        assert not bad, f"{path} imports {bad}"
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "core.http":
                shapes = {a.name for a in node.names} & (set(SHAPES) - {shape})
                assert not shapes, f"{path} imports {shapes} from core.http"
