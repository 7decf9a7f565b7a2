/** `cicada dojot`: devices and templates in dojot (dojot's generate_certs dojot create/clear). */
import { DojotClient } from "../dojot/client.ts";
import { redactUrl } from "../sys/redact.ts";
import { DOJOT_OPTIONS, readDojotSettings } from "../config/dojot.ts";
import { EXIT } from "../errors.ts";
import { parseCommand, runSubcommand, type CommandSpec } from "../config/options.ts";
import { Progress, fmtDuration, fmtInt } from "./progress.ts";

const CREATE: CommandSpec = {
  name: "dojot create",
  summary: "Create a template and N devices in dojot, in batches.",
  usage: "cicada dojot create --devices N [--batch 100] [--wait MS]",
  options: {
    devices: { type: "string", short: "n", arg: "N", help: "Devices to create" },
    batch: { type: "string", arg: "N", default: "100", help: "Devices per request" },
    wait: { type: "string", arg: "MS", default: "0", help: "Pause between requests, to pace the platform" },
    label: { type: "string", arg: "NAME", default: "cicada", help: "Label of the template and devices" },
    ...DOJOT_OPTIONS,
  },
  details: `
Then: cicada certs create --dojot   (a certificate for every device, signed by dojot)`,
};

const CLEAR: CommandSpec = {
  name: "dojot clear",
  summary: "Remove every device, every template, or both, from dojot.",
  usage: "cicada dojot clear --devices|--templates|--all",
  options: {
    devices: { type: "boolean", help: "Remove all devices" },
    templates: { type: "boolean", help: "Remove all templates" },
    all: { type: "boolean", help: "Remove all devices, then all templates" },
    ...DOJOT_OPTIONS,
  },
};

const HELP = `Devices and templates in dojot.

Usage: cicada dojot <command> [options]

Commands:
  create   Create a template and N devices
  clear    Remove devices and/or templates

Settings: DOJOT_URL, DOJOT_USER, DOJOT_PASSWD, DOJOT_API_RETRIES, DOJOT_API_RETRY_TIME (or flags).
`;

export function dojotCommand(argv: string[]): Promise<number> {
  return runSubcommand("dojot", HELP, { create, clear }, argv);
}

async function create(argv: string[]): Promise<number> {
  const o = parseCommand(CREATE, argv);
  if (!o) return EXIT.OK;
  if (!o.has("devices")) o.issues.push("give --devices N");
  const devices = o.int("devices", 0, 1, 10_000_000);
  const batch = o.int("batch", 100, 1, 10_000);
  const waitMs = o.int("wait", 0, 0, 3_600_000);
  const settings = readDojotSettings(o);
  o.check();
  const client = new DojotClient(settings);
  const progress = new Progress();
  client.onRetry = (line) => {
    progress.done();
    process.stderr.write(`${line}\n`);
  };
  client.onWaiting = (what, s) => progress.update(`dojot: waiting for ${what} (${s} s)`, true);
  const started = performance.now();
  let made = 0;
  let template: string;
  try {
    template = await client.createTemplate(o.str("label")!);
    while (made < devices) {
      if (made > 0 && waitMs) await Bun.sleep(waitMs);
      const n = Math.min(batch, devices - made);
      made += await client.createDevices(n, template, o.str("label")!);
      const secs = (performance.now() - started) / 1000;
      progress.update(`dojot: ${fmtInt(made)}/${fmtInt(devices)} devices (${fmtInt(made / Math.max(secs, 1e-3))}/s)`);
    }
  } finally {
    // Ended before any error is printed, so no progress line runs into it.
    progress.done();
  }
  process.stdout.write(`created template ${template} and ${fmtInt(made)} devices in ${fmtDuration((performance.now() - started) / 1000)}${client.retried ? ` (${client.retried} requests retried)` : ""}\n`);
  return EXIT.OK;
}

async function clear(argv: string[]): Promise<number> {
  const o = parseCommand(CLEAR, argv);
  if (!o) return EXIT.OK;
  const picked = ["devices", "templates", "all"].filter((k) => o.bool(k));
  if (picked.length !== 1) o.issues.push("give exactly one of --devices, --templates, --all");
  const settings = readDojotSettings(o);
  o.check();
  const client = new DojotClient(settings);
  if (o.bool("devices") || o.bool("all")) await client.deleteDevices();
  if (o.bool("templates") || o.bool("all")) await client.deleteTemplates();
  process.stdout.write(`removed ${o.bool("all") ? "all devices and templates" : `all ${picked[0]}`} from ${redactUrl(settings.url)}\n`);
  return EXIT.OK;
}
