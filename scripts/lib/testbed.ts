/**
 * The local test bed: mosquitto configured like dojot's broker (mutual TLS, identity as
 * username, per-device ACL, CRL) and redis-server, on loopback and free ports. Used by the
 * tests, the benchmarks, `scripts/testbed.ts` and the quick start.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { issueServer } from "../../src/pki/issue.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { ensureCertDir, type CertDir } from "../../src/store/dir.ts";
import { writeFileAtomic } from "../../src/sys/fs.ts";

/** The admin identity allowed to read and write every topic (probes, actuation in tests). */
export const PROBE_CN = "cicada-probe";

export interface Broker {
  pid: number;
  host: string;
  port: number;
  dir: string;
  log: string;
  /** Sends SIGHUP: mosquitto reloads its configuration and CRL. */
  reload(): void;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface RedisServer {
  pid: number;
  host: string;
  port: number;
  url: string;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A TCP port that was free a moment ago on `host`. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const s = Bun.listen({ hostname: host, port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** Resolves once something accepts TCP connections on host:port, or rejects after `timeoutMs`. */
export async function waitForPort(host: string, port: number, timeoutMs = 10_000, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`process for ${host}:${port} exited before listening`);
    const ok = await new Promise<boolean>((res) => {
      Bun.connect({ hostname: host, port, socket: { open(s) { s.end(); res(true); }, connectError() { res(false); }, data() {} } }).catch(() => res(false));
    });
    if (ok) return;
    await Bun.sleep(25);
  }
  throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
}

/** Starts a server process, resolves once it listens; `stop` ends that PID only. */
async function spawnServer(argv: string[], host: string, port: number, stderr: string, detached = false) {
  const proc = Bun.spawn(argv, { stdio: ["ignore", "ignore", Bun.file(stderr)], detached });
  if (detached) proc.unref();
  await waitForPort(host, port, 10_000, () => proc.exitCode === null);
  const stop = async () => {
    if (proc.exitCode === null) {
      proc.kill("SIGTERM");
      await proc.exited;
    }
  };
  return { proc, stop };
}

/** Broker TLS material in `<certDir>/.broker`, made from the directory's CA on first use. */
export function brokerCerts(certDir: string): { dir: CertDir; cert: string; key: string } {
  const dir = ensureCertDir(certDir);
  const { ca } = openLocalCa(dir, { kind: "ec" });
  const cert = join(dir.broker, "server.crt");
  const key = join(dir.broker, "server.key");
  try {
    readFileSync(cert);
  } catch {
    mkdirSync(dir.broker, { recursive: true, mode: 0o700 });
    const issued = issueServer(ca, ["127.0.0.1", "localhost", "::1"], "ec", 365);
    writeFileAtomic(key, issued.keyPem, 0o600);
    writeFileAtomic(cert, issued.certPem, 0o644);
  }
  return { dir, cert, key };
}

export interface BrokerOptions {
  /** Certificate directory whose CA signs devices (and the broker certificate). */
  certDir: string;
  /** Working folder for configs and logs. */
  stateDir: string;
  host?: string;
  port?: number;
  /** Log each connection (off for scale runs: one line per device). */
  verbose?: boolean;
  /** Keep running after this process exits (for `scripts/testbed.ts up`). */
  detached?: boolean;
  /** The broker's own certificate and key files (default: issued by certDir's CA, see brokerCerts). */
  serverCert?: { cert: string; key: string };
  /** What each device may publish to, as an ACL pattern (default `%u/attrs`; a platform that drops telemetry: another topic). */
  devicePublishPattern?: string;
  /** More ACL lines (e.g. `pattern readwrite %u/#`, `topic read firmware/#`): what scenarios' devices may do beyond dojot's topics. */
  acl?: string[];
  /** Plain TCP, anonymous clients, no ACL: for throughput benchmarks without TLS (never for tests of the mTLS contract). */
  plain?: boolean;
  /** More mosquitto.conf lines (general settings, e.g. `max_inflight_messages 2`). */
  extra?: string[];
  /** More lines for the listener, after its TLS settings (e.g. `tls_version tlsv1.3`). */
  listenerExtra?: string[];
  /** Mutual TLS, but the client certificate is not the identity: anonymous clients, no ACL (benchmarks of the TLS layer alone, e.g. one certificate shared by every device). */
  anonymous?: boolean;
  /** Runs it inside a network namespace: the argv prefix, e.g. ["ip", "netns", "exec", "hub"] (host and port are then that namespace's). */
  netns?: string[];
  /** Connections the listener accepts before it closes new ones at once (default: no limit). */
  maxConnections?: number;
  /** `set_tcp_nodelay` (default true here; mosquitto's own default is false, see bench/connack.bench.ts). */
  nodelay?: boolean;
}

/** Starts one mosquitto with mutual TLS like dojot's VerneMQ setup. */
export async function startBroker(opts: BrokerOptions): Promise<Broker> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort(host));
  const made = brokerCerts(opts.certDir);
  const { dir } = made;
  const { cert, key } = opts.serverCert ?? made;
  const wd = resolve(opts.stateDir, `mosquitto-${port}`);
  mkdirSync(wd, { recursive: true });
  const acl = join(wd, "acl");
  // %u is the certificate CN (use_identity_as_username), i.e. tenant:deviceid.
  writeFileSync(acl, `pattern write ${opts.devicePublishPattern ?? "%u/attrs"}\npattern read %u/config\n${(opts.acl ?? []).join("\n")}\n\nuser ${PROBE_CN}\ntopic readwrite #\ntopic read $SYS/#\n`);
  const log = join(wd, "mosquitto.log");
  const conf = join(wd, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      "per_listener_settings false",
      `allow_anonymous ${opts.plain || opts.anonymous ? "true" : "false"}`,
      "persistence false",
      "user root",
      `log_dest file ${log}`,
      "log_type error",
      "log_type warning",
      ...(opts.verbose === false ? [] : ["log_type notice"]),
      `connection_messages ${opts.verbose === false ? "false" : "true"}`,
      "sys_interval 1",
      ...(opts.extra ?? []),
      ...(opts.plain || opts.anonymous ? [] : [`acl_file ${acl}`]),
      `listener ${port} ${host}`,
      `max_connections ${opts.maxConnections ?? -1}`,
      `set_tcp_nodelay ${opts.nodelay === false ? "false" : "true"}`,
      ...(opts.plain
        ? []
        : [`cafile ${resolve(dir.caCert)}`, `certfile ${resolve(cert)}`, `keyfile ${resolve(key)}`, "require_certificate true", `use_identity_as_username ${opts.anonymous ? "false" : "true"}`, `crlfile ${resolve(dir.crl)}`]),
      ...(opts.listenerExtra ?? []),
      "",
    ].join("\n"),
  );
  // mosquitto warns on stderr about running as root; keep that out of test output but on disk.
  const { proc, stop } = await spawnServer([...(opts.netns ?? []), "mosquitto", "-c", conf], host, port, join(wd, "stderr.log"), opts.detached);
  return { pid: proc.pid, host, port, dir: wd, log, reload: () => proc.kill("SIGHUP"), stop, [Symbol.asyncDispose]: stop };
}

