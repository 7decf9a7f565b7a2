/** Temporary folders and CLI runs for tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

export interface TempDir {
  path: string;
  [Symbol.dispose](): void;
}

export function tempDir(prefix = "cicada-test-"): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cicada <args>` from source, as a user would, and collects its output. */
export async function cicada(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

export interface Background {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** stderr so far. */
  out: { err: string };
}

/** Starts `cicada <args>` in the background with its stderr collected into `out.err` (for workers and controllers). */
export function spawnCicada(args: string[], env: Record<string, string> = {}, cwd?: string): Background {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const out = { err: "" };
  void (async () => {
    for await (const chunk of proc.stderr) out.err += new TextDecoder().decode(chunk);
  })();
  return { proc, out };
}

/** Client ids mosquitto accepted, with the address each connected from, from its log. */
export function brokerConnections(log: string): { ip: string; client: string }[] {
  return [...log.matchAll(/New client connected from (\S+):\d+ as (admin:\S+) /g)].map((m) => ({ ip: m[1]!, client: m[2]! }));
}

/** Runs a command, returns exit code and output (for openssl and friends). */
export async function sh(cmd: string[], cwd?: string): Promise<CliResult> {
  const proc = Bun.spawn(cmd, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}
