// run/ — one run's life, start to verdict (RunSession), the same for the CLI, the control API and each machine.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * One run of a fleet, whatever drives it (the CLI, or the control API): builds the fleet for
 * a RunConfig — one process, supervised workers, or machines over Redis — samples its
 * timeline, and turns its stats into the report.
 */
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { getFileLimit, raiseFileLimit } from "../../native/rlimit.ts";
import { Controller } from "../cluster/controller.ts";
import { idsDigest } from "../cluster/redis-protocol.ts";
import { Seal } from "../cluster/seal.ts";
import { openIdentities, PackedIds, type IdentityBase } from "../cluster/identities.ts";
import { type Range } from "../cluster/ranges.ts";
import { checkIdentities, sampleIndices } from "../pki/check.ts";
import { InProcessFleet } from "../cluster/local-fleet.ts";

import { redactUrl } from "../sys/redact.ts";
import { planWorkers, Supervisor } from "../cluster/supervisor.ts";
import { type Fleet, type FleetSnapshot } from "../cluster/fleet.ts";
import { identitiesFor } from "../cluster/worker.ts";
import type { RunConfig } from "../config/run.ts";
import { openScenario } from "../config/scenario.ts";
import { autoWorkers, checkCapacity, ephemeralPorts } from "../engine/limits.ts";
import { doctorHint, hostWarnings, probeHostFacts } from "./doctor.ts";
import { ConfigError, EXIT, LoadError, messageOf } from "../errors.ts";
import { lifecycleService } from "../lifecycle/service.ts";
import { TICK_MS } from "../engine/scheduler.ts";
import { buildReport, deliveryOf, integrityOf, subscribersOf, type Integrity, type RampReport, type Report } from "../report/summary.ts";
import { dialsLike, Verifier, type VerifierOptions } from "../engine/verifier.ts";
import type { Latency } from "../metrics/histogram.ts";
import { checkThresholds } from "../report/thresholds.ts";
import { Timeline } from "../report/timeline.ts";
import { CA_KEY, isStoreUrl, RedisStore } from "../store/redis.ts";

/** How often the timeline gets a point. */
export const SAMPLE_MS = 2000;
/** How often `--reset-stats` checks whether the ramp is over. */
const RESET_CHECK_MS = 1000;

export class RunSession {
  readonly timeline: Timeline;
  readonly started = new Date();
  /** Stats cover from here (moved by a reset). */
  private statsFrom = this.started;
  private readonly cpu0 = process.cpuUsage();
  private cpuFrom = 0;
  private sampler: ReturnType<typeof setInterval> | null = null;
  private resetWatch: ReturnType<typeof setInterval> | null = null;
  /** The ramp --reset-stats took out of the stats, for the report. */
  private ramp: RampReport | undefined;
  private final: Report | null = null;
  private stopping: Promise<Report> | null = null;
  /** The verifying consumer (--verify). */
  private readonly verifier: Verifier | null;
  /** Plain subscribers (--subscribers), in this process. */
  private readonly subscribers: Verifier | null;
  /** Devices asked for (--users, or as changed since). */
  private users: number;
  /** The total publish rate, when it is the knob (--msg-rate, or set since). */
  private msgRate: number | "max" | undefined;

  private constructor(
    readonly cfg: RunConfig,
    readonly fleet: Fleet,
    /** Worker processes on this machine (0 when machines run the devices). */
    readonly workers: number,
    /** Most devices the run can have: the identities it may use. */
    readonly capacity: number,
  ) {
    this.timeline = new Timeline();
    this.users = cfg.swarm.users;
    this.msgRate = cfg.swarm.max ? "max" : cfg.msgRate;
    // A consumer on the devices' brokers, with its own identity: the verifying one, or plain subscribers.
    const consumer = (c: { cert?: string; key?: string; connections: number }, extra: Pick<VerifierOptions, "actuateRate" | "subscribe">) =>
      new Verifier({
        ...dialsLike(cfg.swarm),
        ...(c.cert ? { cert: c.cert } : {}),
        ...(c.key ? { key: c.key } : {}),
        connections: c.connections,
        ...extra,
      });
    const sub = cfg.subscribers;
    this.subscribers = sub ? consumer(sub, { actuateRate: 0, subscribe: { filter: sub.filter, qos: sub.qos } }) : null;
    // Federated, each machine verifies its own devices: the controller runs no consumer.
    const v = cfg.federation ? undefined : cfg.verify;
    this.verifier = v ? consumer(v, { actuateRate: v.actuateRate }) : null;
  }

