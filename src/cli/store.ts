/** `cicada store`: the Redis certificate store in dojot's layout — export to a directory, map, restore, clear. */
import { redactUrl } from "../sys/redact.ts";
import { DojotClient } from "../dojot/client.ts";
import { DOJOT_OPTIONS, readDojotSettings } from "../config/dojot.ts";
import { EXIT, LoadError } from "../errors.ts";
import { ensureCertDir, writeDevice } from "../store/dir.ts";
import { writeFileAtomic } from "../sys/fs.ts";
import { CA_KEY, COUNTERS, RedisStore, type StoreSettings } from "../store/redis.ts";
import { readStoreSettings, STORE_OPTIONS } from "../config/store.ts";
import { parseCommand, runSubcommand, type CommandSpec, type Options, type OptionSpecs } from "../config/options.ts";
import { Progress, fmtDuration, fmtInt } from "./progress.ts";

const REDIS_OPTIONS: OptionSpecs = {
  store: { type: "string", arg: "URL", aliases: ["redis"], help: "The store (default redis://REDIS_HOST:REDIS_PORT)" },
  ...STORE_OPTIONS,
};

const EXPORT: CommandSpec = {
  name: "store export",
  summary: "Write the store's devices as a certificate directory (dojot layout) with ca.crt.",
  usage: "cicada store export [--store URL] [--certs DIR] [--signing-ca-cert FILE | --dojot]",
  options: {
    ...REDIS_OPTIONS,
    certs: { type: "string", arg: "DIR", env: "CERT_DIR", default: "cert", aliases: ["dir"], help: "Directory to write (existing devices are left alone)" },
    "signing-ca-cert": { type: "string", arg: "FILE", env: "CA_CERT_FILE", aliases: ["ca-cert"], help: "CA certificate for DIR/ca.crt, the one that signed the devices (default: the store's ca_certificate)" },
    dojot: { type: "boolean", help: "Fetch ca.crt from dojot (GET /x509/v1/ca) when the store has none" },
    ...DOJOT_OPTIONS,
  },
  details: `
Works on any machine that reaches the Redis: this is how every load machine gets the same
directory. A dump made by dojot's generate_certs works as it is (give --signing-ca-cert or --dojot:
its dumps do not hold the CA).`,
};
const MAP: CommandSpec = { name: "store map", summary: "Map 1..N to the device ids in the mapped db (dojot's --map).", usage: "cicada store map [--store URL]", options: REDIS_OPTIONS };
const RESTORE: CommandSpec = {
  name: "store restore",
  summary: "Reset device_count, devices_to_renew and devices_to_revoke to 0, keeping the certificates (dojot's --restore).",
  usage: "cicada store restore [--store URL]",
  options: REDIS_OPTIONS,
};
const CLEAR: CommandSpec = {
  name: "store clear",
  summary: "Empty the certificates db and the mapped db (dojot's --clear).",
  usage: "cicada store clear --yes [--store URL]",
  options: { ...REDIS_OPTIONS, yes: { type: "boolean", help: "Yes, delete every certificate and mapping in both databases" } },
};

const HELP = `The Redis certificate store (dojot's layout).

Usage: cicada store <command> [options]

Commands:
  export   Write the devices as a certificate directory with ca.crt
  map      Map 1..N to device ids (mapped db)
  restore  Reset the claim counters to 0
  clear    Empty both databases

Run cicada store <command> --help for its options.
`;

export function storeCommand(argv: string[]): Promise<number> {
  return runSubcommand("store", HELP, {
    export: exportDir,
    map: (rest) => withStore(MAP, rest, async (s) => process.stdout.write(`mapped ${fmtInt(await s.map())} device ids to 1..N\n`)),
    restore: (rest) =>
      withStore(RESTORE, rest, async (s) => {
        await s.restore();
        process.stdout.write(`${COUNTERS.join(", ")} set to 0\n`);
      }),
    clear: (rest) =>
      withStore(
        CLEAR,
        rest,
        async (s) => {
          await s.clear();
          process.stdout.write("certificates db and mapped db emptied\n");
        },
        (o) => {
          if (!o.bool("yes")) o.issues.push("store clear deletes every certificate in the store: add --yes");
        },
      ),
  }, argv);
}

function readStore(o: Options): StoreSettings {
  return readStoreSettings(o, "store");
}

async function withStore(spec: CommandSpec, argv: string[], body: (s: RedisStore) => Promise<unknown>, validate?: (o: Options) => void): Promise<number> {
  const o = parseCommand(spec, argv);
  if (!o) return EXIT.OK;
  const settings = readStore(o);
  validate?.(o);
  o.check();
  const store = await RedisStore.open(settings);
  try {
    await body(store);
  } finally {
    await store.close();
  }
  return EXIT.OK;
}

const EXPORT_BATCH = 1000;

async function exportDir(argv: string[]): Promise<number> {
  const o = parseCommand(EXPORT, argv);
  if (!o) return EXIT.OK;
  const settings = readStore(o);
  const dojot = o.bool("dojot") ? readDojotSettings(o) : null;
  let caPem = o.fileText("signing-ca-cert");
  o.check();
  const store = await RedisStore.open(settings);
  try {
    caPem ??= (await store.caPem()) ?? (dojot ? await new DojotClient(dojot).caPem() : undefined);
    if (!caPem) throw new LoadError(`the store holds no CA certificate (key ${CA_KEY} in db ${settings.mappedDb}): give --signing-ca-cert FILE or --dojot`, EXIT.BAD_INPUT);
    const dir = ensureCertDir(o.str("certs")!);
    writeFileAtomic(dir.caCert, caPem, 0o644);
    const started = performance.now();
    const ids = await store.ids();
    const progress = new Progress();
    let written = 0, present = 0, missing = 0;
    for (let i = 0; i < ids.length; i += EXPORT_BATCH) {
      const part = ids.slice(i, i + EXPORT_BATCH);
      const got = await store.get(part);
      part.forEach((id, k) => {
        const r = got[k];
        if (!r) missing++;
        else if (writeDevice(dir.root, id, r.keyPem, r.certPem)) written++;
        else present++;
      });
      const secs = (performance.now() - started) / 1000;
      progress.update(`export: ${fmtInt(i + part.length)}/${fmtInt(ids.length)} (${fmtInt((i + part.length) / Math.max(secs, 1e-3))}/s)`);
    }
    progress.done();
    const secs = (performance.now() - started) / 1000;
    process.stdout.write(
      `exported ${fmtInt(written)} devices from ${redactUrl(settings.redis.url)} to ${dir.root} in ${fmtDuration(secs)} (${fmtInt(ids.length / Math.max(secs, 1e-3))}/s)` +
        `${present ? `; ${fmtInt(present)} already there, left unchanged` : ""}${missing ? `; ${fmtInt(missing)} hashes without private_key/thing_certificate skipped` : ""}\n`,
    );
  } finally {
    await store.close();
  }
  return EXIT.OK;
}
