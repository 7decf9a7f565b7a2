#!/usr/bin/env bun
/**
 * Starts and stops the local test bed for hands-on runs and benchmarks.
 *   bun scripts/testbed.ts up [--brokers N] [--port P] [--redis] [--certs DIR] [--quiet]
 *   bun scripts/testbed.ts down | status
 * State (PIDs, ports) lives in .testbed/state.json; `down` ends only the PIDs recorded there.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startBrokers, startRedis } from "./lib/testbed.ts";

const STATE_DIR = process.env.CICADA_TESTBED_DIR ?? ".testbed";
const STATE = `${STATE_DIR}/state.json`;

interface State {
  brokers: { pid: number; host: string; port: number; log: string }[];
  redis?: { pid: number; port: number; url: string };
}

const USAGE = `Usage:
  bun scripts/testbed.ts up [--brokers N] [--port P] [--redis] [--certs DIR] [--quiet]
  bun scripts/testbed.ts down | status
Brokers use DIR's CA (default $CERT_DIR or cert); state lives in $CICADA_TESTBED_DIR (default .testbed).
`;

function parse() {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        brokers: { type: "string", default: "1" },
        port: { type: "string" },
        redis: { type: "boolean", default: false },
        certs: { type: "string", default: process.env.CERT_DIR ?? "cert" },
        quiet: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`testbed: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

const { values, positionals } = parse();
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

function readState(): State | undefined {
  return existsSync(STATE) ? (JSON.parse(readFileSync(STATE, "utf8")) as State) : undefined;
}

async function down(): Promise<void> {
  const state = readState();
  if (!state) return;
  const procs = [...state.brokers.map((b) => ({ pid: b.pid, name: "mosquitto" })), ...(state.redis ? [{ pid: state.redis.pid, name: "redis-server" }] : [])];
  for (const p of procs) {
    // Only a PID that still runs the program we started (PIDs get reused).
    if (commandOf(p.pid).includes(p.name)) process.kill(p.pid, "SIGTERM");
  }
  for (const p of procs) for (let i = 0; i < 100 && commandOf(p.pid).includes(p.name); i++) await Bun.sleep(20);
  rmSync(STATE);
  console.log(`stopped ${procs.length} test bed process(es)`);
}

switch (positionals[0]) {
  case "up": {
    await down();
    mkdirSync(STATE_DIR, { recursive: true });
    const brokers = await startBrokers(Number(values.brokers), {
      certDir: values.certs!,
      stateDir: STATE_DIR,
      port: values.port ? Number(values.port) : undefined,
      verbose: !values.quiet,
      detached: true,
    });
    const redis = values.redis ? await startRedis({ stateDir: STATE_DIR, detached: true }) : undefined;
    const state: State = {
      brokers: brokers.map((b) => ({ pid: b.pid, host: b.host, port: b.port, log: b.log })),
      redis: redis && { pid: redis.pid, port: redis.port, url: redis.url },
    };
    writeFileSync(STATE, JSON.stringify(state, null, 2));
    for (const b of state.brokers) console.log(`mosquitto (mTLS) on ${b.host}:${b.port}, pid ${b.pid}, log ${b.log}`);
    if (state.redis) console.log(`redis on ${state.redis.url}, pid ${state.redis.pid}`);
    process.exit(0);
  }
  case "down":
    await down();
    break;
  case "status":
    console.log(JSON.stringify(readState() ?? { brokers: [] }, null, 2));
    break;
  default:
    process.stderr.write(USAGE);
    process.exit(2);
}