  get federated(): boolean {
    return !!this.cfg.federation;
  }

  /** Devices run in other processes (workers or machines), whose CPU and memory count too. */
  private get supervised(): boolean {
    return this.workers > 1 || this.federated;
  }

  get stopped(): boolean {
    return this.final !== null;
  }

  /** Checks identities and capacity, then builds the fleet (not started yet). Bad settings throw a ConfigError. */
  static async open(cfg: RunConfig, say: (line: string) => void): Promise<RunSession> {
    // Workers and machines load the scenario themselves, by path and hash; this process checks it first.
    const scenario = await openScenario(cfg);
    const fromStore = isStoreUrl(cfg.certDir);
    const where = fromStore ? `the store ${redactUrl(cfg.certDir)}` : cfg.certDir;
    // Listed once: the count, the preflight check, the machines' digest and a one-process fleet all use this.
    const base = await openIdentities(cfg.certDir, cfg.store);
    const ids = base.ids;
    const available = Math.max(0, ids.length - cfg.firstDevice);
    const synthetic = !cfg.swarm.tls && available < cfg.swarm.users;
    if (available < cfg.swarm.users && !synthetic) {
      throw new ConfigError([
        `--users ${cfg.swarm.users} needs ${cfg.swarm.users} device certificates in ${where}${cfg.firstDevice ? ` from device ${cfg.firstDevice} on` : ""}, found ${available}: ` +
          `run cicada certs create --devices ${cfg.swarm.users - available} ${fromStore ? `--store ${redactUrl(cfg.certDir)}` : `--certs ${cfg.certDir}`}`,
      ]);
    }
    if (fromStore && cfg.swarm.tls && !cfg.swarm.caPem) {
      // The broker's CA, kept in the store by `cicada certs create --store`.
      const store = await RedisStore.open(cfg.store!);
      cfg.swarm.caPem = (await store.caPem()) ?? undefined;
      await store.close();
      if (!cfg.swarm.caPem && !cfg.swarm.insecure) throw new ConfigError([`--certs: ${where} holds no CA certificate (key ${CA_KEY}): pass --broker-ca FILE, or --insecure`]);
    }
    if (cfg.swarm.tls && !synthetic) await preflight(cfg, base, fromStore, say);
    const space: Range = [cfg.firstDevice, synthetic ? cfg.swarm.users : Math.max(available, cfg.swarm.users)];

    if (cfg.federation) {
      const controller = new Controller(
        {
          redis: cfg.federation.redis,
          swarm: cfg.swarm,
          synthetic,
          space,
          digest: idsDigest(ids),
          graceMs: cfg.federation.graceMs,
          expect: cfg.federation.expect,
          waitMs: Math.max(cfg.federation.graceMs, 10_000),
          seal: new Seal(cfg.federation.clusterKey),
          ...(cfg.verify ? { verify: { connections: cfg.verify.connections, actuateRate: cfg.verify.actuateRate, waitMs: cfg.verify.waitMs } } : {}),
        },
        say,
      );
      return new RunSession(cfg, controller, 0, space[1]);
    }

    const raised = await raiseFileLimit();
    if (!raised.ok) say(`warning: ${raised.reason}`);
    const limit = raised.ok ? raised : getFileLimit();
    const files = limit.ok ? limit.value : null;
    const perProcess = files ? Math.max(1, files.soft - 100) : cfg.swarm.users;
    const workers =
      cfg.workers === "auto" ? autoWorkers(cfg.swarm.users, perProcess, availableParallelism()) : cfg.workers;
    const cap = checkCapacity({
      users: cfg.swarm.users,
      workers,
      destinations: new Set(cfg.swarm.targets.map((t) => `${t.host}:${t.port}`)).size,
      sources: cfg.swarm.sources.length,
      files,
      ports: ephemeralPorts(),
    });
    for (const w of [...cap.warnings, ...hostWarnings(cfg.swarm.users, workers, await probeHostFacts(), cfg.swarm.tlsStack)]) say(`warning: ${w}`);
    if (cap.errors.length) throw new ConfigError([...cap.errors, doctorHint(cfg.swarm.users)]);

    const ranges: Range[] = [space];
    const lifecycle = cfg.lifecycle ? lifecycleService(cfg.lifecycle, cfg.swarm.tenant, say) : null;
    const fleet: Fleet =
      workers === 1
        ? new InProcessFleet(cfg.swarm, await identitiesFor({ certDir: cfg.certDir, ranges, synthetic, stride: 1, slot: 0, store: cfg.store }, synthetic ? undefined : base), lifecycle, scenario)
        : new Supervisor(planWorkers({ certDir: cfg.certDir, synthetic, ranges, workers, swarm: cfg.swarm, store: cfg.store }), say, lifecycle, new PackedIds(ids));
    return new RunSession(cfg, fleet, workers, space[1]);
  }

