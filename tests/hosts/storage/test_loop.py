"""The pool's image on a machine without loop devices: a message that says what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hosts.errors import RuntimeFailure
from hosts.storage import _loop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mkfs and losetup need root")


def test_no_loop_control_names_the_fixes_and_keeps_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_loop, "_LOOP_CONTROL", tmp_path / "loop-control")
    image = tmp_path / "pool.img"
    with pytest.raises(RuntimeFailure, match=r"no loop devices .*modprobe loop.*DNAH_POOL_DIR"):
        _loop.mount_image(image, tmp_path / "pool", 2**30)
    assert image.is_file()  # formatted once; the next start, with loop devices, attaches it
    assert _loop.mounted_source(tmp_path / "pool") is None
