/** `cicada certs`: device certificates from the local CA (dojot's generate_certs), the CRL, broker certificates. */
import { randomBytes } from "node:crypto";
import { mkdirSync, renameSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { EXIT, LoadError } from "../errors.ts";
import { issueParallel, runIssueWorker, workersFor } from "../pki/batch.ts";
import type { KeyKind } from "../pki/build.ts";
import { writeCrl } from "../pki/crl.ts";
import { issueServer } from "../pki/issue.ts";
import { openLocalCa } from "../pki/signers/local.ts";
import { DEVICE_ID, ensureCertDir, exists, listDeviceIds, writeFileAtomic } from "../store/dir.ts";
import { parseCommand, type CommandSpec, type OptionSpecs } from "./options.ts";
import { Progress, fmtDuration, fmtInt } from "./progress.ts";

const DIR_OPTIONS: OptionSpecs = {
  dir: { type: "string", arg: "DIR", env: "CERT_DIR", default: "cert", help: "Certificate directory (dojot layout)" },
};
const CA_OPTIONS: OptionSpecs = {
  "ca-cert": { type: "string", arg: "FILE", help: "Sign with this CA certificate instead of the directory's own" },
  "ca-key": { type: "string", arg: "FILE", help: "Private key of --ca-cert" },
  key: { type: "string", arg: "ec|rsa", default: "ec", help: "Key type: EC P-256, or RSA-2048 as dojot used" },
  days: { type: "string", arg: "N", default: "365", help: "Validity in days" },
};

const CREATE: CommandSpec = {
  name: "certs create",
  summary: "Create device keys and certificates signed by the local CA.",
  usage: "cicada certs create (--devices N | --ids a,b,c) [options]",
  options: {
    devices: { type: "string", short: "n", arg: "N", help: "Create N devices with random unique 32-bit hex ids" },
    ids: { type: "string", arg: "a,b,c", help: "Create these device ids (existing ones are left alone)" },
    tenant: { type: "string", arg: "NAME", env: "TENANT", default: "admin", help: "Tenant: certificate CN is tenant:id" },
    ...DIR_OPTIONS,
    ...CA_OPTIONS,
    jobs: { type: "string", short: "j", arg: "N", help: "Worker processes (default: one per core)" },
  },
  details: `
Layout of DIR (as dojot's generate_certs): <id>.key (mode 0600), <id>.crt, ca.crt, renew/,
revoke/ — so \`ls DIR | wc -l\` is 2N+3. The local CA's key, the CRL and broker certificates
live in the hidden DIR/.ca/ and DIR/.broker/ folders. The CA is created on first use.
Re-running adds devices; existing files are never overwritten.

Examples:
  cicada certs create --devices 10000
  cicada certs create --ids 1a2b3c,4d5e6f --tenant acme --key rsa`,
};

const CRL: CommandSpec = {
  name: "certs crl",
  summary: "Write the local CA's CRL listing every certificate under DIR/revoke/.",
  usage: "cicada certs crl [--dir DIR] [--out FILE]",
  options: { ...DIR_OPTIONS, out: { type: "string", arg: "FILE", help: "Also copy the CRL here (it is always written to DIR/.ca/crl.pem)" } },
};

const REVOKE: CommandSpec = {
  name: "certs revoke",
  summary: "Revoke devices: move their files to DIR/revoke/ and rewrite the CRL.",
  usage: "cicada certs revoke --ids a,b,c [--dir DIR]",
  options: { ids: { type: "string", arg: "a,b,c", help: "Device ids to revoke" }, ...DIR_OPTIONS },
  details: "A broker loading DIR/.ca/crl.pem (crlfile) refuses these devices once it reloads the CRL.",
};

const SERVER: CommandSpec = {
  name: "certs server",
  summary: "Issue a broker (server) certificate from the local CA.",
  usage: "cicada certs server [--host 127.0.0.1,localhost] [--dir DIR] [--out DIR]",
  options: {
    host: { type: "string", arg: "LIST", default: "127.0.0.1,localhost,::1", help: "DNS names and IP addresses for the certificate" },
    out: { type: "string", arg: "DIR", help: "Where to write server.crt and server.key (default DIR/.broker)" },
    ...DIR_OPTIONS,
    ...CA_OPTIONS,
  },
};

const CERTS_HELP = `Manage device certificates and the local certificate authority.

Usage: cicada certs <command> [options]

Commands:
  create   Create device keys and certificates (dojot's generate_certs cert)
  crl      Write the CRL of revoked certificates
  revoke   Revoke devices and rewrite the CRL
  server   Issue a broker certificate

Run cicada certs <command> --help for its options.
`;

export async function certsCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case "create":
      return create(rest);
    case "crl":
      return crl(rest);
    case "revoke":
      return revoke(rest);
    case "server":
      return server(rest);
    case "__worker":
      await runIssueWorker();
      return EXIT.OK;
    case undefined:
    case "-h":
    case "--help":
      process.stdout.write(CERTS_HELP);
      return sub === undefined ? EXIT.BAD_INPUT : EXIT.OK;
    default:
      throw new LoadError(`unknown command "certs ${sub}" (see cicada certs --help)`, EXIT.BAD_INPUT);
  }
}