export interface WebsockifyOptions {
  /** The MQTT broker it forwards to (plain TCP). */
  target: { host: string; port: number };
  stateDir: string;
  /** wss: TLS with this server certificate, and clients must present a certificate this CA signed. */
  tls?: { cert: string; key: string; ca: string };
}

/**
 * Debian's websockify in front of a broker: MQTT over WebSocket (ws, or wss with client
 * certificates) where mosquitto's own websockets listener is not built in. It forwards the
 * frames' payload to the broker's TCP port.
 */
export async function startWebsockify(opts: WebsockifyOptions): Promise<{ host: string; port: number; pid: number; stop: () => Promise<void>; [Symbol.asyncDispose]: () => Promise<void> }> {
  const host = "127.0.0.1";
  const port = await freePort(host);
  const tls = opts.tls ? ["--cert", opts.tls.cert, "--key", opts.tls.key, "--ssl-only", "--verify-client", "--cafile", opts.tls.ca] : [];
  mkdirSync(opts.stateDir, { recursive: true });
  const { proc, stop } = await spawnServer(["websockify", ...tls, `${host}:${port}`, `${opts.target.host}:${opts.target.port}`], host, port, join(opts.stateDir, `websockify-${port}.log`));
  return { host, port, pid: proc.pid, stop, [Symbol.asyncDispose]: stop };
}

