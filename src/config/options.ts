// config/ — every flag, environment variable and validation: the option parser (here) and one module per concept.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/** Flag parsing shared by every command: node's parseArgs, dojot env fallbacks, and validation that gathers every problem. */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ConfigError, EXIT, LoadError, messageOf } from "../errors.ts";

export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  /** Environment variable read when the flag is absent (dojot's names; flags win). */
  env?: string;
  /** Placeholder shown in --help, e.g. "N". */
  arg?: string;
  help: string;
  /** Default shown in --help and used when neither flag nor env is given. */
  default?: string;
  /** Accepts `--no-<name>` to set a boolean false. */
  negatable?: boolean;
  /** May be given several times (read with Options.all). */
  multiple?: boolean;
  /** Older spellings still accepted (`--dir` for `--certs`); help lists them. */
  aliases?: string[];
}
export type OptionSpecs = Record<string, OptionSpec>;

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: OptionSpecs;
  /** Extra text after the option list: examples, notes. */
  details?: string;
}

const HELP: OptionSpec = { type: "boolean", short: "h", help: "Show this help" };

/**
 * Typed access to parsed flags. Each accessor validates and, on bad input, records an issue
 * naming where the value came from (`--devices` or `CERT_DIR`) instead of throwing, so a
 * command can report every problem at once via {@link Options.check}.
 */
export class Options {
  readonly issues: string[] = [];
  constructor(
    private readonly values: Record<string, string | boolean | undefined>,
    private readonly sources: Record<string, string>,
    readonly positionals: string[],
  ) {}

  /** Where a value came from, for error messages: `--flag` or `ENV_NAME`. */
  source(name: string): string {
    return this.sources[name] ?? `--${name}`;
  }
  has(name: string): boolean {
    return this.values[name] !== undefined;
  }
  str(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === "string" ? v : undefined;
  }
  bool(name: string): boolean {
    const v = this.values[name];
    if (typeof v === "boolean") return v;
    if (typeof v === "string") {
      if (/^(1|true|yes|on)$/i.test(v)) return true;
      if (/^(0|false|no|off|)$/i.test(v)) return false;
      this.fail(name, "must be true or false", v);
    }
    return false;
  }
  /** An integer in [min, max]; `fallback` when absent. */
  int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.str(name);
    if (v === undefined) return fallback;
    if (!/^\s*[+-]?\d+\s*$/.test(v)) {
      this.fail(name, `must be a whole number${boundText(min, max)}`, v);
      return fallback;
    }
    const n = Number(v);
    if (n < min || n > max) this.fail(name, `must be a whole number${boundText(min, max)}`, v);
    return n;
  }
  /** A number in [min, max]; `fallback` when absent. */
  num(name: string, fallback: number, min = -Infinity, max = Infinity): number {
    const v = this.str(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      this.fail(name, `must be a number${boundText(min, max)}`, v);
      return fallback;
    }
    return n;
  }
  /** One of `choices`. */
  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const v = this.str(name);
    if (v === undefined) return fallback;
    if ((choices as readonly string[]).includes(v)) return v as T;
    this.fail(name, `must be one of ${choices.join(", ")}`, v);
    return fallback;
  }
  /** Every value of an option given several times (`multiple`). */
  all(name: string): string[] {
    const v = this.str(name);
    return v === undefined ? [] : v.split("\n").filter((s) => s.trim().length > 0);
  }
  /** A comma-separated list, blanks dropped. */
  list(name: string): string[] | undefined {
    const v = this.str(name);
    if (v === undefined) return undefined;
    return v.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  }
  /** Records a problem with one value. */
  fail(name: string, what: string, got?: string): void {
    this.issues.push(`${this.source(name)} ${what}${got === undefined ? "" : ` (got ${JSON.stringify(got)})`}`);
  }
  /** The text of the file an option names; on failure records an issue with the reason. */
  fileText(name: string): string | undefined {
    const path = this.str(name);
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      this.fail(name, `cannot be read: ${messageOf(err)}`, path);
      return undefined;
    }
  }
  /** Throws a ConfigError listing every issue recorded so far. */
  check(): void {
    if (this.issues.length > 0) throw new ConfigError([...this.issues]);
  }
}

function boundText(min: number, max: number): string {
  const lo = Number.isFinite(min) && min > Number.MIN_SAFE_INTEGER ? min : undefined;
  const hi = Number.isFinite(max) && max < Number.MAX_SAFE_INTEGER ? max : undefined;
  if (lo !== undefined && hi !== undefined) return ` from ${lo} to ${hi}`;
  if (lo !== undefined) return ` >= ${lo}`;
  if (hi !== undefined) return ` <= ${hi}`;
  return "";
}

/**
 * Parses argv for one command. Unknown flags, missing values and stray positionals are all
 * gathered into one ConfigError. Returns null when --help was asked for (help already printed).
 */
