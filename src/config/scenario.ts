/** Which scenario the devices run (--scenario, --scenarios): a file on this machine, named by path or by name in a directory. */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Options, OptionSpecs } from "./options.ts";
import { hashFile, loadScenario, ScenarioError, type LoadedScenario, type ScenarioRef } from "../scenario/load.ts";
import { withScenario } from "../engine/config.ts";
import { ConfigError } from "../errors.ts";
import type { RunConfig } from "./run.ts";

export const SCENARIO_OPTIONS: OptionSpecs = {
  scenario: { type: "string", arg: "FILE.ts|NAME", help: "What each device does, as a TypeScript scenario (README, Scenarios); a NAME is NAME.ts in --scenarios. Default: dojot's device" },
  scenarios: { type: "string", arg: "DIR", help: "Scenario files that --scenario NAME and the API's start request may name (the dashboard lists them)" },
};

/** A scenario name: what the API's start request may give (never a path). */
export const SCENARIO_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The flags a scenario decides itself: what is published, where and how often. */
const DECIDED_BY_SCENARIO = ["topic", "payload", "payload-file", "payload-size", "msg-rate", "interval", "task-min-time", "task-max-time", "retain", "topic-alias", "user-property", "message-expiry", "content-type", "verify", "actuate"];

/** --scenario resolved to a file on this machine, with its hash; undefined for the built-in device. Problems go to `o.issues`. */
export function readScenario(o: Options): ScenarioRef | undefined {
  const dir = o.str("scenarios");
  if (dir !== undefined && !(existsSync(dir) && statSync(dir).isDirectory())) o.fail("scenarios", "must be a directory of scenario files", dir);
  if (!o.has("scenario")) return undefined;
  const given = o.str("scenario")!;
  for (const flag of DECIDED_BY_SCENARIO) if (o.has(flag) && !(flag === "payload-size" && o.str(flag) === "0")) o.issues.push(`${o.source(flag)} does not go with --scenario: the scenario decides what its devices publish, where and how often`);
  const path = scenarioPath(given, dir);
  if (typeof path !== "string") return void o.issues.push(`${o.source("scenario")} ${path.problem}`);
  try {
    return { name: given, path, sha256: hashFile(path) };
  } catch (err) {
    o.fail("scenario", `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, given);
    return undefined;
  }
}

/** The scenario names `dir` holds (NAME.ts or NAME.js), sorted; none without a directory. */
export function scenarioNames(dir: string | undefined): string[] {
  if (dir === undefined) return [];
  try {
    const names = readdirSync(dir).map((f) => /^(.+)\.(ts|js)$/.exec(f)?.[1]).filter((n): n is string => n !== undefined && SCENARIO_NAME.test(n));
    return [...new Set(names)].sort();
  } catch {
    return [];
  }
}

/** A path as given, or NAME.ts in `dir`. */
export function scenarioPath(given: string, dir: string | undefined): string | { problem: string } {
  if (SCENARIO_NAME.test(given) && !existsSync(given)) {
    if (dir === undefined) return { problem: `${JSON.stringify(given)} is a name: give --scenarios DIR to look it up, or a path to a .ts file` };
    for (const ext of [".ts", ".js"]) {
      const p = resolve(join(dir, given + ext));
      if (existsSync(p)) return p;
    }
    return { problem: `no ${given}.ts in ${dir}` };
  }
  if (!/\.(ts|js|mjs)$/.test(given)) return { problem: `must be a .ts or .js file (got ${JSON.stringify(given)})` };
  return resolve(given);
}

/**
 * Loads the run's scenario (`cfg.swarm.scenario`) and applies what it decides (its MQTT version
 * and session) to the run's settings and their echo. A scenario that does not load or check is
 * a ConfigError listing every problem.
 */
export async function openScenario(cfg: RunConfig): Promise<LoadedScenario | null> {
  const ref = cfg.swarm.scenario;
  if (!ref) return null;
  let sc: LoadedScenario;
  try {
    sc = await loadScenario(ref.path, ref.sha256);
  } catch (err) {
    if (err instanceof ScenarioError) throw new ConfigError(err.problems.map((p) => `--scenario ${ref.path}: ${p}`));
    throw err;
  }
  cfg.swarm = withScenario(cfg.swarm, sc);
  Object.assign(cfg.echo, { scenario: sc.ref.name, mqtt: cfg.swarm.version === 5 ? "5" : "3.1.1", ...(sc.session ? { clean: sc.session.clean, session_expiry_s: sc.session.expiryS } : {}) });
  return sc;
}
