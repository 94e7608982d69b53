#!/usr/bin/env bash
# Prints the DDL Prisma generates for prisma/schema.prisma, exactly as
# `prisma migrate diff --from-empty --to-schema prisma/schema.prisma --script` prints it.
#
# That command needs Prisma's schema engine. Its native binary is downloaded from Prisma's own
# server, which cannot be reached here, so PRISMA_SCHEMA_ENGINE_BINARY points the real Prisma CLI
# at schema-engine-wasm.mjs: the same engine compiled to WebAssembly (@prisma/schema-engine-wasm),
# talking to PostgreSQL through @prisma/adapter-pg. The engine connects to DATABASE_URL (any
# PostgreSQL database: it only reads the server version) and changes nothing.
#
#   DATABASE_URL=postgresql://... tests/prisma/migrate-diff.sh > prisma/expected-ddl.sql
#
# Run tests/prisma/setup.sh first.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
if [[ -z ${DATABASE_URL:-} ]]; then
    echo "tests/prisma/migrate-diff.sh: set DATABASE_URL to a PostgreSQL database" >&2
    exit 1
fi
CHECKPOINT_DISABLE=1 PRISMA_HIDE_UPDATE_MESSAGE=1 \
    PRISMA_SCHEMA_ENGINE_BINARY="$here/schema-engine-wasm.mjs" \
    exec node_modules/.bin/prisma migrate diff --from-empty --to-schema ../../prisma/schema.prisma --script