  /**
   * Starts the fleet. With `--reset-stats`, the stats are reset once every device is connected
   * (so the report covers what follows the ramp), and `onAutoReset` is told of the ramp: its
   * devices, seconds and the failures the reset drops by row and reason (`{ connect: {
   * econnreset: 3 } }`), which the report keeps apart as `ramp`.
   */
  async start(onAutoReset: (ramp: RampReport) => void = () => {}): Promise<void> {
    // The consumer first, so it hears the devices' first messages.
    if (this.verifier) {
      try {
        await this.verifier.start();
      } catch (err) {
        this.verifier.close();
        throw new LoadError(`--verify: the verifying consumer could not subscribe: ${messageOf(err)} (its certificate, and the broker's ACL for +/attrs)`, EXIT.BAD_INPUT);
      }
    }
    if (this.subscribers) {
      try {
        await this.subscribers.start();
      } catch (err) {
        this.subscribers.close();
        this.verifier?.close();
        throw new LoadError(`--subscribers: could not subscribe to ${this.cfg.subscribers!.filter}: ${messageOf(err)} (the consumer's certificate, and the broker's ACL)`, EXIT.BAD_INPUT);
      }
    }
    await this.fleet.start();
    this.sampler = setInterval(() => this.sample(), SAMPLE_MS);
    if (this.cfg.resetStats) {
      this.resetWatch = setInterval(() => {
        const s = this.fleet.snapshot();
        if (s.connected < s.target) return;
        this.stopResetWatch();
        const ramp = { devices: s.target, seconds: Math.round((Date.now() - this.started.getTime()) / 100) / 10, failures: s.stats.failureReasons() };
        this.ramp = ramp;
        this.resetStats();
        onAutoReset(ramp);
      }, RESET_CHECK_MS);
    }
  }

  private stopResetWatch(): void {
    if (this.resetWatch) clearInterval(this.resetWatch);
    this.resetWatch = null;
  }

  private sample(): void {
    const s = this.fleet.snapshot();
    this.timeline.sample(s.stats, s.target, s.connected);
  }

  setUsers(n: number): void {
    this.fleet.setUsers(n);
    this.users = n;
    // With a total rate as the knob, the devices there are share it.
    if (typeof this.msgRate === "number") this.setMsgRate(this.msgRate);
  }

  setRate(r: number): void {
    this.fleet.setRate(r);
  }

