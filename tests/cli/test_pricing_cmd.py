"""``dnah pricing check|show|quote`` on real files, through the same argparse wiring that
``cli/main.py`` gets from ``add_parser``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli import pricing_cmd
from pricing import default_table_path, load_table

ROOT = Path(__file__).resolve().parents[2]
GOOD = '[[route]]\nmethod = "POST"\npath = "/things"\nprice = "0.25"\ndescription = "Make a thing"\n'

SHIPPED_RULES = len(load_table(default_table_path()).routes())


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dnah")
    pricing_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('"0.25"', "0.25"))
    return path


@pytest.fixture(autouse=True)
def no_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pricing_cmd.ENV_FILE, raising=False)


def test_check_the_shipped_table(capsys: pytest.CaptureFixture[str]) -> None:
    path = default_table_path()
    assert run(["pricing", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"{path}: OK, {SHIPPED_RULES} rules, default $0.0001\n"


def test_check_one_rule(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: OK, 1 rule, default $0.0001\n"


def test_check_names_the_line(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"{bad}:4: 'price' must be a quoted string like \"0.0001\", not a float (0.25)"
    )


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "check", str(tmp_path / "nope.toml")]) == 1
    assert "nope.toml: cannot read the file" in capsys.readouterr().err


def test_show_the_shipped_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["METHOD", "PATH", "PRICE", "DESCRIPTION"]
    assert len(lines) == 1 + SHIPPED_RULES + 1
    rows = {tuple(line.split(None, 3)) for line in lines[1:]}
    assert ("POST", "/sandbox", "$0.01", "Create a sandbox") in rows
    assert ("GET", "/openapi.json", "free", "OpenAPI 3.1.0 spec") in rows
    assert ("POST", "/v1/api-keys", "bearer-only", "Create an API key (admin bearer key only)") in rows
    assert ("GET,POST,PUT,DELETE", "/sandbox/{id}/toolbox/**", "$0.0001", "Toolbox operation") in rows
    assert lines[-1].split(None, 3) == ["*", "(default)", "$0.0001", "API request"]
    # Columns line up: every description starts where the header's does.
    start = lines[0].index("DESCRIPTION")
    assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)


def test_show_file_and_environment(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["pricing", "show", "--file", str(good)]) == 0
    assert "POST    /things    $0.25" in capsys.readouterr().out
    free = tmp_path / "free.toml"
    free.write_text('default = "free"\n')
    monkeypatch.setenv(pricing_cmd.ENV_FILE, str(free))
    assert run(["pricing", "show"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(None, 3) == ["*", "(default)", "free", "API request"]
    assert run(["pricing", "show", "--file", str(good)]) == 0  # --file beats the environment
    assert "/things" in capsys.readouterr().out


def test_show_bad_file(
    bad: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(pricing_cmd.ENV_FILE, str(bad))
    assert run(["pricing", "show"]) == 1
    assert capsys.readouterr().err.startswith(f"{bad}:4: ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["post", "/sandbox/abc/toolbox/git/clone?x=1"],
            "POST /sandbox/abc/toolbox/git/clone: $0.001 (1000 base units)\n"
            "  Clone a repository\n"
            "  rule: /sandbox/{id}/toolbox/git/clone\n",
        ),
        (["GET", "/llms.txt"], "GET /llms.txt: free\n  This document\n  rule: /llms.txt\n"),
        (
            ["POST", "/v1/api-keys"],
            "POST /v1/api-keys: bearer-only (never paid; needs a bearer key)\n"
            "  Create an API key (admin bearer key only)\n"
            "  rule: /v1/api-keys\n",
        ),
        (["PATCH", "/x"], "PATCH /x: $0.0001 (100 base units)\n  API request\n  rule: default\n"),
    ],
)
def test_quote(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "quote", *argv]) == 0
    assert capsys.readouterr().out == expected


def test_quote_json(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "quote", "POST", "/things/?a=b", "--file", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "method": "POST",
        "path": "/things/",
        "amount": 250000,
        "price": "0.25",
        "free": False,
        "payable": True,
        "description": "Make a thing",
        "pattern": "/things",
    }


def test_quote_bad_file(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pricing", "quote", "GET", "/", "--file", str(bad)]) == 1
    assert capsys.readouterr().err.startswith(f"{bad}:4: ")


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(["pricing"])
    assert info.value.code == 2
    assert "check" in capsys.readouterr().err


def test_main_in_process(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pricing_cmd.main(["quote", "POST", "/things", "--file", str(good)]) == 0
    assert capsys.readouterr().out.startswith("POST /things: $0.25 (250000 base units)")


def test_as_a_program(bad: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "cli.pricing_cmd", "check", "pricing/default.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stdout) == (
        0,
        f"pricing/default.toml: OK, {SHIPPED_RULES} rules, default $0.0001\n",
    )
    failed = subprocess.run(
        [sys.executable, "-m", "cli.pricing_cmd", "check", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"{bad}:4: 'price' must be a quoted string")
