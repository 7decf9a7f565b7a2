/**
 * The layering rule, checked on every test run: a folder of src/ may import (types included)
 * only from folders below it in LAYERS, so no import points up and no cycle can close.
 * ARCHITECTURE.md explains the layers; this list is the rule.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/** Top to bottom. `(root)` is src/*.ts (errors.ts); `native` is ../native (bun:ffi); `(package)` is ../package.json. */
export const LAYERS = ["cli", "api", "run", "config", "cluster", "engine", "scenario", "mqtt", "transport", "lifecycle", "dojot", "report", "pki", "store", "metrics", "ui", "sys", "(root)", "native", "(package)"] as const;

const SRC = resolve(import.meta.dir, "../src");

/** Every .ts/.js file under `root`: [path relative to root, text]. */
function sourceFiles(root = SRC): [string, string][] {
  const out: [string, string][] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.(ts|js)$/.test(name)) out.push([relative(root, path), readFileSync(path, "utf8")]);
    }
  };
  walk(root);
  return out;
}

/** Every relative import of every file under src/: [from file, to file], paths relative to src/. */
export function importsOf(root = SRC): [string, string][] {
  const out: [string, string][] = [];
  for (const [file, text] of sourceFiles(root)) {
    // import / export … from "./x", import("./x"), import type …: all count.
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)"(\.{1,2}\/[^"]+)"/g)) out.push([file, relative(root, resolve(root, dirname(file), m[1]!))]);
  }
  return out;
}

function folderOf(path: string): string {
  if (path.startsWith("../native/")) return "native";
  if (path === "../package.json") return "(package)";
  return path.includes("/") ? path.split("/")[0]! : "(root)";
}

/** Imports that point up, or at a folder LAYERS does not name. */
export function violations(imports: [string, string][], layers: readonly string[] = LAYERS): string[] {
  const rank = new Map(layers.map((l, i) => [l, i]));
  const out: string[] = [];
  for (const [from, to] of imports) {
    const a = folderOf(from);
    const b = folderOf(to);
    if (a === b) continue;
    const ra = rank.get(a);
    const rb = rank.get(b);
    if (ra === undefined || rb === undefined) out.push(`${from} -> ${to}: ${ra === undefined ? a : b}/ is not in LAYERS`);
    else if (rb < ra) out.push(`${from} -> ${to}: ${a}/ may not import ${b}/, which is above it`);
  }
  return out;
}

test("every import in src/ points down the layers (so no folder cycle can close)", () => {
  const imports = importsOf();
  expect(imports.length).toBeGreaterThan(200);
  expect(violations(imports)).toEqual([]);
});

test("the check catches an upward import and an unknown folder", () => {
  const upward: [string, string][] = [["mqtt/session.ts", "engine/swarm.ts"]];
  expect(violations(upward)).toEqual(["mqtt/session.ts -> engine/swarm.ts: mqtt/ may not import engine/, which is above it"]);
  expect(violations([["store/dir.ts", "cli/options.ts"]])).toEqual(["store/dir.ts -> cli/options.ts: store/ may not import cli/, which is above it"]);
  expect(violations([["newthing/x.ts", "metrics/stats.ts"]])).toEqual(["newthing/x.ts -> metrics/stats.ts: newthing/ is not in LAYERS"]);
  // A type-only import counts as much as any other.
  const typeOnly = importsOf().filter(([f]) => f === "engine/swarm.ts").map(([, t]) => t);
  expect(typeOnly).toContain("lifecycle/types.ts");
});

test("the environment is read only through the option specs (config/options.ts), never inside library code", () => {
  const readers = sourceFiles().filter(([, text]) => /\b(process\.env|Bun\.env)\b/.test(text)).map(([file]) => file);
  // cli/main.ts reads CICADA_DEBUG to print a stack trace on an internal error, nothing more.
  expect(readers.sort()).toEqual(["cli/main.ts", "config/options.ts"]);
});

/** Each folder's main file, which opens with two lines saying what the folder owns. */
export const MAIN_FILES: Record<string, string> = {
  cli: "main.ts", api: "app.ts", run: "session.ts", config: "options.ts", cluster: "fleet.ts", engine: "swarm.ts", mqtt: "session.ts", transport: "connect.ts",
  lifecycle: "service.ts", dojot: "client.ts", report: "summary.ts", pki: "signer.ts", store: "dir.ts", metrics: "stats.ts", ui: "embedded.d.ts", sys: "fs.ts", scenario: "api.ts",
};

test("every folder's main file says in its first two lines what the folder owns", () => {
  const folders = readdirSync(SRC).filter((n) => statSync(join(SRC, n)).isDirectory()).sort();
  expect(folders).toEqual(Object.keys(MAIN_FILES).sort());
  for (const [folder, file] of Object.entries(MAIN_FILES)) {
    const lines = readFileSync(join(SRC, folder, file), "utf8").replace(/^#!.*\n/, "").split("\n");
    expect(lines[0]).toStartWith(`// ${folder}/ — `);
    expect(lines[1]).toStartWith("// ");
  }
});

test("no file over 400 lines without a comment giving the reason", () => {
  const long = sourceFiles()
    .filter(([file, text]) => file.endsWith(".ts") && text.split("\n").length > 400 && !/Over 400 lines because/.test(text))
    .map(([file]) => file);
  expect(long).toEqual([]);
});
