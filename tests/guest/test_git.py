"""The agent's git handlers (``guest/git.py``) against real repositories on this machine: the
parsing of git's output, name checks, and the credential helper. The end-to-end behaviour,
through the stack and inside a sandbox, is in ``tests/core/test_git.py``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guest import framing, git, runner

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
ME = {"author_name": "Ada", "author_email": "ada@example.com"}


def sh(cwd: Path, script: str) -> str:
    env = ENV | {"GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["sh", "-ec", script], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    sh(tmp_path, "git init -q -b main r")
    return tmp_path / "r"


def test_status_reports_renames_and_untracked(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n" * 20)
    assert git.add(framing.GitAddRequest(id=1, path=str(repo), files=["a.txt"]), ENV)["t"] == "git.done"
    git.commit(framing.GitCommitRequest(id=2, path=str(repo), message="a", **ME), ENV)
    sh(repo, "git mv a.txt b.txt && echo new > 'with space.txt'")
    status = git.status(framing.GitStatusRequest(id=3, path=str(repo)), ENV)
    assert status["branch"] == "main" and status["upstream"] == "" and status["detached"] is False
    assert status["files"] == [
        framing.git_file_status("b.txt", "R", ".", "a.txt"),
        framing.git_file_status("with space.txt", "?", "?"),
    ]


def test_log_keeps_multi_line_messages_and_an_empty_repo_has_none(repo: Path) -> None:
    assert git.log(framing.GitLogRequest(id=1, path=str(repo)), ENV)["commits"] == []
    assert git.branches(framing.GitBranchesRequest(id=2, path=str(repo)), ENV)["current"] == "main"
    for message in ("first", "subject\n\nbody line 1\nbody line 2"):
        request = framing.GitCommitRequest(id=3, path=str(repo), message=message, allow_empty=True, **ME)
        assert git.commit(request, ENV)["t"] == "git.commit.result"
    commits = git.log(framing.GitLogRequest(id=4, path=str(repo)), ENV)["commits"]
    assert isinstance(commits, list)
    assert [c["message"] for c in commits] == ["subject\n\nbody line 1\nbody line 2", "first"]
    assert {c["author_name"] for c in commits} == {"Ada"}


@pytest.mark.parametrize("name", ["-D", "--force", ""])
def test_names_that_git_would_read_as_options_are_refused(repo: Path, name: str) -> None:
    reply = git.branch_create(framing.GitBranchCreateRequest(id=1, path=str(repo), name=name), ENV)
    assert (reply["t"], reply["code"]) == ("error", "bad_request")
    reply = git.clone(framing.GitCloneRequest(id=1, url=name or "-", path=str(repo / "x")), ENV)
    assert (reply["t"], reply["code"]) == ("error", "bad_request")


def test_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    reply = git.status(framing.GitStatusRequest(id=1, path=str(tmp_path / "nope")), ENV)
    assert (reply["t"], reply["code"]) == ("error", "not_found")


def test_credentials_reach_git_only_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], *, env: dict[str, str], cwd: str | None, timeout_ms: int) -> runner.Outcome:
        seen.append((argv, env))
        return runner.Outcome(stdout="", stderr="", exit_code=0, duration_ms=1.0, timed_out=False)

    monkeypatch.setattr(runner, "run", fake_run)
    request = framing.GitCloneRequest(
        id=1, url="https://h/r.git", path="/tmp/x", username="u", password="s3cr3t"
    )
    assert git.clone(request, ENV)["t"] == "git.done"
    ((argv, env),) = seen
    assert not any("s3cr3t" in arg for arg in argv)
    assert argv[:3] == ["git", "-c", "credential.helper="]  # clears the user's helpers first
    assert (env["DNAH_GIT_USERNAME"], env["DNAH_GIT_PASSWORD"], env["GIT_TERMINAL_PROMPT"]) == (
        "u",
        "s3cr3t",
        "0",
    )


def test_the_credential_helper_answers_get_only() -> None:
    """What git itself gets from the helper the handlers put on its command line."""
    env = ENV | {"DNAH_GIT_USERNAME": "u", "DNAH_GIT_PASSWORD": "p w"}
    base = [
        "git",
        "-c",
        "credential.helper=",
        "-c",
        f"credential.helper={git._CREDENTIAL_HELPER}",
        "credential",
    ]
    ask = "protocol=https\nhost=example.com\n\n"
    filled = subprocess.run([*base, "fill"], input=ask, env=env, capture_output=True, text=True, check=True)
    assert "username=u\n" in filled.stdout and "password=p w\n" in filled.stdout
    approved = subprocess.run(
        [*base, "approve"], input=filled.stdout, env=env, capture_output=True, text=True
    )
    assert approved.returncode == 0 and approved.stdout == ""
