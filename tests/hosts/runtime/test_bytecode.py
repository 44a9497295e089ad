"""hostd precompiles the agent's bytecode; the sandbox's python uses it, and never a stale one.

Run on a copy of ``guest/`` with the sandbox's flags (``python3 -S``, the code directory
read-only to it is imitated by ``PYTHONDONTWRITEBYTECODE``), watching ``-v``'s account of
where each module's code object came from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hosts.config import GUEST_DIR
from hosts.runtime.oci import _bytecode

pytestmark = pytest.mark.skipif(
    sys.implementation.cache_tag != _bytecode.GUEST_CACHE_TAG, reason="hostd's python is not 3.11"
)


def run_agent_import(root: Path) -> str:
    """``import guest.agent`` as the sandbox does it; its ``-v`` trace (stderr)."""
    done = subprocess.run(
        [sys.executable, "-S", "-v", "-c", "import guest.agent, guest.framing; print(guest.framing.MARK)"],
        env={"PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=root,  # not the repository, whose guest/ ``-c`` would find first
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_precompiled_bytecode_is_used_and_a_stale_one_never(tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    shutil.copytree(GUEST_DIR, guest, ignore=shutil.ignore_patterns("__pycache__"))
    framing = guest / "framing.py"
    framing.write_text(framing.read_text() + "\nMARK = 'first'\n")

    assert _bytecode.precompile(guest)
    trace = run_agent_import(tmp_path)
    assert "first" in trace
    for module in ("agent", "framing"):
        pyc = f"{guest}/__pycache__/{module}.{_bytecode.GUEST_CACHE_TAG}.pyc"
        assert f"{pyc} matches {guest}/{module}.py" in trace

    # An edit makes the pyc stale: python compiles the source instead of using it.
    framing.write_text(framing.read_text().replace("MARK = 'first'", "MARK = 'second, longer'"))
    trace = run_agent_import(tmp_path)
    assert "second, longer" in trace
    assert f"code object from '{guest}/__pycache__/framing" not in trace

    # The next precompile (the next hostd start) brings it up to date, and only it.
    agent_pyc = guest / "__pycache__" / f"agent.{_bytecode.GUEST_CACHE_TAG}.pyc"
    before = agent_pyc.stat().st_mtime_ns
    assert _bytecode.precompile(guest)
    assert agent_pyc.stat().st_mtime_ns == before
    trace = run_agent_import(tmp_path)
    assert "second, longer" in trace
    assert f"{guest}/__pycache__/framing.{_bytecode.GUEST_CACHE_TAG}.pyc matches {guest}/framing.py" in trace


def test_a_cache_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    shutil.copytree(GUEST_DIR, guest, ignore=shutil.ignore_patterns("__pycache__"))
    (guest / "__pycache__").write_text("not a directory")
    assert not _bytecode.precompile(guest)
