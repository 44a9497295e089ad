#!/usr/bin/env bash
# Installs the mppx peer server's npm packages (package-lock.json pins them) outside the repo,
# in a directory named after the lock file's hash, and prints that directory. Idempotent.
# load/bench_payments.py --peer mppx runs server.mjs from this directory with Node.
#   DNAH_NPM_CACHE (default /var/cache/dnah/npm) is where such directories live.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DNAH_NPM_CACHE:-/var/cache/dnah/npm}
dir="$cache/mppx-peer-$(sha256sum "$here/package-lock.json" | cut -c1-16)"
if [ ! -f "$dir/node_modules/.package-lock.json" ]; then
  mkdir -p "$dir"
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  # viem 2.57 declares an optional peer mppx >=0.17 that the registry does not have yet.
  npm ci --prefix "$dir" --legacy-peer-deps --no-audit --no-fund --loglevel=error >&2
fi
echo "$dir"
