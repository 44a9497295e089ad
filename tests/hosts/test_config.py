"""hostd's configuration: defaults, overrides, and start-up errors that name the variable."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from hosts.config import BUILD_SCRIPT, GUEST_DIR, ConfigError, load_config

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


def test_the_runtime_is_the_real_one_unless_the_fake_is_named(tmp_path: Path) -> None:
    assert load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}).runtime == "oci"
    fake = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path), "DNAH_HOST_RUNTIME": "fake"})
    assert fake.runtime == "fake"
    with pytest.raises(ConfigError, match="DNAH_HOST_RUNTIME='docker': must be one of oci, fake"):
        load_config({**MINIMAL, "DNAH_HOST_RUNTIME": "docker"})


def test_sandboxes_reach_beyond_the_host_unless_egress_is_none(tmp_path: Path) -> None:
    assert load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path)}).egress == "nat"
    closed = load_config({**MINIMAL, "DNAH_VAR_DIR": str(tmp_path), "DNAH_SANDBOX_EGRESS": "none"})
    assert closed.egress == "none"
