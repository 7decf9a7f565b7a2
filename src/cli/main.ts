#!/usr/bin/env bun
// cli/ — the commands: each parses its flags (config/), calls the layers below, prints, and exits with a code from errors.ts.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/** cicada's entry point: dispatches to one command module and maps errors to exit codes. */
import pkg from "../../package.json" with { type: "json" };
import { ConfigError, EXIT, LoadError, messageOf } from "../errors.ts";
import { certsCommand } from "./certs.ts";
import { dojotCommand } from "./dojot.ts";
import { storeCommand } from "./store.ts";
import { runCommand } from "./run.ts";
import { workerCommand } from "./worker.ts";
import { scenarioCommand } from "./scenario.ts";
import { doctorCommand } from "./doctor.ts";
import { runWorkerProcess } from "../cluster/worker.ts";

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
const COMMANDS: Record<string, Command> = {
  certs: certsCommand,
  store: storeCommand,
  dojot: dojotCommand,
  run: runCommand,
  worker: workerCommand,
  scenario: scenarioCommand,
  doctor: doctorCommand,
  // Internal: a worker process started by `cicada run` (talks to its supervisor over IPC).
  "__swarm-worker": () => runWorkerProcess(),
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
  const run = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!run) throw new LoadError(`unknown command "${cmd}" (see cicada --help)`, EXIT.BAD_INPUT);
  return run(rest);
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
