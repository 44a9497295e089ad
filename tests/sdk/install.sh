#!/usr/bin/env bash
# Installs the SDKs the tests in tests/sdk/ drive outside the repo, in a directory named after
# the hash of the manifest that pins them, and prints that directory. Idempotent, and safe to
# run concurrently (pytest-xdist workers do): installs are serialised by a lock.
#   install.sh [MANIFEST]   MANIFEST is a pip requirements file (default requirements.txt: the
#                           Daytona SDK) made into a virtualenv, or a package-lock.json whose
#                           package.json sits next to it, installed with npm ci (node_modules
#                           inside the printed directory).
# They cannot go into .venv: see requirements.txt.
#   DNAH_SDK_CACHE (default /var/cache/dnah/sdk) is where they live.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest=$(realpath "${1:-$here/requirements.txt}")
cache=${DNAH_SDK_CACHE:-/var/cache/dnah/sdk}
hash=$(sha256sum "$manifest" | cut -c1-16)
case "$manifest" in
  *.txt) dir="$cache/venv-$hash" ;;
  */package-lock.json) dir="$cache/npm-$hash" ;;
  *) echo "install.sh: $manifest is neither a requirements .txt nor a package-lock.json" >&2; exit 2 ;;
esac
mkdir -p "$cache"
exec 9>"$dir.lock"
flock 9
if [ ! -f "$dir/.installed" ]; then
  rm -rf "$dir"
  case "$manifest" in
    *.txt)
      "${PYTHON:-python3}" -m venv "$dir"
      "$dir/bin/pip" install -q --disable-pip-version-check -r "$manifest" >&2
      ;;
    *)
      mkdir -p "$dir"
      cp "$(dirname "$manifest")/package.json" "$manifest" "$dir/"
      npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
      ;;
  esac
  touch "$dir/.installed"
fi
echo "$dir"
