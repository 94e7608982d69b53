#!/usr/bin/env bash
# Installs this Node project (npm ci) and generates the Prisma client from prisma/schema.prisma.
# Idempotent: each step runs only when its inputs changed (package-lock.json and the Node version
# for the install; those plus the schema for the client), so a second run takes milliseconds.
# Safe to run concurrently (the tests do): runs are serialised with flock.
#
# Needs Node.js (20 or newer) and npm, and the npm registry for the first install. Nothing else
# is downloaded: `prisma generate` only needs the WASM bundled with the `prisma` package, but the
# CLI insists on finding its native schema engine first, so PRISMA_SCHEMA_ENGINE_BINARY points at
# schema-engine-wasm.mjs (which `generate` never starts; `migrate diff` does, see migrate-diff.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

say() { echo "tests/prisma/setup.sh: $*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "error: '$tool' is not installed. Install Node.js 20+ with npm (Debian/Ubuntu:"
        say "apt-get install nodejs npm, or Node.js from nodejs.org) and run this again."
        exit 1
    fi
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
    say "error: Node.js $(node --version) is too old; Prisma 7 needs Node.js 20.19 or newer."
    exit 1
fi

exec 9>"$here/.setup.lock"
flock 9

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
install_key="$(hash_of package.json package-lock.json) node-$(node --version)"
generate_key="$install_key schema-$(hash_of "$root/prisma/schema.prisma")"
install_stamp=node_modules/.clerk-sync-installed
generate_stamp=node_modules/.clerk-sync-generated

if [[ ! -f $install_stamp || $(cat "$install_stamp") != "$install_key" ]]; then
    say "installing (npm ci)..."
    # --ignore-scripts: the only install scripts are prisma's (a Node version check) and
    # @prisma/engines' (downloads native engines from outside the npm registry); npm 11 skips
    # them anyway, older npm would fail on the download.
    if ! npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2; then
        say "error: 'npm ci' failed. The npm registry ($(npm config get registry)) must be"
        say "reachable for the first install; see the npm output above."
        exit 1
    fi
    echo "$install_key" >"$install_stamp"
fi

if [[ ! -f $generate_stamp || $(cat "$generate_stamp") != "$generate_key" ]]; then
    say "generating the Prisma client from prisma/schema.prisma..."
    # prisma-client-js generates into the node_modules next to the schema, so generate from a
    # byte-for-byte copy inside this project.
    mkdir -p generated
    cp "$root/prisma/schema.prisma" generated/schema.prisma
    CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1 \
        PRISMA_SCHEMA_ENGINE_BINARY="$here/schema-engine-wasm.mjs" \
        DATABASE_URL="${DATABASE_URL:-postgresql://unused@127.0.0.1:5432/unused}" \
        node_modules/.bin/prisma generate --schema generated/schema.prisma >&2
    echo "$generate_key" >"$generate_stamp"
fi
