"""The package surface, and the sans-I/O rule: stdlib and msgspec only, no clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pricing

PACKAGE = Path(pricing.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    assert pricing.__all__ == sorted(pricing.__all__)
    public = {name for name in vars(pricing) if not name.startswith("_")}
    assert set(pricing.__all__) == public


def test_only_stdlib_and_msgspec() -> None:
    allowed = set(sys.stdlib_module_names) - {"time", "socket", "asyncio", "subprocess", "threading"}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed | {"msgspec", "pricing"}, f"{path.name} imports {name}"


def test_the_default_table_ships_inside_the_package() -> None:
    assert pricing.default_table_path() == PACKAGE / "default.toml"
    assert pricing.default_table_path().is_file()
