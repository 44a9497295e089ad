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
packages=bash,coreutils,python3,git,curl,ca-certificates,nodejs,procps,iproute2,less,util-linux

echo "step 1/3: debootstrap $suite (minbase + $packages)"
debootstrap --variant=minbase --include="$packages" "$suite" "$out" "$mirror" \
  | while IFS= read -r line; do printf '  %s\n' "$line"; done

echo "step 2/3: sandbox user and mount points"
chroot "$out" /usr/sbin/groupadd --gid 1000 user
chroot "$out" /usr/sbin/useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash user
mkdir -p "$out/opt/dnah" "$out/run/dnah" "$out/workspace"
chown 1000:1000 "$out/workspace"
: > "$out/etc/resolv.conf"  # hostd bind-mounts the host's resolver config at start

echo "step 3/3: trimming caches"
rm -rf "$out/var/cache/apt/archives/"*.deb "$out/var/lib/apt/lists/"* "$out/var/log/"*
