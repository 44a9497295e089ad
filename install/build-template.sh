#!/usr/bin/env bash
# Builds the dnah-base root filesystem into the (new, empty) directory given as $1.
#
# Called by hosts/templates.py, which decides where the result is cached and under
# which content hash; this script only knows how to produce one rootfs. Everything
# comes from Debian's own archive, so the build works on any machine that reaches it.
set -euo pipefail

out=${1:?usage: build-template.sh OUTDIR}
suite=${DNAH_DEBIAN_SUITE:-bookworm}
mirror=${DNAH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=bash,coreutils,python3,python3-pip,python3-venv,sudo,git,curl,ca-certificates,nodejs,procps,iproute2,less,util-linux,openssh-sftp-server

echo "step 1/3: debootstrap $suite (minbase + $packages)"
debootstrap --variant=minbase --include="$packages" "$suite" "$out" "$mirror" \
  | while IFS= read -r line; do printf '  %s\n' "$line"; done

echo "step 2/3: sandbox users, sudo and mount points"
# daytona (uid 1000) is the account the agent and every command run as; user (uid 1001) is
# the account E2B's SDK names. Both get passwordless sudo: root inside a sandbox is an
# unprivileged host uid in the sandbox's user namespace (docs/runtime.md).
chroot "$out" /usr/sbin/groupadd --gid 1000 daytona
chroot "$out" /usr/sbin/useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash daytona
chroot "$out" /usr/sbin/groupadd --gid 1001 user
chroot "$out" /usr/sbin/useradd --uid 1001 --gid 1001 --create-home --shell /bin/bash user
printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' daytona user > "$out/etc/sudoers.d/dnah"
chmod 0440 "$out/etc/sudoers.d/dnah"
mkdir -p "$out/opt/dnah" "$out/run/dnah" "$out/workspace"
chown 1000:1000 "$out/workspace"
: > "$out/etc/resolv.conf"  # hostd bind-mounts the host's resolver config at start

echo "step 3/3: trimming caches"
rm -rf "$out/var/cache/apt/archives/"*.deb "$out/var/lib/apt/lists/"* "$out/var/log/"*
