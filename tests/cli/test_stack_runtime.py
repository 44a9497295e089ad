"""``make up RUNTIME=…`` / ``dnah up --runtime``: the choice reaches hostd, and ``make down``
(which stops sandboxes through ``make_runtime`` on the same environment) sees the same one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli import main as cli_main
from cli.main import main
from cli.stack import Stack, StackConfig
from hosts.config import DEFAULT_VM_IMAGE_CACHE, load_config


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


@pytest.fixture(scope="module")
def vm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A guest image cache of the module's own, sharing the machine's unpacked kernels (no
    download): the first VM runtime below builds the image into it, the others find it."""
    if os.geteuid() != 0:
        pytest.skip("building a guest image needs root")
    cache = tmp_path_factory.mktemp("vm-cache")
    (cache / "kernels").symlink_to(Path(DEFAULT_VM_IMAGE_CACHE) / "kernels")
    return cache


@pytest.mark.parametrize(
    ("argv", "env", "vm"),
    [
        (["--runtime", "qemu"], {}, True),
        ([], {"DNAH_HOST_RUNTIME": "cloud-hypervisor"}, True),
        ([], {"DNAH_HOST_RUNTIME": "auto", "DNAH_VM_ACCEL": "kvm"}, True),  # auto picks QEMU then
        (["--runtime", "oci"], {"DNAH_VM_ACCEL": "kvm"}, False),
    ],
    ids=["flag", "environment", "auto", "oci"],
)
def test_up_builds_the_guest_image_before_hostd_starts(
    argv: list[str],
    env: dict[str, str],
    vm: bool,
    vm_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """However the VM runtime is chosen, ``dnah up`` has its guest image ready before any
    service starts (hostd would otherwise build it during the first create, while the core
    waits on it). The stack itself is not started: ``_serve`` records what is ready by then."""
    monkeypatch.delenv("DNAH_HOST_RUNTIME", raising=False)
    monkeypatch.setenv("DNAH_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DNAH_VM_IMAGE_CACHE", str(vm_cache))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    served: list[tuple[str, list[str]]] = []

    def serve(stack: Stack, _pidfile: Path) -> int:
        images = [p.name for p in vm_cache.iterdir() if (p / "image.json").is_file()]
        served.append((stack.hostd_config().runtime, images))
        return 0

    monkeypatch.setattr(cli_main, "_serve", serve)
    assert main(["up", *argv]) == 0
    [(runtime, images)] = served
    out = capsys.readouterr().out
    assert "template dnah-base ready" in out
    if vm:
        assert runtime in ("qemu", "cloud-hypervisor")
        assert [image.startswith("dnah-base-") for image in images] == [True], images
        assert f"guest image {images[0]} ready" in out
    else:
        assert runtime == "oci"
        assert "guest image" not in out