export function parseCommand(
  spec: CommandSpec,
  argv: string[],
  env: Record<string, string | undefined> = process.env,
  opts: { positionals?: boolean } = {},
): Options | null {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = { help: HELP };
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
    if (o.negatable) options[`no-${name}`] = { type: "boolean" };
    for (const a of o.aliases ?? []) options[a] = { type: o.type, ...(o.multiple ? { multiple: true } : {}) };
  }
  const issues: string[] = [];
  const { values, positionals, tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  for (const t of tokens ?? []) {
    if (t.kind !== "option") continue;
    const known = options[t.name];
    if (!known) issues.push(`unknown option ${t.rawName} (see cicada ${spec.name} --help)`);
    else if (known.type === "string" && t.value === undefined) issues.push(`${t.rawName} needs a value`);
    else if (known.type === "boolean" && t.inlineValue) issues.push(`${t.rawName} takes no value`);
  }
  if (values.help === true) {
    process.stdout.write(renderHelp(spec));
    return null;
  }
  if (positionals.length > 0 && !opts.positionals) issues.push(`unexpected argument ${JSON.stringify(positionals[0])} (see cicada ${spec.name} --help)`);

  const file = typeof values.config === "string" && spec.options.config ? readConfigFile(values.config, issues) : {};
  const aliasOf = new Map(Object.entries(spec.options).flatMap(([name, o]) => (o.aliases ?? []).map((a): [string, string] => [a, name])));
  for (const key of Object.keys(file)) if ((!spec.options[key] && !aliasOf.has(key)) || key === "config") issues.push(`${values.config}: unknown setting "${key}" (keys are flag names)`);
  for (const [key, v] of Object.entries(file)) {
    const name = aliasOf.get(key);
    if (name && file[name] === undefined) file[name] = v;
  }
  const out: Record<string, string | boolean | undefined> = {};
  const sources: Record<string, string> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    const given = [name, ...(o.aliases ?? [])].filter((n) => values[n] !== undefined);
    if (given.length > 1) issues.push(`${given.map((n) => `--${n}`).join(" and ")} are one option: give it once`);
    const used = given[0] ?? name;
    if (used !== name) sources[name] = `--${used}`;
    const raw = values[used] as string | boolean | (string | boolean)[] | undefined;
    // Several values travel as one string, a value per line (Options.all splits them).
    let v = Array.isArray(raw) ? raw.join("\n") : raw;
    if (o.negatable && values[`no-${name}`] === true) v = false;
    if (v === undefined && o.env && env[o.env] !== undefined && env[o.env] !== "") {
      v = env[o.env];
      sources[name] = o.env;
    }
    if (v === undefined && file[name] !== undefined) {
      const f = file[name];
      v = typeof f === "boolean" ? f : Array.isArray(f) ? f.map(String).join("\n") : String(f);
      sources[name] = `${values.config}: "${name}"`;
    }
    if (v === undefined && o.default !== undefined) v = o.type === "boolean" ? o.default === "true" : o.default;
    out[name] = v;
  }
  const parsed = new Options(out, sources, positionals);
  parsed.issues.push(...issues);
  return parsed;
}

/**
 * A JSON config file: an object whose keys are flag names (`{"users": 1000, "rate": 50}`).
 * Precedence: defaults < file < env < flags.
 */
function readConfigFile(path: string, issues: string[]): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    issues.push(`--config: cannot read ${path}: ${(err as Error).message}`);
    return {};
  }
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
    issues.push(`--config: ${path} must hold a JSON object of flag names to values`);
  } catch (err) {
    issues.push(`--config: ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return {};
}

/** Renders `cicada <cmd> --help`. */
export function renderHelp(spec: CommandSpec): string {
  const rows: [string, string][] = [];
  for (const [name, o] of Object.entries(spec.options)) {
    let left = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.negatable ? `, --no-${name}` : ""}${o.type === "string" ? ` ${o.arg ?? "VALUE"}` : ""}`;
    let right = o.help;
    if (o.aliases?.length) right += ` [also ${o.aliases.map((a) => `--${a}`).join(", ")}]`;
    const extra = [o.default !== undefined ? `default ${o.default}` : "", o.env ? `env ${o.env}` : ""].filter(Boolean);
    if (extra.length) right += ` (${extra.join("; ")})`;
    rows.push([left, right]);
  }
  rows.push(["-h, --help", HELP.help]);
  const width = Math.min(34, Math.max(...rows.map(([l]) => l.length)) + 2);
  const lines = rows.map(([l, r]) => (l.length >= width ? `  ${l}\n  ${" ".repeat(width)}${r}` : `  ${l.padEnd(width)}${r}`));
  return `${spec.summary}\n\nUsage: ${spec.usage}\n\nOptions:\n${lines.join("\n")}\n${spec.details ? `\n${spec.details.trim()}\n` : ""}`;
}

/**
 * Runs the subcommand of a command group (`cicada certs create ...`): `--help` or nothing
 * prints the group's help (exit 0, or 2 when nothing was given); an unknown one is bad input.
 */
export function runSubcommand(group: string, help: string, commands: Record<string, (argv: string[]) => Promise<number>>, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "-h" || sub === "--help") {
    process.stdout.write(help);
    return Promise.resolve(sub === undefined ? EXIT.BAD_INPUT : EXIT.OK);
  }
  const command = Object.hasOwn(commands, sub) ? commands[sub] : undefined;
  if (!command) throw new LoadError(`unknown command "${group} ${sub}" (see cicada ${group} --help)`, EXIT.BAD_INPUT);
  return command(rest);
}
