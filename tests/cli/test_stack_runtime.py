"""``make up RUNTIME=…`` / ``dnah up --runtime``: the choice reaches hostd, and ``make down``
(which stops sandboxes through ``make_runtime`` on the same environment) sees the same one."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from cli.stack import Stack, StackConfig
from hosts.config import load_config


def test_the_runtime_chosen_for_the_stack_is_hostds(tmp_path: Path) -> None:
    for runtime in ("qemu", "cloud-hypervisor", "oci"):
        env = Stack(StackConfig(var_dir=tmp_path, runtime=runtime)).env()
        assert env["DNAH_HOST_RUNTIME"] == runtime
        assert load_config(env).runtime == runtime


def test_without_a_choice_the_environment_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNAH_HOST_RUNTIME", "qemu")
    assert Stack(StackConfig(var_dir=tmp_path)).env()["DNAH_HOST_RUNTIME"] == "qemu"
    monkeypatch.delenv("DNAH_HOST_RUNTIME")
    env = Stack(StackConfig(var_dir=tmp_path)).env()
    assert "DNAH_HOST_RUNTIME" not in env  # hostd's own default: auto


def test_dnah_up_offers_the_real_runtimes_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["up", "--runtime", "fake"])
    assert "invalid choice: 'fake'" in capsys.readouterr().err
