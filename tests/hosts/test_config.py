"""hostd's configuration: defaults, overrides, and start-up errors that name the variable."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from hosts.config import BUILD_SCRIPT, GUEST_DIR, ConfigError, load_config
from hosts.runtime.kvm import KvmProbe, probe_kvm

REPO = Path(__file__).resolve().parent.parent.parent
MINIMAL = {"DNAH_BOOTSTRAP_TOKEN": "boot-token"}


def test_defaults_come_from_the_machine(tmp_path: Path) -> None:
    config = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)})

    assert (config.host, config.port, config.core_url) == ("127.0.0.1", 3200, "http://127.0.0.1:3100")
    assert config.api_url == "http://127.0.0.1:3200"
    assert config.state_dir == tmp_path / "hostd"
    # The OCI runtime's snapshots are btrfs snapshots: the store is in the pool; archives are not.
    assert config.snapshot_dir == tmp_path / "hostd" / "pool" / "snapshots"
    assert config.archive_dir == tmp_path / "archives"
    assert (config.bridge, config.cgroup) == ("dnah0", "dnah")
    assert config.subnet == ipaddress.IPv4Network("10.213.0.0/16")
    assert config.template_cache == Path("/var/cache/dnah/templates")
    assert config.cpu == os.cpu_count()
    assert config.ram_mb > 0 and config.disk_gb > 0
    assert len(config.api_token) >= 32
    assert config.log_format is None
    assert config.guest_dir == GUEST_DIR == REPO / "guest"
    assert config.build_script == BUILD_SCRIPT == REPO / "install" / "build-template.sh"
    assert BUILD_SCRIPT.is_file()


def test_the_stores_can_live_elsewhere_the_snapshots_only_inside_the_pool(tmp_path: Path) -> None:
    pool = {**MINIMAL, "DNAH_POOL_DIR": str(tmp_path / "pool")}
    config = load_config(
        {**pool, "DNAH_SNAPSHOT_DIR": str(tmp_path / "pool" / "s"), "DNAH_ARCHIVE_DIR": str(tmp_path / "a")}
    )
    assert (config.snapshot_dir, config.archive_dir) == (tmp_path / "pool" / "s", tmp_path / "a")
    assert load_config(pool).snapshot_dir == tmp_path / "pool" / "snapshots"

    for outside in (tmp_path / "s", tmp_path / "pool", tmp_path / "pool" / "disks" / "x"):
        with pytest.raises(ConfigError, match=r"DNAH_SNAPSHOT_DIR=.*inside the storage pool"):
            load_config({**pool, "DNAH_SNAPSHOT_DIR": str(outside)})
    # The fake runtime is not on the pool: its snapshots go anywhere, by default in the var dir.
    fake = {**MINIMAL, "DNAH_VAR_DIR": str(tmp_path), "DNAH_HOST_RUNTIME": "fake"}
    assert load_config(fake).snapshot_dir == tmp_path / "snapshots"
    assert load_config({**fake, "DNAH_SNAPSHOT_DIR": str(tmp_path / "s")}).snapshot_dir == tmp_path / "s"


def test_each_start_gets_a_fresh_api_token_unless_one_is_set() -> None:
    assert load_config(MINIMAL).api_token != load_config(MINIMAL).api_token
    fixed = "t" * 20
    assert load_config({**MINIMAL, "DNAH_HOSTD_TOKEN": fixed}).api_token == fixed


def test_overrides(tmp_path: Path) -> None:
    config = load_config(
        {
            **MINIMAL,
            "DNAH_HOSTD_HOST": "10.0.0.5",
            "DNAH_HOSTD_PORT": "4200",
            "DNAH_CORE_URL": "https://core.example:8443/",
            "DNAH_HOST_NAME": "host-7",
            "DNAH_VAR_DIR": str(tmp_path / "not-yet-created"),
            "DNAH_HOST_BRIDGE": "br-test",
            "DNAH_HOST_SUBNET": "10.9.0.0/24",
            "DNAH_HOST_CPU": "3",
            "DNAH_HOST_RAM_MB": "2048",
            "DNAH_HOST_DISK_GB": "50",
            "DNAH_HEARTBEAT_S": "2.5",
            "DNAH_LOG_FORMAT": "json",
        }
    )

    assert config.api_url == "http://10.0.0.5:4200"
    assert config.core_url == "https://core.example:8443"
    assert config.host_name == "host-7"
    assert config.state_dir == tmp_path / "not-yet-created" / "hostd"
    assert config.subnet == ipaddress.IPv4Network("10.9.0.0/24")
    assert (config.cpu, config.ram_mb, config.disk_gb) == (3, 2048, 50)
    assert config.heartbeat_s == 2.5
    assert config.log_format == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DNAH_HOSTD_PORT", "0"),
        ("DNAH_HOSTD_PORT", "http"),
        ("DNAH_CORE_URL", "127.0.0.1:3100"),
        ("DNAH_HOST_BRIDGE", "a-very-long-bridge-name"),
        ("DNAH_HOST_CGROUP", "../escape"),
        ("DNAH_HOST_SUBNET", "10.0.0.1/16"),
        ("DNAH_HOST_SUBNET", "10.0.0.0/31"),
        ("DNAH_HOST_CPU", "-1"),
        ("DNAH_HOST_RAM_MB", "lots"),
        ("DNAH_HEARTBEAT_S", "0"),
        ("DNAH_HOSTD_TOKEN", "short"),
        ("DNAH_LOG_FORMAT", "xml"),
        ("DNAH_POOL_SIZE_GB", "0"),
        ("DNAH_POOL_SIZE_GB", "big"),
        ("DNAH_SANDBOX_UID_BASE", "1000"),  # would map sandbox ids onto host accounts
        ("DNAH_SANDBOX_UID_BASE", str(2**32 - 65536)),  # the last id would be (uid_t) -1
        ("DNAH_SANDBOX_UID_BASE", "-5"),
        ("DNAH_SANDBOX_EGRESS", "open"),
        ("DNAH_VM_ACCEL", "hvf"),
        ("DNAH_VM_BOOT_TIMEOUT", "0"),
    ],
)
def test_invalid_values_are_rejected_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        load_config({**MINIMAL, name: value})


def test_bootstrap_token_is_required() -> None:
    with pytest.raises(ConfigError, match="DNAH_BOOTSTRAP_TOKEN is required"):
        load_config({})


def test_the_advertised_url_is_what_the_core_is_given(tmp_path: Path) -> None:
    base = {**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}
    assert load_config({**base, "DNAH_HOSTD_PORT": "3201"}).api_url == "http://127.0.0.1:3201"
    advertised = load_config(
        {**base, "DNAH_HOSTD_HOST": "0.0.0.0", "DNAH_HOSTD_ADVERTISE_URL": "http://host-7.internal:3200/"}
    )
    assert advertised.api_url == "http://host-7.internal:3200"
    with pytest.raises(ConfigError, match="DNAH_HOSTD_ADVERTISE_URL"):
        load_config({**base, "DNAH_HOSTD_HOST": "0.0.0.0"})  # the core cannot reach 0.0.0.0
    with pytest.raises(ConfigError, match="DNAH_HOSTD_ADVERTISE_URL='ftp://x'"):
        load_config({**base, "DNAH_HOSTD_ADVERTISE_URL": "ftp://x"})


def test_the_storage_pool_defaults_to_an_image_under_the_state_dir(tmp_path: Path) -> None:
    config = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)})

    assert config.pool_dir is None
    assert config.pool_image == tmp_path / "hostd" / "pool.img"
    assert config.pool_mount == tmp_path / "hostd" / "pool"
    assert config.pool_size_gb == 32
    assert config.sandbox_uid_base == 1_000_000


def test_the_storage_pool_can_be_an_operator_directory_or_another_image(tmp_path: Path) -> None:
    config = load_config(
        {
            **MINIMAL,
            "DNAH_POOL_DIR": str(tmp_path / "btrfs"),
            "DNAH_POOL_IMAGE": str(tmp_path / "img"),
            "DNAH_POOL_SIZE_GB": "8",
            "DNAH_POOL_MOUNT": str(tmp_path / "mnt"),
            "DNAH_SANDBOX_UID_BASE": str(2**32 - 1 - 65536),  # the highest base that fits
        }
    )

    assert config.pool_dir == tmp_path / "btrfs"
    assert (config.pool_image, config.pool_mount) == (tmp_path / "img", tmp_path / "mnt")
    assert config.pool_size_gb == 8
    assert config.sandbox_uid_base + 65535 == 2**32 - 2


NO_KVM = KvmProbe(False, "/dev/kvm is nested PVM")
KVM = KvmProbe(True, "/dev/kvm is hardware KVM (kvm_intel)")


def _machine(kvm: KvmProbe, *binaries: str) -> dict[str, Any]:
    """``load_config``'s probes for a machine with this KVM and these binaries on PATH."""
    return {"kvm": lambda: kvm, "which": lambda name: f"/usr/bin/{name}" if name in binaries else None}


