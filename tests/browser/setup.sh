#!/usr/bin/env bash
# Installs this Node project (npm ci: playwright-core, pinned in package-lock.json) for the
# browser test of the status page. playwright-core downloads no browser: the test drives the
# system's Chromium (Debian: apt-get install chromium).
# Idempotent: installs only when package-lock.json or the Node version changed, so a second run
# takes milliseconds. Safe to run concurrently: runs are serialised with flock.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

say() { echo "tests/browser/setup.sh: $*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "error: '$tool' is not installed. Install Node.js 20+ with npm (Debian/Ubuntu:"
        say "apt-get install nodejs npm, or Node.js from nodejs.org) and run this again."
        exit 1
    fi
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
    say "error: Node.js $(node --version) is too old; playwright-core needs Node.js 20 or newer."
    exit 1
fi

exec 9>"$here/.setup.lock"
flock 9

install_key="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
install_stamp=node_modules/.clerk-sync-installed
if [[ ! -f $install_stamp || $(cat "$install_stamp") != "$install_key" ]]; then
    say "installing (npm ci)..."
    if ! npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2; then
        say "error: 'npm ci' failed. The npm registry ($(npm config get registry)) must be"
        say "reachable for the first install; see the npm output above."
        exit 1
    fi
    echo "$install_key" >"$install_stamp"
fi
