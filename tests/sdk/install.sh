#!/usr/bin/env bash
# Installs the SDKs the tests in tests/sdk/ drive (requirements.txt pins them) into a virtualenv
# outside the repo, in a directory named after the requirements' hash, and prints that
# directory. Idempotent, and safe to run concurrently (pytest-xdist workers do): installs are
# serialised by a lock. They cannot go into .venv: see requirements.txt.
#   DNAH_SDK_CACHE (default /var/cache/dnah/sdk) is where such virtualenvs live.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DNAH_SDK_CACHE:-/var/cache/dnah/sdk}
dir="$cache/venv-$(sha256sum "$here/requirements.txt" | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$dir.lock"
flock 9
if [ ! -f "$dir/.installed" ]; then
  rm -rf "$dir"
  "${PYTHON:-python3}" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  touch "$dir/.installed"
fi
echo "$dir"