def test_auto_picks_a_vmm_only_with_usable_kvm(tmp_path: Path) -> None:
    base = {**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}
    both = ("cloud-hypervisor", "qemu-system-x86_64")

    def pick(kvm: KvmProbe, *binaries: str, **env: str) -> tuple[str, str]:
        config = load_config({**base, **env}, **_machine(kvm, *binaries))
        return config.runtime, config.vm_accel

    assert pick(KVM, *both) == ("cloud-hypervisor", "kvm")
    assert pick(KVM, "qemu-system-x86_64") == ("qemu", "kvm")
    assert pick(KVM) == ("oci", "kvm")
    # No usable KVM: containers, whatever is installed (a TCG VM must be asked for by name).
    assert pick(NO_KVM, *both) == ("oci", "tcg")
    # The accelerator setting overrides the probe both ways, and auto follows it.
    assert pick(NO_KVM, *both, DNAH_VM_ACCEL="kvm") == ("cloud-hypervisor", "kvm")
    assert pick(KVM, *both, DNAH_VM_ACCEL="tcg") == ("oci", "tcg")
    # The binaries looked for are the configured ones.
    assert pick(KVM, "/opt/qemu", DNAH_QEMU_BINARY="/opt/qemu") == ("qemu", "kvm")
    # Named runtimes are taken as named, without consulting the machine.
    assert pick(NO_KVM, DNAH_HOST_RUNTIME="qemu") == ("qemu", "tcg")
    assert pick(NO_KVM, DNAH_HOST_RUNTIME="cloud-hypervisor") == ("cloud-hypervisor", "tcg")
    assert pick(KVM, *both, DNAH_HOST_RUNTIME="oci") == ("oci", "kvm")


