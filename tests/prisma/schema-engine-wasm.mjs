#!/usr/bin/env node
// A stand-in for Prisma's native `schema-engine` binary, so that `prisma migrate diff` runs
// where that binary cannot be downloaded (it comes from Prisma's own server, not the npm registry).
//
// The Prisma CLI starts the engine as `schema-engine [--datamodels FILE]... [--datasource JSON]`
// and speaks line-delimited JSON-RPC 2.0 with it over stdin/stdout (logs: JSON lines on stderr).
// This script answers that protocol with Prisma's own schema engine compiled to WebAssembly
// (`@prisma/schema-engine-wasm`, built from the engines commit the installed CLI names; its .wasm
// is byte for byte the `schema_engine_bg.wasm` inside the `prisma` package), reaching PostgreSQL
// through `@prisma/adapter-pg`. Each JSON-RPC method goes to the engine method of the same name.
//
// Use: PRISMA_SCHEMA_ENGINE_BINARY=/abs/path/to/this/file DATABASE_URL=postgresql://... \
//        npx prisma migrate diff --from-empty --to-schema SCHEMA --script
// A diff between schema files only reads the server version; it changes nothing. Commands that
// describe a live database (`db push`, `migrate dev`) do not work this way: the WASM engine fails
// reading PostgreSQL's catalog through the adapter ("Column type 'char' could not be
// deserialized"). `cli can-connect-to-database` is answered; other `cli` commands are refused.
//
// Everything, including start-up errors, is reported as a JSON-RPC answer to the first request:
// the CLI does not notice an engine that exits before it has sent one, and would exit 0 silently.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);

function errorMessage(error) {
  if (error instanceof Error) return error.message;
  if (typeof error === "string") return error;
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

/** A log line in the native engine's format (the CLI shows the last ERROR one on a crash). */
function logError(message) {
  process.stderr.write(`${JSON.stringify({ level: "ERROR", fields: { message } })}\n`);
}

function parseArgs(argv) {
  const args = { datamodels: [], datasource: undefined, cli: undefined };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--datamodels") args.datamodels.push(value);
    else if (flag === "--datasource") args.datasource = JSON.parse(value);
    else if (flag === "cli") args.cli = value; // one-shot commands, not JSON-RPC
    else if (!flag.startsWith("--")) throw new Error(`unexpected argument ${flag}`);
    // --enabled-preview-features, --extension-types: nothing to do for PostgreSQL diffs.
  }
  return args;
}

async function loadSchemaEngine() {
  // wasm-bindgen reports Rust panics through this registry, which the Prisma CLI normally sets.
  globalThis.PRISMA_WASM_PANIC_REGISTRY ??= {
    message: "",
    set_message(message) {
      this.message = `RuntimeError: ${message}`;
      logError(`schema engine panicked: ${message}`);
    },
  };
  // The package's `exports` name only its JS entry points; the .wasm sits beside them.
  const gluePath = require.resolve("@prisma/schema-engine-wasm/schema_engine_bg");
  const glue = await import(gluePath);
  const bytes = readFileSync(join(dirname(gluePath), "schema_engine_bg.wasm"));
  const { instance } = await WebAssembly.instantiate(bytes, { "./schema_engine_bg.js": glue });
  glue.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start();
  // Only the engine built from the commit this CLI was released with speaks its protocol.
  const { enginesVersion } = require("@prisma/engines-version");
  if (!glue.version().includes(enginesVersion)) {
    throw new Error(
      `@prisma/schema-engine-wasm ${glue.version()} is not the engine of this Prisma CLI ` +
        `(engines ${enginesVersion}): pin it to the version ending in ${enginesVersion}`,
    );
  }
  return glue.SchemaEngine;
}