/** Starts `count` brokers on consecutive free ports (one mosquitto holds ~20k connections here). */
export async function startBrokers(count: number, opts: BrokerOptions): Promise<Broker[]> {
  const out: Broker[] = [];
  for (let i = 0; i < count; i++) out.push(await startBroker({ ...opts, port: opts.port ? opts.port + i : undefined }));
  return out;
}

/** Starts redis-server on loopback with persistence off. */
export async function startRedis(opts: { stateDir: string; host?: string; port?: number; password?: string; detached?: boolean; tlsCertDir?: string; netns?: string[] }): Promise<RedisServer> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? (await freePort(host));
  const wd = resolve(opts.stateDir, `redis-${port}`);
  mkdirSync(wd, { recursive: true });
  const args = [...(opts.netns ?? []), "redis-server", "--bind", host, "--save", "", "--appendonly", "no", "--dir", wd, "--logfile", join(wd, "redis.log")];
  if (opts.tlsCertDir) {
    // TLS only (rediss://), with the server certificate the test bed's brokers use; clients need no certificate.
    const { dir, cert, key } = brokerCerts(opts.tlsCertDir);
    args.push("--port", "0", "--tls-port", String(port), "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", dir.caCert, "--tls-auth-clients", "no");
  } else args.push("--port", String(port));
  if (opts.password) args.push("--requirepass", opts.password);
  // Beyond loopback (a test's own network namespace) Redis refuses clients without a password unless told.
  if (!host.startsWith("127.")) args.push("--protected-mode", "no");
  const { proc, stop } = await spawnServer(args, host, port, join(wd, "stderr.log"), opts.detached);
  const auth = opts.password ? `:${encodeURIComponent(opts.password)}@` : "";
  return { pid: proc.pid, host, port, url: `${opts.tlsCertDir ? "rediss" : "redis"}://${auth}${host}:${port}`, stop, [Symbol.asyncDispose]: stop };
}

export interface PrometheusServer {
  pid: number;
  port: number;
  /** Base URL of its HTTP API, e.g. http://127.0.0.1:9090. */
  url: string;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts Prometheus (Debian's `prometheus` package) on a free loopback port, scraping `targets`
 * (host:port of cicada's /metrics) every `intervalS` seconds, with the bearer `token` when given.
 */
export async function startPrometheus(opts: { stateDir: string; targets: string[]; intervalS?: number; token?: string }): Promise<PrometheusServer> {
  const host = "127.0.0.1";
  const port = await freePort(host);
  const wd = resolve(opts.stateDir, `prometheus-${port}`);
  mkdirSync(join(wd, "data"), { recursive: true });
  const config = join(wd, "prometheus.yml");
  const interval = `${opts.intervalS ?? 1}s`;
  writeFileSync(
    config,
    [
      "global:",
      `  scrape_interval: ${interval}`,
      `  evaluation_interval: ${interval}`,
      "scrape_configs:",
      "  - job_name: cicada",
      `    scrape_interval: ${interval}`,
      ...(opts.token ? ["    authorization:", `      credentials: ${JSON.stringify(opts.token)}`] : []),
      "    static_configs:",
      `      - targets: [${opts.targets.map((t) => JSON.stringify(t)).join(", ")}]`,
      "",
    ].join("\n"),
  );
  const args = ["prometheus", `--config.file=${config}`, `--storage.tsdb.path=${join(wd, "data")}`, `--web.listen-address=${host}:${port}`, "--log.level=warn"];
  const { proc, stop } = await spawnServer(args, host, port, join(wd, "stderr.log"));
  const url = `http://${host}:${port}`;
  // Listening is not ready: wait until it says it is.
  for (const end = Date.now() + 15_000; Date.now() < end; await Bun.sleep(100)) {
    if ((await fetch(`${url}/-/ready`).catch(() => null))?.ok) break;
  }
  return { pid: proc.pid, port, url, stop, [Symbol.asyncDispose]: stop };
}