def test_the_choice_says_why(tmp_path: Path) -> None:
    base = {**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}
    auto = load_config(base, **_machine(NO_KVM, "qemu-system-x86_64"))
    assert auto.runtime_reason == "auto: no usable KVM (/dev/kvm is nested PVM), so containers"
    named = load_config({**base, "DNAH_HOST_RUNTIME": "qemu"}, **_machine(NO_KVM))
    assert named.runtime_reason == "DNAH_HOST_RUNTIME=qemu"


def test_auto_is_containers_on_this_machine(tmp_path: Path) -> None:
    """The real probes: this machine's /dev/kvm is nested PVM (or absent), so the suite runs
    on OCI. On a machine with hardware KVM this test says so instead of passing silently."""
    if probe_kvm().usable:
        pytest.skip("this machine has usable KVM: auto would pick a VMM")
    config = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)})
    assert (config.runtime, config.vm_accel) == ("oci", "tcg")


def test_the_fake_runtime_is_only_taken_when_named(tmp_path: Path) -> None:
    fake = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path), "DNAH_HOST_RUNTIME": "fake"})
    assert fake.runtime == "fake"
    with pytest.raises(
        ConfigError,
        match="DNAH_HOST_RUNTIME='docker': must be one of auto, oci, qemu, cloud-hypervisor, fake",
    ):
        load_config({**MINIMAL, "DNAH_HOST_RUNTIME": "docker"})


def test_vm_settings(tmp_path: Path) -> None:
    base = {**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}
    defaults = load_config(base)
    assert (defaults.qemu_binary, defaults.cloud_hypervisor_binary) == (
        "qemu-system-x86_64",
        "cloud-hypervisor",
    )
    assert defaults.vm_image_cache == Path("/var/cache/dnah/vm")
    assert defaults.vm_boot_timeout_s == 90
    config = load_config(
        {
            **base,
            "DNAH_HOST_RUNTIME": "qemu",
            "DNAH_VM_ACCEL": "tcg",
            "DNAH_QEMU_BINARY": "/opt/bin/qemu",
            "DNAH_CLOUD_HYPERVISOR_BINARY": "/opt/bin/ch",
            "DNAH_VM_IMAGE_CACHE": str(tmp_path / "vm"),
            "DNAH_VM_BOOT_TIMEOUT": "240",
        }
    )
    assert (config.runtime, config.vm_accel) == ("qemu", "tcg")
    assert (config.qemu_binary, config.cloud_hypervisor_binary) == ("/opt/bin/qemu", "/opt/bin/ch")
    assert (config.vm_image_cache, config.vm_boot_timeout_s) == (tmp_path / "vm", 240)
    # The VM runtimes keep their disks in the pool and copy them by reflink: snapshots live there.
    assert config.snapshot_dir == tmp_path / "hostd" / "pool" / "snapshots"
    with pytest.raises(ConfigError, match=r"DNAH_SNAPSHOT_DIR=.*inside the storage pool"):
        load_config(
            {**base, "DNAH_HOST_RUNTIME": "cloud-hypervisor", "DNAH_SNAPSHOT_DIR": str(tmp_path / "s")}
        )


def test_the_kvm_probe_refuses_what_is_not_hardware_kvm(tmp_path: Path) -> None:
    modules = tmp_path / "module"
    modules.mkdir()
    assert probe_kvm(tmp_path / "absent", modules) == KvmProbe(False, f"{tmp_path / 'absent'} does not exist")
    dev = tmp_path / "kvm"
    dev.touch()  # openable, but not a KVM device
    assert probe_kvm(dev, modules).reason == "no hardware KVM provider (kvm_intel or kvm_amd) is loaded"
    (modules / "kvm_pvm").mkdir()
    assert probe_kvm(dev, modules).reason == f"{dev} is nested PVM (kvm_pvm), which hangs stock guest kernels"
    (modules / "kvm_intel").mkdir()
    probe = probe_kvm(dev, modules)  # a provider, but the node does not answer KVM's ioctl
    assert not probe.usable and "KVM_GET_API_VERSION" in probe.reason


def test_sandboxes_reach_beyond_the_host_unless_egress_is_none(tmp_path: Path) -> None:
    assert load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}).egress == "nat"
    closed = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path), "DNAH_SANDBOX_EGRESS": "none"})
    assert closed.egress == "none"
