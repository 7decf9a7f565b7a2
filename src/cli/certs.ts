/** `cicada certs`: device certificates from the local CA (dojot's generate_certs), the CRL, broker certificates. */
import { randomBytes } from "node:crypto";
import { readFileSync, renameSync, unlinkSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { EXIT, LoadError } from "../errors.ts";
import { type IssueTally, issueParallel, runIssueWorker, workersFor } from "../pki/batch.ts";
import type { KeyKind } from "../pki/build.ts";
import { revokedEntries, writeCrl } from "../pki/crl.ts";
import type { Signer } from "../pki/signer.ts";
import { issueServer } from "../pki/issue.ts";
import { LocalSigner, openLocalCa } from "../pki/signers/local.ts";
import { type CertDir, DEVICE_ID, ensureCertDir, listDeviceIds, writeDevice } from "../store/dir.ts";
import { exists, makeDir, PRIVATE_DIR_MODE, writeFileAtomic } from "../sys/fs.ts";
import { redactUrl } from "../sys/redact.ts";
import { DojotClient } from "../dojot/client.ts";
import { issueViaDojot } from "../dojot/issue.ts";
import { DojotSigner } from "../dojot/signer.ts";
import { DOJOT_OPTIONS, readDojotSettings } from "../config/dojot.ts";
import { describeName } from "../pki/subject.ts";
import { RedisStore, type StoreSettings } from "../store/redis.ts";
import { readStoreSettings, STORE_OPTIONS } from "../config/store.ts";
import { readTenant } from "../config/run.ts";
import { parseCommand, runSubcommand, type CommandSpec, type OptionSpecs } from "../config/options.ts";
import { Progress, fmtDuration, fmtInt } from "./progress.ts";

const DIR_OPTIONS: OptionSpecs = {
  certs: { type: "string", arg: "DIR", env: "CERT_DIR", default: "cert", aliases: ["dir"], help: "Certificate directory (dojot layout)" },
};
const CA_OPTIONS: OptionSpecs = {
  "signing-ca-cert": { type: "string", arg: "FILE", aliases: ["ca-cert"], help: "Sign with this CA certificate instead of the directory's own" },
  "signing-ca-key": { type: "string", arg: "FILE", aliases: ["ca-key"], help: "Private key of --signing-ca-cert" },
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
    dojot: { type: "boolean", help: "Create certificates for every device that exists in dojot (signed by dojot)" },
    signer: { type: "string", arg: "local|dojot", help: "Who signs: the local CA (default), or dojot's x509 service (key and CSR made here)" },
    store: { type: "string", arg: "URL", aliases: ["redis"], help: "Store in Redis in dojot's layout instead of DIR (then: cicada store export)" },
    batch: { type: "string", arg: "N", default: "100", help: "With dojot: certificates per batch" },
    wait: { type: "string", arg: "MS", default: "0", help: "With dojot: pause between batches, to pace the platform" },
    tenant: { type: "string", arg: "NAME", env: "TENANT", default: "admin", help: "Tenant: certificate CN is tenant:id (dojot sets it from its token)" },
    "replace-ca": { type: "boolean", help: "Replace a different CA already in DIR or the Redis store (its certificates stop verifying)" },
    ...DIR_OPTIONS,
    ...CA_OPTIONS,
    jobs: { type: "string", short: "j", arg: "N", help: "Worker processes (default: one per core); with dojot, requests in flight (default 8)" },
    ...DOJOT_OPTIONS,
    ...STORE_OPTIONS,
  },
  details: `
Layout of DIR (as dojot's generate_certs): <id>.key (mode 0600), <id>.crt, ca.crt, renew/,
revoke/ — so \`ls DIR | wc -l\` is 2N+3. The local CA's key, the CRL and broker certificates
live in the hidden DIR/.ca/ and DIR/.broker/ folders. The CA is created on first use.
Re-running adds devices; existing files are never overwritten.

With --store URL the devices go to Redis (db REDIS_CERTIFICATES_DB, default 0: a hash per id
with thing_id, private_key, thing_certificate) and the CA certificate to db REDIS_MAPPED_DB
(key ca_certificate); \`cicada store export\` writes the directory on any machine.
With --dojot or --signer dojot the keys and CSRs are made here and dojot's x509 service signs
them (DOJOT_URL, DOJOT_USER, DOJOT_PASSWD); ca.crt is dojot's CA.

Examples:
  cicada certs create --devices 10000
  cicada certs create --ids 1a2b3c,4d5e6f --tenant acme --key rsa
  cicada certs create --devices 100000 --store redis://127.0.0.1:6379
  DOJOT_URL=http://10.0.0.5:8000 cicada certs create --dojot --batch 100 --wait 1000`,
};

