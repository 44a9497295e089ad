"""Unmounting what a sandbox's boot mounted, when two teardowns of it race."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hosts.runtime import _mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_a_mount_another_teardown_removed_first_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point = tmp_path / "sys"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(point)], check=True)
    listed = _mounts.mounts_under(tmp_path)
    assert listed == [point]
    subprocess.run(["umount", str(point)], check=True)  # the other teardown got there first
    real = _mounts.mounts_under
    calls = iter([listed])
    monkeypatch.setattr(_mounts, "mounts_under", lambda path: next(calls, None) or real(path))
    _mounts.unmount_all(tmp_path)
    assert _mounts.mounts_under(tmp_path) == []


def test_everything_below_a_path_is_unmounted_deepest_first(tmp_path: Path) -> None:
    outer, inner = tmp_path / "a", tmp_path / "a" / "b"
    outer.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(outer)], check=True)
    inner.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(inner)], check=True)
    assert _mounts.mounts_under(tmp_path) == [inner, outer]
    _mounts.unmount_all(tmp_path)
    assert _mounts.mounts_under(tmp_path) == []
