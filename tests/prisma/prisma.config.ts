// Prisma 7 reads connection URLs from here, no longer from schema.prisma. Only the CLI uses it
// (here: `prisma migrate diff` through schema-engine-wasm.mjs); the client gets its connection
// from the driver adapter (see read-users.mjs).
import { defineConfig } from "prisma/config";

export default defineConfig({
  // A byte-for-byte copy of prisma/schema.prisma, made by setup.sh (prisma-client-js generates
  // into the node_modules next to the schema, so the schema must sit inside this project).
  schema: "generated/schema.prisma",
  datasource: {
    url: process.env.DATABASE_URL,
  },
});
