/**
 * Loading a scenario file: the `cicada/scenario` module it imports (provided by the binary
 * itself, so a scenario needs no package), its content hash (what machines compare), and the
 * checks that turn a default export into a scenario the engine can run, with every problem
 * listed at once.
 */
import { plugin } from "bun";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseDuration, parseRange } from "../sys/units.ts";
import type { Device, Every, Interval, Scenario } from "./api.ts";

/** Which scenario file a run uses: its path on this machine and the SHA-256 of its content. */
export interface ScenarioRef {
  name: string;
  path: string;
  sha256: string;
}

/** A scenario checked and ready: its hooks, its fixed intervals in ms, its session in seconds. */
export interface LoadedScenario {
  ref: ScenarioRef;
  def: Scenario<Record<string, unknown>>;
  every: { name: string; fixed: [number, number] | null; hook: Every<Record<string, unknown>> }[];
  version?: 4 | 5;
  session?: { clean: boolean; expiryS: number };
}

export class ScenarioError extends Error {
  constructor(
    readonly path: string,
    readonly problems: string[],
  ) {
    super(`${path}: ${problems.join("; ")}`);
  }
}

/** The shortest interval a hook may run on: one tick of the timer wheel (engine/scheduler.ts TICK_MS). */
export const MIN_INTERVAL_MS = 10;

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

let registered = false;
/** Makes `import … from "cicada/scenario"` resolve inside this binary (once per process). */
export function provideScenarioModule(): void {
  if (registered) return;
  registered = true;
  const exports = { defineScenario: <S>(s: Scenario<S>) => s };
  plugin({ name: "cicada-scenario", setup: (build) => void build.module("cicada/scenario", () => ({ exports, loader: "object" })) });
}