  /** What the consumer in this process was delivered so far: the plain subscribers, or the verifying one (null with neither). */
  subscriberCounts(): { messages: number; bytes: number; latency: Latency } | null {
    const v = this.subscribers ?? this.verifier;
    return v ? { messages: v.messages, bytes: v.bytes, latency: v.latency } : null;
  }

  /** Devices asked for now. */
  get usersNow(): number {
    return this.users;
  }

  /** The total publish rate when it is the knob. */
  get msgRateNow(): number | "max" | undefined {
    return this.msgRate;
  }

  /** A total publish rate from now on: every device publishes every users/r seconds (max: as fast as its window allows). Returns the interval (ms). */
  setMsgRate(r: number | "max"): number {
    this.msgRate = r;
    if (r === "max") {
      this.fleet.setPublishing({ intervalMs: [TICK_MS, TICK_MS], max: true });
      return TICK_MS;
    }
    const each = (Math.max(1, this.users) * 1000) / r;
    this.fleet.setPublishing({ intervalMs: [each, each], max: false });
    return each;
  }

  /** Pauses or resumes publishing; devices stay connected. */
  setPublish(on: boolean): void {
    this.fleet.setPublishing({ publish: on });
  }

  /** Forgets the stats so far (Locust's reset): the report covers what follows. */
  resetStats(): void {
    const s = this.fleet.snapshot();
    this.fleet.resetStats();
    this.statsFrom = new Date();
    this.cpuFrom = this.cpu(s);
    this.timeline.reset();
    this.verifier?.tracker.resetCounts();
    this.subscribers?.resetMessages();
  }

  /** CPU of this process and its workers, so the report's CPU covers the same window as its stats. */
  private cpu(s: FleetSnapshot): number {
    const own = process.cpuUsage(this.cpu0);
    return own.user + own.system + (this.supervised ? s.workers.reduce((a, w) => a + w.cpu_us, 0) : 0);
  }

  /** The report as of now (live), or the final one once stopped. */
  report(): Report {
    return this.final ?? this.build(this.fleet.snapshot(), false);
  }

  /** Cuts a stop in progress short (a second Ctrl-C): the report is still written, without waiting for acks. */
  hurry(): void {
    this.fleet.hurry?.();
  }

  /** Stops every device (once; later calls wait for the same stop) and returns the final report. */
  stop(interrupted = false): Promise<Report> {
    this.stopping ??= (async () => {
      if (this.sampler) clearInterval(this.sampler);
      this.sampler = null;
      this.stopResetWatch();
      if (this.verifier?.commandsSent) await this.verifier.settleCommands(() => this.fleet.snapshot().stats.rows.recv_message.count);
      const after = await this.fleet.stop();
      if (this.verifier) await this.verifier.settle(after.stats.sent, this.cfg.verify!.waitMs);
      if (this.subscribers) {
        // Each subscriber gets every message unless they share one subscription.
        const sub = this.cfg.subscribers!;
        const copies = sub.filter.startsWith("$share/") ? 1 : sub.connections;
        await this.subscribers.settleMessages(after.stats.sent * copies, sub.waitMs);
      }
      this.timeline.sample(after.stats, after.target, after.connected);
      const report = this.build(after, interrupted);
      // The verdict travels with the report, for runs started from the CLI and the API alike.
      if (this.cfg.thresholds.length) {
        const broken = checkThresholds(report, this.cfg.thresholds);
        const held = this.cfg.thresholds.map((t) => t.expr).filter((e) => !broken.some((b) => b.expr === e));
        report.thresholds = { passed: broken.length === 0, held, broken };
      }
      this.final = report;
      return this.final;
    })();
    return this.stopping;
  }

  /** The integrity block, from this process's verifier or, federated, the machines' (summed by the controller); none without --verify. */
  integrity(s: FleetSnapshot): Integrity | undefined {
    const totals = this.verifier?.totals() ?? s.verified;
    return totals ? integrityOf(s.stats, totals) : undefined;
  }