const CRL: CommandSpec = {
  name: "certs crl",
  summary: "Write the local CA's CRL listing every certificate under DIR/revoke/.",
  usage: "cicada certs crl [--certs DIR] [--out FILE]",
  options: { ...DIR_OPTIONS, out: { type: "string", arg: "FILE", help: "Also copy the CRL here (it is always written to DIR/.ca/crl.pem)" } },
};

const REVOKE: CommandSpec = {
  name: "certs revoke",
  summary: "Revoke devices: file their certificates under DIR/revoke/, rewrite the CRL (or revoke in dojot), take them out of DIR.",
  usage: "cicada certs revoke --ids a,b,c [--certs DIR] [--signer local|dojot] [--crl-hook CMD]",
  options: {
    ids: { type: "string", arg: "a,b,c", help: "Device ids to revoke" },
    ...DIR_OPTIONS,
    signer: { type: "string", arg: "local|dojot", help: "Who revokes: the local CA of DIR (default; its CRL lists the certificates), or dojot's x509 service" },
    "crl-hook": { type: "string", arg: "CMD", help: "With the local CA: shell command run once the CRL is rewritten (e.g. kill -HUP <broker pid>)" },
    ...DOJOT_OPTIONS,
  },
  details: `
A revoke files the same things whether this command or a run (REVOKE_DEVICES) does it: the
certificate goes to DIR/revoke/<id>.crt (<id>-<serial>.crt if that name is taken), and the
local CA's CRL (DIR/.ca/crl.pem) lists every certificate filed there; with --signer dojot,
dojot's x509 service revokes it (DELETE by fingerprint). This command also takes the device
out of DIR: its key moves next to the filed certificate, so later runs no longer use it.
A broker loading the CRL (crlfile) refuses these devices once it reloads it.`,
};