/** SHA-256 (hex) of a scenario file's bytes. */
export function hashFile(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/**
 * Imports and checks the scenario at `path`. With `sha256`, the file must have that content (a
 * worker or machine running what its controller named); otherwise the run refuses it.
 */
export async function loadScenario(path: string, sha256?: string): Promise<LoadedScenario> {
  const abs = resolve(path);
  let hash: string;
  try {
    hash = hashFile(abs);
  } catch (err) {
    throw new ScenarioError(path, [`cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  if (sha256 !== undefined && hash !== sha256) throw new ScenarioError(path, [`its content (sha256 ${hash.slice(0, 12)}…) is not the run's (${sha256.slice(0, 12)}…): every machine needs the same file`]);
  provideScenarioModule();
  let mod: { default?: unknown };
  try {
    // Keyed by content: an edited file is imported afresh by a long-lived --ui server.
    mod = await import(`${abs}?sha256=${hash}`);
  } catch (err) {
    throw new ScenarioError(path, [`does not load: ${(err as Error).message}`]);
  }
  return checkScenario(mod.default, { name: "", path: abs, sha256: hash });
}

/** Checks a scenario definition; every problem is listed. */
export function checkScenario(def: unknown, ref: ScenarioRef): LoadedScenario {
  const problems: string[] = [];
  if (!def || typeof def !== "object") throw new ScenarioError(ref.path, ["has no default export: export default defineScenario({ name: …, … })"]);
  const s = def as Scenario<Record<string, unknown>>;
  if (typeof s.name !== "string" || !NAME.test(s.name)) problems.push(`name must be 1-64 letters, digits, - or _ (got ${JSON.stringify(s.name)})`);
  for (const hook of ["state", "onConnect", "onMessage", "onDisconnect"] as const) {
    if (s[hook] !== undefined && typeof s[hook] !== "function") problems.push(`${hook} must be a function`);
  }
  if (s.topics !== undefined) {
    if (typeof s.topics !== "object" || s.topics === null) problems.push("topics must map names to topic templates");
    else for (const [k, v] of Object.entries(s.topics)) if (typeof v !== "string" || v === "" || /[#+\u0000]/.test(v)) problems.push(`topics.${k} must be a topic (not empty, without # or +)`);
  }
  if (s.mqtt !== undefined && s.mqtt !== "3.1.1" && s.mqtt !== "5") problems.push(`mqtt must be "3.1.1" or "5"`);
  let session: LoadedScenario["session"];
  if (s.session !== undefined) {
    const expiry = s.session.expiry === undefined ? (s.session.clean ? 0 : 3600_000) : durationMs(s.session.expiry);
    if (typeof s.session.clean !== "boolean") problems.push("session.clean must be true or false");
    else if (expiry === undefined) problems.push(`session.expiry must be a time such as "1h"`);
    else session = { clean: s.session.clean, expiryS: Math.round(expiry / 1000) };
  }
  const every: LoadedScenario["every"] = [];
  if (s.every !== undefined && !Array.isArray(s.every)) problems.push("every must be a list of { interval, run }");
  for (const [i, e] of (Array.isArray(s.every) ? s.every : []).entries()) {
    const name = typeof e?.name === "string" && e.name ? e.name : `every[${i}]`;
    if (typeof e?.run !== "function") problems.push(`${name}: run must be a function`);
    if (e?.start !== undefined && e.start !== "random" && e.start !== "now" && e.start !== "interval") problems.push(`${name}: start must be "random", "now" or "interval"`);
    let fixed: [number, number] | null = null;
    if (typeof e?.interval !== "function") {
      const r = intervalMs(e?.interval);
      if (typeof r === "string") problems.push(`${name}: ${r}`);
      else fixed = r;
    }
    every.push({ name, fixed, hook: e });
  }
  if (problems.length) throw new ScenarioError(ref.path, problems);
  return { ref: { ...ref, name: s.name }, def: s, every, ...(s.mqtt ? { version: s.mqtt === "5" ? 5 : 4 } : {}), ...(session ? { session } : {}) };
}

/** A Duration in ms, or undefined when it is not one. A bare number is ms. */
export function durationMs(d: unknown): number | undefined {
  if (typeof d === "number") return Number.isFinite(d) && d >= 0 ? d : undefined;
  if (typeof d === "string") return parseDuration(d, "ms");
  return undefined;
}

/** An interval (one time, [min, max] or "min..max") as [min, max] ms; a string saying what is wrong when it is not one. */
export function intervalMs(v: ReturnType<Extract<Interval<unknown>, (d: Device<unknown>) => unknown>> | undefined): [number, number] | string {
  let r: [number, number] | undefined;
  if (Array.isArray(v) && v.length === 2) {
    const lo = durationMs(v[0]);
    const hi = durationMs(v[1]);
    r = lo !== undefined && hi !== undefined ? [lo, hi] : undefined;
  } else if (typeof v === "string" && v.includes("..")) r = parseRange(v, "ms");
  else {
    const ms = durationMs(v);
    r = ms !== undefined ? [ms, ms] : undefined;
  }
  if (!r) return `interval must be a time ("5s", 500), a range ("29.5s..30s", ["5s", "10s"]) or a function returning one (got ${JSON.stringify(v)})`;
  if (r[0] < MIN_INTERVAL_MS || r[1] < r[0]) return `interval ${JSON.stringify(v)} must be at least ${MIN_INTERVAL_MS} ms, with min <= max`;
  return r;
}

/** The file in `dir` whose content is the run's scenario (same SHA-256); throws, saying what to copy, when there is none. */
export function localScenario(ref: ScenarioRef, dir: string | undefined): string {
  const copy = `copy ${ref.name}'s file (sha256 ${ref.sha256.slice(0, 12)}…) into this machine's --scenarios directory`;
  if (!dir) throw new Error(`the run uses scenario ${ref.name}, and this machine has no --scenarios DIR: ${copy}`);
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => /\.(ts|js|mjs)$/.test(n));
  } catch (err) {
    throw new Error(`--scenarios ${dir}: ${(err as Error).message}`);
  }
  // The likely file first, then the rest: a renamed copy with the same content is the same scenario.
  names.sort((a, b) => Number(b.startsWith(`${ref.name}.`)) - Number(a.startsWith(`${ref.name}.`)));
  for (const n of names) if (hashFile(join(dir, n)) === ref.sha256) return resolve(join(dir, n));
  throw new Error(`the run uses scenario ${ref.name}, and no file in ${dir} has its content: ${copy}`);
}