async function create(argv: string[]): Promise<number> {
  const o = parseCommand(CREATE, argv);
  if (!o) return EXIT.OK;
  const devices = o.has("devices") ? o.int("devices", 0, 1, 10_000_000) : undefined;
  const ids = o.list("ids");
  if (devices === undefined && ids === undefined) o.issues.push("give --devices N or --ids a,b,c");
  if (devices !== undefined && ids !== undefined) o.issues.push("--devices and --ids cannot be used together");
  if (ids && ids.length === 0) o.fail("ids", "lists no device id", o.str("ids"));
  const badIds = (ids ?? []).filter((id) => !DEVICE_ID.test(id));
  if (badIds.length) o.issues.push(`--ids: ${badIds.slice(0, 3).map((s) => JSON.stringify(s)).join(", ")} not valid (letters, digits, _ and -, up to 64)`);
  const tenant = o.str("tenant")!;
  if (!/^[^\s/+#:]+$/.test(tenant)) o.fail("tenant", "must be a non-empty name without spaces, /, +, # or :", tenant);
  const kind = o.choice<KeyKind>("key", ["ec", "rsa"], "ec");
  const days = o.int("days", 365, 1, 36500);
  const jobs = o.int("jobs", availableParallelism(), 1, 256);
  o.check();

  const dir = ensureCertDir(o.str("dir")!);
  const { ca, created } = openLocalCa(dir, { caCert: o.str("ca-cert"), caKey: o.str("ca-key"), kind });
  if (created) process.stderr.write(`created local CA ${dir.caCert} (key in ${dir.caKey})\n`);

  const existing = new Set(listDeviceIds(dir.root));
  let todo: string[];
  let already = 0;
  if (ids) {
    const unique = [...new Set(ids)];
    todo = unique.filter((id) => !existing.has(id));
    already = unique.length - todo.length;
  } else {
    todo = newIds(devices!, existing);
  }

  const started = performance.now();
  const progress = new Progress();
  const workers = workersFor(todo.length, jobs);
  const tally = await issueParallel(
    { root: dir.root, tenant, kind, days, caCert: o.str("ca-cert") ?? dir.caCert, caKey: o.str("ca-key") ?? dir.caKey, ids: todo },
    ca,
    workers,
    (t) => {
      const s = (performance.now() - started) / 1000;
      const rate = t.created / Math.max(s, 1e-3);
      progress.update(`certs: ${fmtInt(t.created)}/${fmtInt(todo.length)} (${fmtInt(rate)}/s, ${workers} proc) eta ${fmtDuration((todo.length - t.created) / Math.max(rate, 1e-9))}`);
    },
  );
  progress.done();
  const secs = (performance.now() - started) / 1000;
  const skipped = already + tally.skipped;
  process.stdout.write(
    `created ${fmtInt(tally.created)} ${kind === "ec" ? "EC P-256" : "RSA-2048"} device certificates in ${dir.root} ` +
      `in ${fmtDuration(secs)} (${fmtInt(tally.created / Math.max(secs, 1e-3))}/s)` +
      `${skipped ? `; ${fmtInt(skipped)} already present, left unchanged` : ""}\n`,
  );
  return EXIT.OK;
}

/** `n` random unique 32-bit hex ids (8 digits) that are not in `taken`. */
function newIds(n: number, taken: Set<string>): string[] {
  if (taken.size + n > 2 ** 31) throw new LoadError(`--devices ${n} is too many for 32-bit ids`, EXIT.BAD_INPUT);
  const out = new Set<string>();
  while (out.size < n) {
    const buf = randomBytes(4 * Math.min(65536, n - out.size));
    for (let i = 0; i < buf.length && out.size < n; i += 4) {
      const id = buf.toString("hex", i, i + 4);
      if (!taken.has(id)) out.add(id);
    }
  }
  return [...out];
}

async function crl(argv: string[]): Promise<number> {
  const o = parseCommand(CRL, argv);
  if (!o) return EXIT.OK;
  o.check();
  const dir = ensureCertDir(o.str("dir")!);
  const { ca } = openLocalCa(dir, { kind: "ec" });
  const n = writeCrl(dir, ca);
  const out = o.str("out");
  if (out) writeFileAtomic(out, await Bun.file(dir.crl).text(), 0o644);
  process.stdout.write(`wrote ${dir.crl}${out ? ` and ${out}` : ""}: ${fmtInt(n)} revoked certificates\n`);
  return EXIT.OK;
}

async function revoke(argv: string[]): Promise<number> {
  const o = parseCommand(REVOKE, argv);
  if (!o) return EXIT.OK;
  const ids = o.list("ids");
  if (!ids?.length) o.issues.push("give --ids a,b,c");
  const badIds = (ids ?? []).filter((id) => !DEVICE_ID.test(id));
  if (badIds.length) o.issues.push(`--ids: ${JSON.stringify(badIds[0])} is not a device id`);
  o.check();
  const dir = ensureCertDir(o.str("dir")!);
  const { ca } = openLocalCa(dir, { kind: "ec" });
  const missing = ids!.filter((id) => !exists(join(dir.root, `${id}.crt`)));
  if (missing.length) throw new LoadError(`no certificate for ${missing.slice(0, 5).join(", ")} in ${dir.root}`, EXIT.BAD_INPUT);
  for (const id of ids!) {
    renameSync(join(dir.root, `${id}.crt`), join(dir.revoke, `${id}.crt`));
    if (exists(join(dir.root, `${id}.key`))) renameSync(join(dir.root, `${id}.key`), join(dir.revoke, `${id}.key`));
  }
  const n = writeCrl(dir, ca);
  process.stdout.write(`revoked ${ids!.length}; ${dir.crl} lists ${fmtInt(n)} certificates\n`);
  return EXIT.OK;
}

async function server(argv: string[]): Promise<number> {
  const o = parseCommand(SERVER, argv);
  if (!o) return EXIT.OK;
  const hosts = o.list("host") ?? [];
  if (!hosts.length) o.fail("host", "lists no host", o.str("host"));
  const kind = o.choice<KeyKind>("key", ["ec", "rsa"], "ec");
  const days = o.int("days", 365, 1, 36500);
  o.check();
  const dir = ensureCertDir(o.str("dir")!);
  const { ca } = openLocalCa(dir, { caCert: o.str("ca-cert"), caKey: o.str("ca-key"), kind });
  const outDir = o.str("out") ?? dir.broker;
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const cert = issueServer(ca, hosts, kind, days);
  writeFileAtomic(join(outDir, "server.key"), cert.keyPem, 0o600);
  writeFileAtomic(join(outDir, "server.crt"), cert.certPem, 0o644);
  process.stdout.write(`wrote ${join(outDir, "server.crt")} and server.key for ${hosts.join(", ")}\n`);
  return EXIT.OK;
}