async function startEngine() {
  const args = parseArgs(process.argv.slice(2));
  const url = args.datasource?.url || process.env.DATABASE_URL;
  if (!url) throw new Error("no database URL: set DATABASE_URL (prisma.config.ts passes it on)");
  const SchemaEngine = await loadSchemaEngine();
  const { PrismaPg } = await import("@prisma/adapter-pg");
  const { bindMigrationAwareSqlAdapterFactory } = await import("@prisma/driver-adapter-utils");
  // The CLI passes no --datamodels for `migrate diff` (the schemas travel in the request), but the
  // WASM engine cannot start without one: give it a datasource-only schema naming the connector.
  const datamodels = args.datamodels.length
    ? args.datamodels.map((path) => [path, readFileSync(path, "utf8")])
    : [["schema.prisma", 'datasource db {\n  provider = "postgresql"\n}\n']];
  const adapter = bindMigrationAwareSqlAdapterFactory(new PrismaPg({ connectionString: url }));
  // The engine logs JSON lines like the native binary does; the CLI reads them on stderr.
  const log = (line) =>
    process.stderr.write(`${typeof line === "string" ? line : JSON.stringify(line)}\n`);
  const engine = await SchemaEngine.new({ datamodels }, log, adapter);
  const methods = new Set(
    Object.getOwnPropertyNames(SchemaEngine.prototype).filter(
      (name) => !["constructor", "free"].includes(name) && typeof engine[name] === "function",
    ),
  );
  return { engine, methods };
}

// `schema-engine cli COMMAND` (e.g. before `db push`) answers on its exit status; the CLI skips
// the first stderr line and reads the others as JSON logs.
if (process.argv.includes("cli")) {
  process.stderr.write("schema-engine-wasm\n");
  const fail = (message) => {
    logError(`schema-engine-wasm: ${message}`);
    process.exit(1);
  };
  try {
    const { cli } = parseArgs(process.argv.slice(2));
    if (cli !== "can-connect-to-database") fail(`\`cli ${cli}\` is not supported`);
    await startEngine(); // connects, or throws why not
    process.exit(0);
  } catch (error) {
    fail(errorMessage(error));
  }
}

let started;
const send = (message) =>
  process.stdout.write(`${JSON.stringify({ jsonrpc: "2.0", ...message })}\n`);
const sendError = (id, message) =>
  send({
    id,
    error: {
      code: 4466,
      message: "An error happened. Check the data field for details.",
      data: { is_panic: false, message },
    },
  });

// The native engine does not return `diff`'s script: it asks the CLI to print it, with a JSON-RPC
// request `print` that the CLI answers. Do the same, so that the CLI writes it to stdout.
let nextPrintId = 1;
const printsInFlight = new Map();
function print(content) {
  const id = `print-${nextPrintId++}`;
  return new Promise((resolve) => {
    printsInFlight.set(id, resolve);
    send({ id, method: "print", params: { content } });
  });
}

async function handle({ id, method, params }) {
  let engine, methods;
  try {
    ({ engine, methods } = await (started ??= startEngine()));
  } catch (error) {
    logError(`schema-engine-wasm: ${errorMessage(error)}`);
    sendError(id, errorMessage(error));
    return;
  }
  if (!methods.has(method)) {
    send({ id, error: { code: -32601, message: `schema-engine-wasm: no method ${method}` } });
    return;
  }
  try {
    const result = await engine[method](params ?? undefined);
    if (method === "diff" && typeof result?.stdout === "string") {
      await print(result.stdout);
      result.stdout = null;
    }
    send({ id, result: result ?? null });
  } catch (error) {
    sendError(id, errorMessage(error));
  }
}

const inFlight = new Set();
const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
  if (!line.trim()) return;
  let message;
  try {
    message = JSON.parse(line);
  } catch (error) {
    send({ id: null, error: { code: -32700, message: `parse error: ${errorMessage(error)}` } });
    return;
  }
  if (message.method === undefined && printsInFlight.has(message.id)) {
    printsInFlight.get(message.id)();
    printsInFlight.delete(message.id);
    return;
  }
  const call = handle(message);
  inFlight.add(call);
  call.finally(() => inFlight.delete(call));
});
// The CLI ends the engine by closing its stdin.
input.on("close", async () => {
  await Promise.allSettled([...inFlight]);
  process.exit(0);
});
