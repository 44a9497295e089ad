#!/usr/bin/env bash
# Builds code-interpreter-v1 (E2B's code interpreter template) into $1, which already holds a
# copy of the dnah-base rootfs (hosts/templates.py: a layered recipe; this script's bytes are
# part of the template's content hash, so editing it makes a new template).
#
# What it adds: a Jupyter kernel (ipykernel, jupyter_client), matplotlib and pandas from
# Debian's archive, and /etc/dnah/services.json, which tells the agent to start the
# code-interpreter server (guest/code_interpreter/, run from the agent's read-only
# /opt/dnah/guest, so the server always matches the host's) on port 49999 as `user`.
set -euo pipefail

out=${1:?usage: code-interpreter-v1.sh ROOTFS}
packages=(python3-ipykernel python3-jupyter-client python3-matplotlib python3-pandas)

# apt inside the chroot needs a resolver and /proc; both are undone however the build ends
cp /etc/resolv.conf "$out/etc/resolv.conf"
mount -t proc proc "$out/proc"
cleanup() {
  umount "$out/proc" 2>/dev/null || true
  : > "$out/etc/resolv.conf"  # hostd bind-mounts the host's resolver config at start
}
trap cleanup EXIT

echo "step 1/4: apt-get install ${packages[*]}"
chroot "$out" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -qq
chroot "$out" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${packages[@]}" \
  | while IFS= read -r line; do printf '  %s\n' "$line"; done

echo "step 2/4: matplotlib's font cache for user (the first chart would build it)"
chroot --userspec=1001:1001 "$out" /usr/bin/env HOME=/home/user MPLBACKEND=Agg \
  python3 -c 'import matplotlib.pyplot as plt; plt.figure(); print("matplotlib", plt.matplotlib.__version__)'

echo "step 3/4: the code-interpreter service (/etc/dnah/services.json)"
mkdir -p "$out/etc/dnah"
cat > "$out/etc/dnah/services.json" <<'JSON'
{
  "services": [
    {
      "name": "code-interpreter",
      "argv": ["/usr/bin/python3", "-m", "guest.code_interpreter", "--port", "49999"],
      "user": "user",
      "cwd": "/home/user",
      "env": {"PYTHONPATH": "/opt/dnah"},
      "restart": "always",
      "ready_port": 49999
    }
  ]
}
JSON

echo "step 4/4: trimming caches"
chroot "$out" apt-get clean
rm -rf "$out/var/lib/apt/lists/"* "$out/var/log/"*
