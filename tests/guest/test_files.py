"""The agent's file handlers (``guest/files.py``), called directly on a temporary home.

Confinement to the sandbox is the kernel's (the agent's root is the sandbox's); the stack
tests in ``tests/core/test_files.py`` prove it. Here: results, modes and error codes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guest import files
from guest.framing import FsRequest


def ask(home: Path, kind: str, **fields: object) -> dict:
    return files.handle(FsRequest(1, kind, **fields), {"HOME": str(home)})  # type: ignore[arg-type]


def error_code(reply: dict) -> str:
    assert reply["t"] == "error", reply
    return str(reply["code"])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("import os\nTODO: one\n")
    (tmp_path / "src" / "pkg" / "b.py").write_text("x = 1\n# TODO: two\n")
    (tmp_path / "src" / "pkg" / "blob.bin").write_bytes(b"TODO\0binary")
    (tmp_path / "notes.txt").write_text("hello\n")
    os.chmod(tmp_path / "notes.txt", 0o640)
    (tmp_path / "link").symlink_to("src")
    return tmp_path


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (stat.S_IFREG | 0o644, "-rw-r--r--"),
        (stat.S_IFDIR | 0o755, "drwxr-xr-x"),
        (stat.S_IFLNK | 0o777, "Lrwxrwxrwx"),
        (stat.S_IFDIR | 0o1777, "dtrwxrwxrwx"),
        (stat.S_IFREG | 0o4755, "urwxr-xr-x"),
        (stat.S_IFCHR | 0o666, "Dcrw-rw-rw-"),
        (stat.S_IFIFO | 0o600, "prw-------"),
    ],
)
def test_modes_are_spelled_as_go_does(mode: int, expected: str) -> None:
    assert files.go_mode(mode) == expected


def test_list_relative_to_home_with_depth(home: Path) -> None:
    reply = ask(home, "fs.list", path=".")
    assert [e["name"] for e in reply["entries"]] == ["link", "notes.txt", "src"]
    by_name = {e["name"]: e for e in reply["entries"]}
    notes = by_name["notes.txt"]
    assert (notes["size"], notes["mode"], notes["permissions"], notes["is_dir"]) == (
        6,
        "-rw-r-----",
        "0640",
        False,
    )
    assert notes["path"] == str(home / "notes.txt")
    assert notes["mtime_ns"] == os.stat(home / "notes.txt").st_mtime_ns
    assert by_name["link"]["link_target"] == "src" and not by_name["link"]["is_dir"]
    assert by_name["src"]["is_dir"] and by_name["src"]["mode"].startswith("d")
    deep = ask(home, "fs.list", path="src", depth=2)
    assert [e["path"] for e in deep["entries"]] == [
        str(home / "src/a.py"),
        str(home / "src/pkg"),
        str(home / "src/pkg/b.py"),
        str(home / "src/pkg/blob.bin"),
    ]
    assert error_code(ask(home, "fs.list", path="missing")) == "not_found"
    assert error_code(ask(home, "fs.list", path="notes.txt")) == "bad_request"


def test_stat_follows_links_and_describes_dangling_ones(home: Path) -> None:
    assert ask(home, "fs.stat", path="link")["entry"]["is_dir"] is True
    (home / "dangling").symlink_to("nowhere")
    entry = ask(home, "fs.stat", path="dangling")["entry"]
    assert entry["mode"].startswith("L") and entry["link_target"] == "nowhere"
    assert error_code(ask(home, "fs.stat", path="nope")) == "not_found"


def test_mkdir_is_p_with_exact_mode(home: Path) -> None:
    assert ask(home, "fs.mkdir", path="a/b/c", mode="700")["t"] == "fs.done"
    assert stat.S_IMODE(os.stat(home / "a/b/c").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "a").st_mode) == 0o700
    assert ask(home, "fs.mkdir", path="a/b/c", mode="755")["t"] == "fs.done"  # exists: fine
    assert error_code(ask(home, "fs.mkdir", path="notes.txt/x", mode="755")) == "bad_request"
    assert error_code(ask(home, "fs.mkdir", path="z", mode="9")) == "bad_request"


def test_remove(home: Path) -> None:
    assert error_code(ask(home, "fs.remove", path="src")) == "bad_request"
    assert ask(home, "fs.remove", path="link", recursive=True)["t"] == "fs.done"
    assert (home / "src" / "a.py").exists()  # the link went, not its target's content
    assert ask(home, "fs.remove", path="src", recursive=True)["t"] == "fs.done"
    assert not (home / "src").exists()
    assert error_code(ask(home, "fs.remove", path="src")) == "not_found"
    assert error_code(ask(home, "fs.remove", path="/", recursive=True)) == "bad_request"


def test_move(home: Path) -> None:
    assert ask(home, "fs.move", source="notes.txt", destination="src/notes.md")["t"] == "fs.done"
    assert (home / "src/notes.md").read_text() == "hello\n"
    assert error_code(ask(home, "fs.move", source="src/a.py", destination="src/notes.md")) == "conflict"
    assert error_code(ask(home, "fs.move", source="gone", destination="x")) == "not_found"
    assert error_code(ask(home, "fs.move", source="src/a.py", destination="no/dir/a.py")) == "not_found"


def test_chmod_and_chown(home: Path) -> None:
    assert ask(home, "fs.chmod", path="notes.txt", mode="0600")["t"] == "fs.done"
    assert stat.S_IMODE(os.stat(home / "notes.txt").st_mode) == 0o600
    uid = os.getuid()
    assert ask(home, "fs.chmod", path="notes.txt", owner=str(uid))["t"] == "fs.done"
    assert error_code(ask(home, "fs.chmod", path="notes.txt", owner="no-such-user-x")) == "bad_request"
    assert error_code(ask(home, "fs.chmod", path="notes.txt")) == "bad_request"
    assert error_code(ask(home, "fs.chmod", path="nope", mode="600")) == "not_found"


def test_find_names(home: Path) -> None:
    found = ask(home, "fs.find_names", path="src", pattern="*.py", max=100)
    assert found["paths"] == [str(home / "src/a.py"), str(home / "src/pkg/b.py")]
    assert found["truncated"] is False
    capped = ask(home, "fs.find_names", path=".", pattern="*", max=2)
    assert len(capped["paths"]) == 2 and capped["truncated"] is True
    assert ask(home, "fs.find_names", path=".", pattern="src/pkg/*.py")["paths"] == [
        str(home / "src/pkg/b.py")
    ]
    # the walk does not follow the symlink to src
    assert all("/link/" not in p for p in ask(home, "fs.find_names", path=".", pattern="*")["paths"])


def test_grep_skips_binary_files(home: Path) -> None:
    found = ask(home, "fs.grep", path=".", pattern="TODO")
    assert found["matches"] == [
        {"file": str(home / "src/a.py"), "line": 2, "content": "TODO: one"},
        {"file": str(home / "src/pkg/b.py"), "line": 2, "content": "# TODO: two"},
    ]
    assert len(ask(home, "fs.grep", path=".", pattern="TODO", max=1)["matches"]) == 1
    assert ask(home, "fs.grep", path="src/a.py", pattern="^imp.rt", regex=True)["matches"][0]["line"] == 1
    assert ask(home, "fs.grep", path="src", pattern="^imp.rt")["matches"] == []  # literal by default
    assert error_code(ask(home, "fs.grep", path=".", pattern="(", regex=True)) == "bad_request"


def test_replace(home: Path) -> None:
    done = ask(home, "fs.replace", files=["src/a.py", "notes.txt", "nope"], find="TODO", replace="DONE")
    assert done["results"] == [
        {"file": str(home / "src/a.py"), "success": True, "replacements": 1, "error": None},
        {"file": str(home / "notes.txt"), "success": True, "replacements": 0, "error": None},
        {
            "file": str(home / "nope"),
            "success": False,
            "replacements": 0,
            "error": f"{home / 'nope'}: No such file or directory",
        },
    ]
    assert (home / "src/a.py").read_text() == "import os\nDONE: one\n"
    by_glob = ask(
        home, "fs.replace", path="src", glob="*.py", find=r"(\w+) = 1", replace=r"\1 = 2", regex=True
    )
    assert [r["file"] for r in by_glob["results"]] == [str(home / "src/a.py"), str(home / "src/pkg/b.py")]
    assert (home / "src/pkg/b.py").read_text() == "x = 2\n# TODO: two\n"
    assert (home / "src/pkg/blob.bin").read_bytes() == b"TODO\0binary"


def test_mkdir_with_a_mode_that_forbids_search_still_creates_every_level(home: Path) -> None:
    assert ask(home, "fs.mkdir", path="p/q", mode="600")["t"] == "fs.done"
    assert stat.S_IMODE(os.stat(home / "p").st_mode) == 0o600


def test_grep_refuses_a_fifo_instead_of_blocking(home: Path) -> None:
    os.mkfifo(home / "pipe")
    assert error_code(ask(home, "fs.grep", path="pipe", pattern="x")) == "bad_request"
    assert ask(home, "fs.grep", path=".", pattern="hello")["matches"][0]["file"] == str(home / "notes.txt")
