/** `cicada worker`: one machine of a federated run — joins the controller over Redis and runs its share of the devices. */
import { readListen } from "../config/serve.ts";
import { serveMetrics } from "../api/server.ts";
import { fleetMetrics } from "../api/metrics.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { MachineAgent } from "../cluster/machine.ts";
import { redactUrl } from "../sys/redact.ts";
import { EXIT } from "../errors.ts";
import { isStoreUrl } from "../store/redis.ts";
import { CLUSTER_KEY_OPTION, keyIssue, readClusterKey, Seal } from "../cluster/seal.ts";
import { readRedisUrl, readStoreSettings, STORE_OPTIONS } from "../config/store.ts";
import { LIFECYCLE_LOCAL_OPTIONS, readLifecycleLocal } from "../config/lifecycle.ts";
import { readSourceAddresses } from "../config/run.ts";
import { parseCommand, type CommandSpec } from "../config/options.ts";

export const WORKER_SPEC: CommandSpec = {
  name: "worker",
  summary: "Join a federated run: take a share of the devices from a controller over Redis.",
  usage: "cicada worker [--redis URL] [options]",
  options: {
    redis: { type: "string", arg: "URL", help: "Redis shared with the controller (default redis://REDIS_HOST:REDIS_PORT, password REDIS_PASSWD)" },
    certs: { type: "string", arg: "DIR|URL", env: "CERT_DIR", default: "cert", help: "Certificate directory or Redis store: the same ids as the controller's" },
    "broker-ca": { type: "string", arg: "FILE", env: "CA_CERT_FILE", aliases: ["ca-cert"], help: "CA of the broker certificate (default DIR/ca.crt, else the controller's)" },
    "source-address": { type: "string", arg: "LIST", help: "Local addresses this machine's devices connect from" },
    workers: { type: "string", short: "w", arg: "auto|N", default: "auto", help: "Worker processes: auto = one per core, more if the open-file limit needs them" },
    name: { type: "string", arg: "NAME", help: "Machine name in the registry and the report (default host-pid)" },
    once: { type: "boolean", help: "Exit after one run instead of waiting for the next" },
    scenarios: { type: "string", arg: "DIR", help: "Scenario files this machine may run: a controller's --scenario runs here only as a file of this directory with the same content (SHA-256)" },
    metrics: { type: "string", arg: "HOST:PORT", help: "Serve this machine's own /metrics here (its devices, its processes) for Prometheus, e.g. 0.0.0.0:9464 with --token" },
    token: { type: "string", arg: "TOKEN", env: "CICADA_TOKEN", help: "Bearer token --metrics requires, 16+ characters (required to bind beyond loopback)" },
    "ui-allow-host": { type: "string", arg: "LIST", help: "With --metrics: host names answered to besides the addresses and localhost" },
    "verify-cert": { type: "string", arg: "FILE", help: "This machine's verifying consumer certificate, for runs with --verify (it counts this machine's own devices)" },
    "verify-key": { type: "string", arg: "FILE", help: "Its private key" },
    "cluster-key": CLUSTER_KEY_OPTION,
    ...LIFECYCLE_LOCAL_OPTIONS,
    ...STORE_OPTIONS,
  },
  details: `
Start one per machine (it starts its own per-core worker processes). The controller —
\`cicada run --redis URL\` — hands each machine disjoint identity ranges of the shared
certificate directory, users and spawn rate, and re-splits when a machine joins or is lost.
Through a Redis outage the devices keep running and the counts are kept; with no word from
the controller for its grace period (--grace, 60 s) the machine's lease lapses and its devices
are dropped without reconnecting.

Only what this command line and environment say acts on this machine: for runs that renew or
revoke, the CA directory (--ca-dir), the hook that tells the broker (--crl-hook) and dojot's
credentials (DOJOT_URL, DOJOT_USER, DOJOT_PASSWD). The controller sends only the plan (caps,
probabilities, signer kind). Beyond loopback, every machine and the controller need the same
--cluster-key; messages without a valid signature are dropped.

Example:
  cicada worker --redis redis://10.0.0.1:6379 --cluster-key cluster.key --certs cert --source-address 127.0.0.2`,
};

export async function workerCommand(argv: string[]): Promise<number> {
  const o = parseCommand(WORKER_SPEC, argv);
  if (!o) return EXIT.OK;
  const before = o.issues.length;
  const url = readRedisUrl(o, "redis");
  const bad = o.issues.length > before;
  const certsArg = o.str("certs")!;
  const store = isStoreUrl(certsArg) ? readStoreSettings(o, "certs") : undefined;
  const certDir = store ? store.redis.url : certsArg;
  const redisCa = o.fileText("redis-ca");
  const caPem = o.has("broker-ca") ? o.fileText("broker-ca") : store ? undefined : (() => {
    try {
      return readFileSync(join(certDir, "ca.crt"), "utf8");
    } catch {
      return undefined;
    }
  })();
  const workers = o.str("workers") === "auto" ? "auto" : o.int("workers", 1, 1, 1024);
  const clusterKey = readClusterKey(o, (line) => process.stderr.write(`cicada worker: warning: ${line}\n`));
  const noKey = keyIssue(url, clusterKey, o.has("redis") ? "--redis" : "REDIS_HOST");
  if (noKey && !bad) o.issues.push(noKey);
  const lifecycle = readLifecycleLocal(o, certsArg, true);
  const sources = readSourceAddresses(o);
  const verifyCert = o.fileText("verify-cert");
  const verifyKey = o.fileText("verify-key");
  if (o.has("verify-cert") !== o.has("verify-key")) o.issues.push("--verify-cert and --verify-key go together");
  const metrics = o.has("metrics") ? readListen(o, "metrics") : undefined;
  o.check();
  const agent = new MachineAgent(
    {
      redis: { url, ...(redisCa !== undefined ? { ca: redisCa } : {}) },
      certDir,
      ...(store ? { store } : {}),
      caPem,
      sources,
      workers,
      name: o.str("name"),
      once: o.bool("once"),
      seal: new Seal(clusterKey),
      lifecycle,
      ...(verifyCert && verifyKey ? { verifyIdentity: { cert: verifyCert, key: verifyKey } } : {}),
      ...(o.has("scenarios") ? { scenariosDir: o.str("scenarios")! } : {}),
    },
    (line) => process.stderr.write(`cicada worker: ${line}\n`),
  );
  process.stderr.write(`cicada worker: joining ${redactUrl(url)}\n`);
  const say = (line: string) => process.stderr.write(`cicada worker: ${line}\n`);
  const served = metrics
    ? serveMetrics(
        metrics,
        () => {
          const v = agent.view();
          return fleetMetrics(v.fleet, v.fleet !== null, v.stats, v.machine);
        },
        say,
      )
    : null;
  try {
    return await agent.serve();
  } finally {
    await served?.stop();
  }
}
