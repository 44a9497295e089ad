#!/usr/bin/env bash
# Installs what `make up` and `make test` need on a Debian/Ubuntu machine, as root:
# system packages (Postgres, Redis, debootstrap, nftables, btrfs-progs, runc, QEMU and the guest image's
# tools) and the project's virtualenv.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nft >/dev/null || need+=(nftables)
command -v redis-server >/dev/null || need+=(redis-server)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v btrfs >/dev/null || need+=(btrfs-progs)   # the storage pool (hosts/storage/)
command -v runc >/dev/null || need+=(runc)   # runs every sandbox (hosts/runtime/oci/)
command -v losetup >/dev/null || need+=(mount)   # the pool's image file on a loop device
command -v nsenter >/dev/null || need+=(util-linux)   # each sandbox's sysfs (hosts/runtime/oci/_host.py)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the code-interpreter template's kernel, which tests/guest/test_code_interpreter.py runs here too
dpkg -s python3-ipykernel python3-jupyter-client python3-matplotlib >/dev/null 2>&1 \
  || need+=(python3-ipykernel python3-jupyter-client python3-matplotlib)
command -v npm >/dev/null || need+=(nodejs npm)   # the mppx client in the payment tests
# microVM sandboxes (hosts/vm/, hosts/runtime/qemu/): the VMM, and what builds the guest image
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)   # the initramfs needs it static
command -v depmod >/dev/null || need+=(kmod)   # modules.dep for the guest kernel
command -v lz4 >/dev/null || need+=(lz4)   # unpacks the kernel's vmlinux (and a zstd one:)
command -v zstd >/dev/null || need+=(zstd)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)   # the guest's root disk (mkfs.ext4 -d)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing Python dependencies"
  "$venv/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
