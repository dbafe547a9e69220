#!/usr/bin/env node
// Validates the generated API documents with the official parsers:
//   docs/asyncapi.yaml       @asyncapi/parser (AsyncAPI 2.x/3.x, with its Spectral ruleset)
//   docs/openapi/*.{json,yaml,yml}  @readme/openapi-parser (Swagger 2.0, OpenAPI 3.0/3.1), if any
//
// Usage: node deploy/local/validate-docs.mjs [FILE...]
//   Without FILEs it checks the documents above (a missing docs/openapi/ is skipped). Each file is
//   recognised by its top-level `asyncapi`, `openapi` or `swagger` field.
//   The parsers come from $EDD_NODE_DIR (default <repo>/.edd/node), installed at pinned versions by
//   `ensure_node_tools` in deploy/local/lib.sh from deploy/local/node/package-lock.json.
//
// Exit status: 0 when no document has an error-severity diagnostic, 1 when one does, 2 on usage or
// installation problems. Warnings are printed but do not fail.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const nodeDir = resolve(process.env.EDD_NODE_DIR || join(repo, ".edd", "node"));

function load(pkg) {
  const require = createRequire(join(nodeDir, "package.json"));
  try {
    return require(pkg);
  } catch (err) {
    console.error(
      `validate-docs: cannot load ${pkg} from ${nodeDir} (${err.code || err.message}); ` +
        "run `source deploy/local/lib.sh && ensure_node_tools`",
    );
    process.exit(2);
  }
}

function defaultFiles() {
  const files = [];
  const asyncapi = join(repo, "docs", "asyncapi.yaml");
  if (existsSync(asyncapi)) files.push(asyncapi);
  const openapiDir = join(repo, "docs", "openapi");
  if (existsSync(openapiDir)) {
    for (const name of readdirSync(openapiDir).sort()) {
      if (/\.(json|ya?ml)$/.test(name)) files.push(join(openapiDir, name));
    }
  }
  return files;
}

// Which kind of document this is, from its top-level field (JSON or YAML, without parsing YAML).
function kindOf(text) {
  try {
    const doc = JSON.parse(text.replace(/^\s*#.*$/gm, ""));
    if (doc && typeof doc === "object") {
      if ("asyncapi" in doc) return "asyncapi";
      if ("openapi" in doc || "swagger" in doc) return "openapi";
    }
  } catch {
    // YAML: look for the field at the start of a line.
  }
  if (/^["']?asyncapi["']?\s*:/m.test(text)) return "asyncapi";
  if (/^["']?(openapi|swagger)["']?\s*:/m.test(text)) return "openapi";
  return null;
}

const SEVERITY = ["error", "warning", "info", "hint"];

async function checkAsyncapi(file, text) {
  const { Parser } = load("@asyncapi/parser");
  const parser = new Parser();
  const { diagnostics } = await parser.parse(text, { source: file });
  let errors = 0;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] || String(d.severity);
    if (d.severity === 0) errors += 1;
    if (d.severity > 1) continue; // info and hints are noise here
    const line = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : "?";
    const where = d.path && d.path.length ? ` at ${d.path.join(".")}` : "";
    console.log(`${relative(repo, file)}:${line}: ${severity} ${d.code}: ${d.message}${where}`);
  }
  return errors;
}

async function checkOpenapi(file) {
  const { validate, compileErrors } = load("@readme/openapi-parser");
  let result;
  try {
    result = await validate(file);
  } catch (err) {
    console.log(`${relative(repo, file)}: error: ${err.message}`);
    return 1;
  }
  for (const w of result.warnings || []) {
    console.log(`${relative(repo, file)}: warning: ${w.message}`);
  }
  if (result.valid) return 0;
  console.log(`${relative(repo, file)}: ${compileErrors(result)}`);
  return Math.max(1, (result.errors || []).length);
}

const args = process.argv.slice(2);
if (args.includes("-h") || args.includes("--help")) {
  console.log("usage: node deploy/local/validate-docs.mjs [FILE...]");
  process.exit(0);
}
const files = args.length ? args.map((f) => resolve(f)) : defaultFiles();
if (!files.length) {
  console.log("validate-docs: no documents to check");
  process.exit(0);
}

let failed = 0;
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    console.error(`validate-docs: cannot read ${file}: ${err.message}`);
    process.exit(2);
  }
  const kind = kindOf(text);
  let errors;
  if (kind === "asyncapi") errors = await checkAsyncapi(file, text);
  else if (kind === "openapi") errors = await checkOpenapi(file);
  else {
    console.error(`validate-docs: ${relative(repo, file)} is neither AsyncAPI nor OpenAPI/Swagger`);
    process.exit(2);
  }
  console.log(`${relative(repo, file)}: ${kind}: ${errors ? `${errors} error(s)` : "valid"}`);
  if (errors) failed += 1;
}
process.exit(failed ? 1 : 0);
