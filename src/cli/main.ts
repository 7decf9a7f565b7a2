#!/usr/bin/env bun
// cli/ — the commands: each parses its flags (config/), calls the layers below, prints, and exits with a code from errors.ts.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/** cicada's entry point: dispatches to one command module and maps errors to exit codes. */
// @peculiar/x509 needs this polyfill evaluated first; pki/x509.ts imports it too, but in the
// compiled binary a command's lazily loaded modules can evaluate @peculiar/x509 before it.
import "reflect-metadata";
import pkg from "../../package.json" with { type: "json" };
import { ConfigError, EXIT, LoadError, messageOf } from "../errors.ts";

const HELP = `cicada ${pkg.version} — MQTT load generator for IoT platforms: fleets of mTLS devices.

Usage: cicada <command> [options]

Commands:
  run        Simulate devices against an MQTT broker and report how it held up
  worker     Join a run that spans machines (controller: cicada run --redis URL)
  scenario   Device behaviour in TypeScript: init a scenario file, check one
  doctor     Check whether this machine can hold N devices, and what to change if not
  certs      Device certificates, the local CA, CRL and broker certificates
  store      The Redis certificate store (dojot's layout): export, map, restore, clear
  dojot      Devices and templates in dojot: create, clear
  version    Print the version

Options:
  -h, --help     Show help (also: cicada <command> --help)
  -V, --version  Print the version

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 thresholds failed, 130 interrupted.
`;

type Command = (argv: string[]) => Promise<number>;
/**
 * Each command's module is loaded when that command runs, not before: a worker process (one
 * per core, holding devices) then never evaluates the HTTP API, Redis client or certificate
 * tooling (`bun bench/memory.bench.ts --layers process`: a worker's own memory 32.7 MB with
 * every command loaded, 26.2 MB with its own).
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  certs: async () => (await import("./certs.ts")).certsCommand,
  store: async () => (await import("./store.ts")).storeCommand,
  dojot: async () => (await import("./dojot.ts")).dojotCommand,
  run: async () => (await import("./run.ts")).runCommand,
  worker: async () => (await import("./worker.ts")).workerCommand,
  scenario: async () => (await import("./scenario.ts")).scenarioCommand,
  doctor: async () => (await import("./doctor.ts")).doctorCommand,
  // Internal: a worker process started by `cicada run` (talks to its supervisor over IPC).
  "__swarm-worker": async () => {
    const { runWorkerProcess } = await import("../cluster/worker.ts");
    return () => runWorkerProcess();
  },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "-h" || cmd === "--help" || cmd === "help") {
    process.stdout.write(HELP);
    return cmd === undefined ? EXIT.BAD_INPUT : EXIT.OK;
  }
  if (cmd === "-V" || cmd === "--version" || cmd === "version") {
    process.stdout.write(`cicada ${pkg.version} (bun ${Bun.version})\n`);
    return EXIT.OK;
  }
  // Own keys only: "constructor" or "__proto__" are not commands.
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!load) throw new LoadError(`unknown command "${cmd}" (see cicada --help)`, EXIT.BAD_INPUT);
  return (await load())(rest);
}

// Output piped into head and cut short is the reader's choice, not an error: the rest is dropped quietly.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code !== "EPIPE") throw err;
});

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(err.issues.length === 1 ? `cicada: ${err.issues[0]}\n` : `cicada: bad input:\n${err.issues.map((i) => `  - ${i}`).join("\n")}\n`);
    process.exitCode = err.code;
  } else if (err instanceof LoadError) {
    process.stderr.write(`cicada: ${err.message}\n`);
    process.exitCode = err.code;
  } else {
    process.stderr.write(`cicada: internal error: ${messageOf(err)}\n${err instanceof Error && process.env.CICADA_DEBUG ? `${err.stack}\n` : ""}`);
    process.exitCode = EXIT.INTERNAL;
  }
}