const SERVER: CommandSpec = {
  name: "certs server",
  summary: "Issue a broker (server) certificate from the local CA.",
  usage: "cicada certs server [--host 127.0.0.1,localhost] [--certs DIR] [--out DIR]",
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

export function certsCommand(argv: string[]): Promise<number> {
  return runSubcommand("certs", CERTS_HELP, {
    create,
    crl,
    revoke,
    server,
    __worker: async () => {
      await runIssueWorker();
      return EXIT.OK;
    },
  }, argv);
}

async function create(argv: string[]): Promise<number> {
  const o = parseCommand(CREATE, argv);
  if (!o) return EXIT.OK;
  const devices = o.has("devices") ? o.int("devices", 0, 1, 10_000_000) : undefined;
  const ids = o.list("ids");
  const fromDojot = o.bool("dojot");
  const modes = [devices !== undefined, ids !== undefined, fromDojot].filter(Boolean).length;
  if (modes === 0) o.issues.push("give --devices N, --ids a,b,c or --dojot");
  if (modes > 1) o.issues.push("--devices, --ids and --dojot cannot be used together");
  if (ids && ids.length === 0) o.fail("ids", "lists no device id", o.str("ids"));
  const badIds = (ids ?? []).filter((id) => !DEVICE_ID.test(id));
  if (badIds.length) o.issues.push(`--ids: ${badIds.slice(0, 3).map((s) => JSON.stringify(s)).join(", ")} not valid (letters, digits, _ and -, up to 64)`);
  const tenant = readTenant(o);
  const kind = o.choice<KeyKind>("key", ["ec", "rsa"], "ec");
  const days = o.int("days", 365, 1, 36500);
  const signer = fromDojot ? "dojot" : o.choice("signer", ["local", "dojot"], "local");
  if (fromDojot && o.has("signer") && o.str("signer") !== "dojot") o.issues.push("--dojot certificates are signed by dojot: drop --signer local");
  if (signer === "dojot" && (o.has("signing-ca-cert") || o.has("signing-ca-key"))) o.issues.push("--signing-ca-cert/--signing-ca-key choose a local CA: they do not go with dojot's signer");
  const jobs = o.int("jobs", signer === "dojot" ? 8 : availableParallelism(), 1, 256);
  const batch = o.int("batch", 100, 1, 1_000_000);
  const waitMs = o.int("wait", 0, 0, 3_600_000);
  const dojot = signer === "dojot" ? readDojotSettings(o) : null;
  let store: StoreSettings | null = null;
  if (o.has("store")) store = readStoreSettings(o, "store");
  o.check();

  const dir = ensureCertDir(o.str("certs")!);
  const target = store ? `Redis ${redactUrl(store.redis.url)}` : dir.root;
  const redis = store ? await RedisStore.open(store) : null;
  // Ended before any error is printed, so no progress line runs into it.
  const progress = new Progress();
  try {
    const client = dojot ? new DojotClient(dojot) : null;
    if (client && redis) {
      // Share the JWT through the store, as dojot's tool did: one login for every machine and run.
      const cached = await redis.jwt();
      if (cached) client.useToken(cached);
      client.onToken = (jwt, ttl) => void redis.setJwt(jwt, ttl).catch(() => {});
    }
    const existing = new Set(redis ? await redis.ids() : listDeviceIds(dir.root));
    let wanted: string[];
    if (fromDojot) {
      wanted = await client!.deviceIds();
      process.stderr.write(`dojot lists ${plural(wanted.length, "device")}\n`);
    } else wanted = ids ? [...new Set(ids)] : newIds(devices!, existing);
    const todo = wanted.filter((id) => !existing.has(id));
    const already = wanted.length - todo.length;

    const started = performance.now();
    const show = (created: number, workers: string) => {
      const secs = (performance.now() - started) / 1000;
      const rate = created / Math.max(secs, 1e-3);
      progress.update(`certs: ${fmtInt(created)}/${fmtInt(todo.length)} (${fmtInt(rate)}/s, ${workers}) eta ${fmtDuration((todo.length - created) / Math.max(rate, 1e-9))}`);
    };
    let tally: IssueTally;
    const replaceCa = o.bool("replace-ca");
    if (client) {
      client.onRetry = (line) => {
        progress.done();
        process.stderr.write(`${line}\n`);
      };
      client.onWaiting = (what, s) => progress.update(`dojot: waiting for ${what} (${s} s)`, true);
      const caPem = await client.caPem();
      if (redis) await setStoreCa(redis, caPem, "dojot's CA", replaceCa);
      else writeDojotCa(dir, caPem, replaceCa);
      const sink = redis
        ? async (id: string, keyPem: string, certPem: string, identity: string) => (await redis.put([{ id, thingId: identity, keyPem, certPem }])) === 1
        : async (id: string, keyPem: string, certPem: string) => writeDevice(dir.root, id, keyPem, certPem);
      const r = await issueViaDojot({ ids: todo, tenant, kind, lanes: jobs, batch, waitMs, associate: fromDojot }, client, sink, (_d, created) => show(created, `${jobs} lanes`));
      progress.done();
      tally = r;
      if (client.retried) process.stderr.write(`dojot: ${plural(client.retried, "request")} retried after 5xx or timeouts\n`);
      if (r.unexpectedCount) {
        const e = r.unexpected.map((u) => `${u.id} → CN=${u.cn}`).join(", ");
        process.stderr.write(`warning: ${plural(r.unexpectedCount, "certificate")} from dojot carry a CN other than ${tenant}:<id> (${e}): those devices connect as their certificate's CN; check dojot's tenant and CN rule\n`);
      }
      if (r.orphansRevoked) process.stderr.write(`dojot: revoked ${plural(r.orphansRevoked, "orphan certificate")} left by signing requests that timed out and were sent again\n`);
      if (r.ambiguous && !r.orphansChecked) {
        process.stderr.write(`dojot: ${plural(r.ambiguous, "signing request")} timed out and were sent again; this dojot has no certificate listing, so up to ${r.ambiguous} certificates may be left that no device holds\n`);
      }
    } else {
      if (redis) {
        // Checked before the local CA is made or used: a store holding dojot's CA keeps it.
        const held = await redis.caPem();
        if (held && !exists(dir.caKey) && !replaceCa) throw caMismatch(`the store ${redactUrl(store!.redis.url)}`, held, "a new local CA", null);
      }
      const { ca, created } = openLocalCa(dir, { caCert: o.str("signing-ca-cert"), caKey: o.str("signing-ca-key"), kind });
      if (created) process.stderr.write(`created local CA ${dir.caCert} (key in ${dir.caKey})\n`);
      if (redis) await setStoreCa(redis, ca.certPem, `the local CA of ${dir.root}`, replaceCa);
      const workers = workersFor(todo.length, jobs);
      tally = await issueParallel(
        { root: dir.root, tenant, kind, days, caCert: o.str("signing-ca-cert") ?? dir.caCert, caKey: o.str("signing-ca-key") ?? dir.caKey, ids: todo, ...(store ? { store } : {}) },
        ca,
        workers,
        (t) => show(t.created, `${workers} proc`),
      );
    }
    progress.done();
    const secs = (performance.now() - started) / 1000;
    const skipped = already + tally.skipped;
    process.stdout.write(
      `created ${plural(tally.created, `${kind === "ec" ? "EC P-256" : "RSA-2048"} device certificate`)}${signer === "dojot" ? " signed by dojot" : ""} in ${target} ` +
        `in ${fmtDuration(secs)} (${fmtInt(tally.created / Math.max(secs, 1e-3))}/s)` +
        `${skipped ? `; ${fmtInt(skipped)} already present, left unchanged` : ""}\n`,
    );
  } finally {
    progress.done();
    await redis?.close();
  }
  return EXIT.OK;
}

/** "1 certificate", "2 certificates". */
function plural(n: number, what: string): string {
  return `${fmtInt(n)} ${what}${n === 1 ? "" : "s"}`;
}

/** The refusal to mix two CAs, naming both. */
function caMismatch(where: string, heldPem: string, incoming: string, incomingPem: string | null): LoadError {
  return new LoadError(
    `${where} holds certificates of another CA (${describeName(heldPem)}) than ${incoming}${incomingPem ? ` (${describeName(incomingPem)})` : ""}: ` +
      "mixing them would leave one set unverifiable. Use another directory or store, or --replace-ca to replace it",
    EXIT.BAD_INPUT,
  );
}

/** Writes dojot's CA as DIR/ca.crt; a different CA already there (local or foreign) is kept unless `replace`. */
function writeDojotCa(dir: CertDir, caPem: string, replace: boolean): void {
  const current = exists(dir.caCert) ? readFileSync(dir.caCert, "utf8") : "";
  if (current.trim() === caPem.trim()) return;
  if (exists(dir.caKey) && !replace) throw caMismatch(`${dir.root} (a local CA, key ${dir.caKey})`, current, "dojot's CA", caPem);
  if (current && !replace) throw caMismatch(dir.root, current, "dojot's CA", caPem);
  writeFileAtomic(dir.caCert, caPem, 0o644);
}

/** Records the store's CA (`ca_certificate`); a different one already there is kept unless `replace`. */
async function setStoreCa(redis: RedisStore, caPem: string, incoming: string, replace: boolean): Promise<void> {
  const held = await redis.caPem();
  if (held && held.trim() !== caPem.trim() && !replace) throw caMismatch("the Redis store", held, incoming, caPem);
  await redis.setCaPem(caPem);
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
  const dir = ensureCertDir(o.str("certs")!);
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
  const kind = o.choice("signer", ["local", "dojot"], "local");
  const dojot = kind === "dojot" ? readDojotSettings(o) : null;
  if (dojot && o.has("crl-hook")) o.issues.push("--crl-hook rewrites the local CA's CRL: it does not go with --signer dojot");
  o.check();
  const dir = ensureCertDir(o.str("certs")!);
  const missing = ids!.filter((id) => !exists(join(dir.root, `${id}.crt`)));
  if (missing.length) throw new LoadError(`no certificate for ${missing.slice(0, 5).join(", ")} in ${dir.root}`, EXIT.BAD_INPUT);
  const filing = { revokeDir: dir.revoke, renewDir: dir.renew };
  const hook = o.str("crl-hook");
  const signer: Signer = dojot
    ? new DojotSigner(new DojotClient(dojot), filing)
    : new LocalSigner(openLocalCa(dir, { kind: "ec" }).ca, dir, { tenant: "", ...filing, ...(hook ? { crlHook: hook } : {}) });
  const revokeOne = async (id: string) => {
    const certPath = join(dir.root, `${id}.crt`);
    const filed = await signer.revoke(id, readFileSync(certPath, "utf8"));
    // Out of DIR: the key goes next to the filed certificate, the certificate's copy is dropped.
    const keyPath = join(dir.root, `${id}.key`);
    if (exists(keyPath)) renameSync(keyPath, filed.replace(/\.crt$/, ".key"));
    unlinkSync(certPath);
  };
  // The local CA rewrites its CRL once for revocations that arrive together; dojot is asked a few at a time.
  const lanes = dojot ? 4 : ids!.length;
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(lanes, ids!.length) }, async () => {
    while (next < ids!.length) await revokeOne(ids![next++]!);
  }));
  process.stdout.write(dojot ? `revoked ${ids!.length} in dojot; certificates filed under ${dir.revoke}\n` : `revoked ${ids!.length}; ${dir.crl} lists ${fmtInt(revokedEntries(dir).length)} certificates\n`);
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
  const dir = ensureCertDir(o.str("certs")!);
  const { ca } = openLocalCa(dir, { caCert: o.str("signing-ca-cert"), caKey: o.str("signing-ca-key"), kind });
  const outDir = o.str("out") ?? dir.broker;
  makeDir(outDir, PRIVATE_DIR_MODE);
  const cert = issueServer(ca, hosts, kind, days);
  writeFileAtomic(join(outDir, "server.key"), cert.keyPem, 0o600);
  writeFileAtomic(join(outDir, "server.crt"), cert.certPem, 0o644);
  process.stdout.write(`wrote ${join(outDir, "server.crt")} and server.key for ${hosts.join(", ")}\n`);
  return EXIT.OK;
}