  private build(s: FleetSnapshot, interrupted: boolean): Report {
    const supervised = this.supervised;
    const own = process.cpuUsage(this.cpu0);
    const machines = s.machines?.map(({ id, host, pid, lost, users, ranges, connected, processes, cpu_us, rss, dropped, rejected }) => ({
      id, host, pid, lost, users, ranges, connected, processes, cpu_us, rss, dropped: dropped ?? 0, ...(rejected ? { rejected } : {}),
    }));
    const report = buildReport({
      config: { ...this.cfg.echo, workers: this.federated ? "machines" : this.workers },
      started: this.statsFrom,
      ended: new Date(),
      interrupted,
      users: { target: s.target, active: s.active, connected: s.connected },
      stats: s.stats,
      inflight: s.inflight,
      cpuMicros: this.cpu(s) - this.cpuFrom,
      rssBytes: process.memoryUsage().rss + (supervised ? s.workers.reduce((a, w) => a + w.rss, 0) : 0),
      machines,
      ...(s.dropped ? { dropped: s.dropped as Record<string, number> } : {}),
      workers: supervised
        ? {
            processes: this.federated ? s.workers.length : this.workers,
            supervisor_cpu_percent: Math.round(((own.user + own.system) / 1e4 / Math.max(1e-3, (Date.now() - this.started.getTime()) / 1000)) * 100) / 100,
            restarts: s.restarts,
            list: s.workers.map(({ slot, pid, restarts, connected, rss, cpu_us }) => ({ slot, pid, restarts, connected, rss, cpu_us })),
          }
        : undefined,
    });
    const integrity = this.integrity(s);
    const peak = Math.max(0, ...this.timeline.points.map((p) => p.connect_per_s ?? 0));
    if (this.timeline.points.length) report.throughput.peak_connects_per_s = peak;
    if (this.ramp) report.ramp = this.ramp;
    // What came out of the broker, beside what went in, over the report's own window: rows
    // deliver and e2e, the delivered rate, and the subscribers' block.
    const out = (this.subscribers ?? this.verifier)?.subscriberTotals();
    const seconds = (Date.parse(report.ended) - Date.parse(report.started)) / 1000;
    if (out) {
      const delivery = deliveryOf(out, seconds);
      Object.assign(report.stats, delivery.rows);
      Object.assign(report.throughput, delivery.throughput);
    }
    const sub = this.cfg.subscribers;
    const subscribers = sub && this.subscribers && out ? subscribersOf(s.stats, { connections: sub.connections, filter: sub.filter, qos: sub.qos }, out, seconds) : undefined;
    return { ...report, ...(integrity ? { integrity } : {}), ...(subscribers ? { subscribers } : {}), timeline: this.timeline.points };
  }
}

/**
 * Before any connection: the identities the run will use (a sample of a large set) have keys
 * that match their certificates, certificates that chain to the devices' CA (unless
 * --insecure) and a CN. Every problem is listed (ConfigError, exit 2).
 */
async function preflight(cfg: RunConfig, base: IdentityBase, fromStore: boolean, say: (line: string) => void): Promise<void> {
  const count = Math.min(cfg.swarm.users, base.count - cfg.firstDevice);
  const { indices, sampled } = sampleIndices(cfg.firstDevice, count);
  await base.prefetch?.(indices);
  // The devices' CA: the directory's ca.crt (the broker's may be another, given with --broker-ca), or the store's.
  const dirCa = fromStore ? null : join(cfg.certDir, "ca.crt");
  const deviceCa = dirCa && existsSync(dirCa) ? readFileSync(dirCa, "utf8") : (cfg.swarm.caPem ?? null);
  const { problems, notes } = checkIdentities(base, indices, cfg.swarm.insecure ? null : deviceCa, cfg.swarm.tenant);
  for (const n of notes) say(`note: ${n}`);
  if (!problems.length) return;
  const shown = problems.slice(0, 20);
  if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more`);
  if (sampled) shown.push(`(checked ${indices.length} of ${count} identities: the first, the last and ${indices.length - 2} at random)`);
  throw new ConfigError(shown);
}
