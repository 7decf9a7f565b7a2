/**
 * A machine of a federated run (`cicada worker --redis URL`): it joins whatever controller
 * beats on Redis, runs its assignment with its own supervisor and per-core worker
 * processes, and sends its state and running totals every second.
 *
 * It keeps its devices running through a Redis outage (its totals keep counting and the
 * next message after the outage carries them), and stops them cleanly when the controller's
 * plan no longer names it. Its devices run on a lease: every beat extends it by the grace
 * period, and once it lapses (the controller unheard, or this machine frozen) every worker
 * drops its devices and dials nothing more, whatever else happens first when it wakes; the
 * controller reuses the identities only after that (controller.ts).
 *
 * What the machine acts on comes from its own command line: its certificate directory, its
 * CA, hook and signer credentials. A beat is used only once authentic (seal.ts), well-formed
 * (wire.ts), from the newest controller, and newer than the last beat seen.
 *
 * Over 400 lines because joining, the lease, applying beats, the verifying consumer and the
 * state messages share the one agent's state; the state message is the next piece to cut out.
 */
import { availableParallelism, hostname } from "node:os";
import type Redis from "ioredis";
import { getFileLimit, raiseFileLimit } from "../../native/rlimit.ts";
import { checkCapacity, ephemeralPorts, FD_RESERVE } from "../engine/limits.ts";
import { encodeStats, packStats } from "../metrics/snapshot.ts";
import { StatsOutbox } from "./stats-ledger.ts";
import { Stats } from "../metrics/stats.ts";
import { listIdentities, PackedIds } from "./identities.ts";
import { lifecycleService, type LifecycleService } from "../lifecycle/service.ts";
import type { LifecycleLocal } from "../lifecycle/types.ts";
import { type Assignment, BEAT_MS, type Beat, CTL, DEFAULT_GRACE_MS, idsDigest, type MachineState, publishingKey, registryKey, UP } from "./redis-protocol.ts";
import { openRedis, type RedisSettings } from "../store/connection.ts";
import type { StoreSettings } from "../store/redis.ts";
import { redactUrl } from "../sys/redact.ts";
import { localScenario } from "../scenario/load.ts";
import { Drops, type Seal } from "./seal.ts";
import { parseBeat } from "./wire.ts";
import { dialsLike, Verifier, type VerifiedTotals } from "../engine/verifier.ts";
import { planWorkers, Supervisor } from "./supervisor.ts";
import { type FleetSnapshot, type WorkerInfo } from "./fleet.ts";
import { idsIn } from "./ranges.ts";

export interface MachineOptions {
  redis: RedisSettings;
  /** A certificate directory or a Redis store URL. */
  certDir: string;
  store?: StoreSettings;
  /** CA of the broker certificate; default: the controller's. */
  caPem?: string;
  sources: string[];
  workers: number | "auto";
  name?: string;
  /** Exit after one run instead of waiting for the next. */
  once: boolean;
  /** Checks beats and signs states (a cluster key, or none on loopback). */
  seal: Seal;
  /** This machine's CA directory, CRL hook and signer credentials, for a run that renews or revokes. */
  lifecycle: LifecycleLocal;
  /** This machine's verifying consumer identity (PEM), for runs with --verify over TLS. */
  verifyIdentity?: { cert: string; key: string };
  /** Scenario files this machine may run (--scenarios): a run's scenario must be one of them, by content. */
  scenariosDir?: string;
}

export class MachineAgent {
  readonly id: string;
  private pub!: Redis;
  private sub!: Redis;
  /** The sorted ids behind --certs, packed: a machine keeps them while it serves. */
  private ids = new PackedIds([]);
  private digest = "";
  private run: string | null = null;
  private epoch = 0;
  private sup: Supervisor | null = null;
  private stopped = false;
  private stopping = false;
  private totals = new Stats();
  private readonly outbox = new StatsOutbox();
  private lastWorkers: WorkerInfo[] = [];
  /** Assignment version handed to the supervisor, and the last one all its workers applied. */
  private appliedV = 0;
  private settledV = 0;
  private seq = 0;
  private lastBeat = 0;
  private graceMs = DEFAULT_GRACE_MS;
  private error: string | undefined;
  private latest: Beat | null = null;
  private busy = false;
  private timer: ReturnType<typeof setInterval> | null = null;
  private perProcess = Infinity;
  private readonly finished = Promise.withResolvers<number>();
  private readonly since = Date.now();
  /** The controller followed: its run, start time and last beat number. */
  private controller: { run: string; started: number; seq: number } | null = null;
  /** Set when the lease lapsed: the next pass of apply() drops the fleet before anything else. */
  private fencing: string | null = null;
  /** Fence of the assignment under which the fleet was running, and of the last one dropped by a lapsed lease. */
  private fence = 0;
  private fenced = 0;
  private readonly drops: Drops;
  /** This machine's verifying consumer (--verify), and the devices it counts: the ids of its own ranges. */
  private verifier: Verifier | null = null;
  private ownIds = new Set<string>();
  /** The consumer's totals once it closed (the run's last word). */
  private verified: VerifiedTotals | undefined;
  private verifyWaitMs = 5000;
  /** The publishing settings the fleet runs with (publishingKey of the beat's swarm). */
  private publishing = "";

  constructor(
    private readonly o: MachineOptions,
    private readonly say: (line: string) => void,
  ) {
    this.id = o.name ?? `${hostname()}-${process.pid}`;
    this.drops = new Drops("control message", say);
  }

  /** What this machine's own /metrics shows (cicada worker --metrics): its devices' stats and its fleet, if it runs one. */
  view(): { machine: string; stats: Stats; fleet: FleetSnapshot | null } {
    return { machine: this.id, stats: this.totals, fleet: this.sup?.snapshot() ?? null };
  }

  /** Runs until SIGINT/SIGTERM (or the end of one run with `once`); resolves with the exit code. */
  async serve(): Promise<number> {
    const listed = await listIdentities(this.o.certDir, this.o.store);
    this.digest = idsDigest(listed);
    this.ids = new PackedIds(listed);
    const raised = await raiseFileLimit();
    const limit = raised.ok ? raised : getFileLimit();
    if (limit.ok) this.perProcess = Math.max(1, limit.value.soft - FD_RESERVE);
    this.pub = await openRedis(this.o.redis, `cicada-machine-${this.id}`, this.say);
    this.sub = await openRedis(this.o.redis, `cicada-machine-${this.id}-sub`, this.say);
    this.sub.on("message", (_c: string, text: string) => this.onBeat(text));
    await this.sub.subscribe(CTL);
    this.say(`machine ${this.id} ready (${this.ids.length} identities in ${redactUrl(this.o.certDir)}); waiting for a controller`);
    this.timer = setInterval(() => this.everySecond(), BEAT_MS);
    this.everySecond();
    const onSignal = () => void this.quit(130);
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", () => void this.quit(0));
    return this.finished.promise;
  }

  private onBeat(text: string): void {
    const opened = this.o.seal.open(CTL, text);
    if (!opened.ok) return this.drops.count(opened.reason);
    const b = parseBeat(opened.value);
    if (!b) return this.drops.count("invalid");
    const c = this.controller;
    if (c) {
      // Within a run beats only move forward; another run is followed only if its controller is newer, or ours has gone quiet.
      const replay = b.run === c.run ? b.seq <= c.seq || b.epoch < this.epoch : b.started <= c.started && !this.quiet();
      if (replay) return this.drops.count("replayed");
    }
    // Checked before this beat counts: woken after the lease lapsed, the devices go first.
    this.fenceIfLapsed();
    this.controller = { run: b.run, started: b.started, seq: b.seq };
    this.lastBeat = performance.now();
    this.graceMs = b.grace_ms;
    if (b.run === this.run && b.epoch === this.epoch && b.acks[this.id] !== undefined) this.outbox.ack(b.acks[this.id]!);
    this.latest = b;
    void this.apply();
  }

  /** No beat for longer than the grace period. */
  private quiet(): boolean {
    return this.lastBeat > 0 && performance.now() - this.lastBeat > this.graceMs;
  }

  /** Marks the fleet for dropping when its lease has lapsed (the workers enforce it themselves too). */
  private fenceIfLapsed(): void {
    if (!this.sup || this.stopped || this.fencing || !this.quiet()) return;
    this.fencing = `no word from the controller for ${Math.round((performance.now() - this.lastBeat) / 1000)} s (grace ${this.graceMs / 1000} s): the lease lapsed, devices dropped without reconnecting`;
    void this.apply();
  }

  /** Applies the newest beat; beats that arrive meanwhile are folded into the next pass. A lapsed lease is dealt with first. */
  private async apply(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.fencing || this.latest) {
        if (this.fencing) {
          const why = this.fencing;
          await this.stopFleet(why);
          this.fenced = this.fence;
          // Idle afterwards, still counting for this run: if its controller is heard again, it takes a share again.
          this.sup = null;
          this.stopped = false;
          this.fencing = null;
          continue;
        }
        const b = this.latest!;
        this.latest = null;
        await this.reconcile(b);
      }
    } catch (err) {
      this.error = err instanceof Error ? err.message : String(err);
      this.say(this.error);
    } finally {
      this.busy = false;
    }
  }

  private async reconcile(b: Beat): Promise<void> {
    if (b.run !== this.run) {
      if (this.sup && !this.stopped) await this.stopFleet("a new controller took over");
      this.run = b.run;
      this.epoch = b.epoch;
      this.fence = 0;
      this.fenced = 0;
      this.verified = undefined;
      this.sup = null;
      this.stopped = false;
      this.totals = new Stats();
      this.outbox.reset();
      this.error = undefined;
    }
    if (b.epoch !== this.epoch) {
      this.epoch = b.epoch;
      this.verifier?.tracker.resetCounts();
      this.totals = new Stats();
      this.outbox.reset();
      if (this.sup) this.sup.stats = this.totals;
    }
    if (this.stopped) return;
    const mine = b.assign[this.id];
    if (b.stop) {
      if (this.sup) await this.stopFleet();
      else this.stopped = true;
      return;
    }
    if (!mine) {
      if (this.sup) {
        // Dropped from the plan (the controller lost us): stop, then ask in again.
        await this.stopFleet("the controller's plan no longer names this machine");
        this.sup = null;
        this.stopped = false;
      }
      return;
    }
    if (!this.sup) {
      // After a lapsed lease, only an assignment made since then (a newer fence) starts devices.
      if (mine.users > 0 && mine.fence > this.fenced) await this.startFleet(b, mine);
    } else if (mine.v !== this.appliedV) {
      this.sup.assign(mine.ranges, mine.users, mine.rate);
      this.appliedV = mine.v;
      this.ownIds = idsIn(this.ids, mine.ranges);
    }
    // Publishing changed live (the controller's API): the beat's swarm says so.
    const publishing = publishingKey(b.swarm);
    if (this.sup && publishing !== this.publishing) this.sup.setPublishing({ intervalMs: b.swarm.intervalMs, publish: b.swarm.publish !== false, max: b.swarm.max === true });
    this.publishing = publishing;
    this.sup?.lease(this.leaseEnd());
  }

  /** The device ids of `ranges` (indices into the sorted ids). */
  /** A consumer counting this machine's own devices (a topic's device id is what follows the last ':' of its CN, tenant:id). */
  private async startVerifier(b: Beat, swarm: Beat["swarm"]): Promise<void> {
    const v = b.verify!;
    if (swarm.tls && !this.o.verifyIdentity) throw new Error("--verify: this machine has no consumer identity: start cicada worker with --verify-cert and --verify-key");
    this.verified = undefined;
    this.verifyWaitMs = v.waitMs;
    this.verifier = new Verifier({
      ...dialsLike(swarm),
      ...(this.o.verifyIdentity ?? {}),
      connections: v.connections,
      actuateRate: v.actuateRate,
      own: (device) => this.ownIds.has(device.slice(device.lastIndexOf(":") + 1)),
      clientIdSuffix: `-${this.id}`,
    });
    try {
      await this.verifier.start();
    } catch (err) {
      this.verifier.close();
      this.verifier = null;
      throw new Error(`--verify: this machine's consumer could not subscribe: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async startFleet(b: Beat, a: Assignment): Promise<void> {
    const need = Math.max(...a.ranges.map(([f, c]) => f + c));
    if (!b.synthetic && need > this.ids.length) {
      throw new Error(`assignment needs identity ${need} but ${this.o.certDir} holds ${this.ids.length}`);
    }
    this.ownIds = idsIn(this.ids, a.ranges);
    const workers = this.o.workers === "auto" ? Math.max(availableParallelism(), Math.ceil(a.users / this.perProcess)) : this.o.workers;
    const churn = b.swarm.churn ? (b.swarm.churn * a.users) / Math.max(1, b.swarm.users) : 0;
    const swarm = { ...b.swarm, users: a.users, rate: a.rate, churn, sources: this.o.sources, machine: this.id, caPem: this.o.caPem ?? b.swarm.caPem };
    // Code never comes from Redis: the scenario the beat names runs only as this machine's own file with that content.
    if (b.swarm.scenario) swarm.scenario = { ...b.swarm.scenario, path: localScenario(b.swarm.scenario, this.o.scenariosDir) };
    const cap = checkCapacity({
      users: a.users,
      workers,
      destinations: new Set(swarm.targets.map((t) => `${t.host}:${t.port}`)).size,
      sources: swarm.sources.length,
      files: Number.isFinite(this.perProcess) ? { soft: this.perProcess + FD_RESERVE, hard: this.perProcess + FD_RESERVE } : null,
      ports: ephemeralPorts(),
    });
    for (const line of [...cap.warnings, ...cap.errors]) this.say(`warning: ${line}`);
    if (b.verify) await this.startVerifier(b, swarm);
    this.sup = new Supervisor(
      planWorkers({ certDir: this.o.certDir, synthetic: b.synthetic, ranges: a.ranges, workers, swarm, store: this.o.store }),
      (line) => this.say(line),
      this.lifecycleFor(b),
      this.ids,
    );
    this.sup.stats = this.totals;
    this.sup.lease(this.leaseEnd());
    this.sup.start();
    this.appliedV = a.v;
    this.fence = a.fence;
    this.say(`run ${b.run}: ${a.users} devices over ${workers} processes`);
  }

  /** When the lease ends (leaseClock): the grace period after the last beat. */
  private leaseEnd(): number {
    return performance.timeOrigin + this.lastBeat + this.graceMs;
  }

  /**
   * Renew/revoke on this machine: the run's plan from the controller, performed with this
   * machine's own CA directory, hook and signer credentials; the caps are claimed in Redis,
   * shared by every machine of the run.
   */
  private lifecycleFor(b: Beat): LifecycleService | null {
    const plan = b.swarm.lifecycle;
    if (!plan) return null;
    return lifecycleService({ ...plan, ...this.o.lifecycle }, b.swarm.tenant, (line) => this.say(line), { redis: this.pub, prefix: `cicada:cap:${b.run}:` });
  }

  private async stopFleet(why?: string): Promise<void> {
    if (!this.sup || this.stopping) return;
    this.stopping = true;
    if (why) this.say(`stopping devices: ${why}`);
    try {
      const v = this.verifier;
      if (v?.commandsSent) await v.settleCommands(() => this.totals.rows.recv_message.count);
      const snap = await this.sup.stop();
      if (v) {
        await v.settle(this.totals.sent, this.verifyWaitMs);
        this.verified = v.totals();
        this.verifier = null;
      }
      this.lastWorkers = snap.workers;
      this.stopped = true;
      this.sendState();
    } finally {
      this.stopping = false;
    }
  }

  private everySecond(): void {
    this.fenceIfLapsed();
    this.sendState();
    if (this.o.once && this.stopped && this.outbox.pending === 0 && this.latest === null && !this.busy) {
      // Stopped, and the controller has acknowledged every count: done.
      void this.quit(0);
    }
  }

  private sendState(): void {
    const sup = this.sup;
    const running = !!sup && !this.stopped;
    const snap = sup?.snapshot();
    if (sup?.settled()) this.settledV = this.appliedV;
    const self = process.cpuUsage();
    const span = this.run ? this.outbox.next(encodeStats(this.totals)) : null;
    const state: MachineState = {
      t: "state",
      machine: this.id,
      host: hostname(),
      pid: process.pid,
      since: this.since,
      at: Date.now(),
      run: this.run,
      seq: ++this.seq,
      epoch: this.epoch,
      v: this.settledV,
      used: running ? sup!.used() : 0,
      ids: this.ids.length,
      digest: this.digest,
      running,
      stopped: this.stopped,
      target: running ? snap!.target : 0,
      active: running ? snap!.active : 0,
      connected: running ? snap!.connected : 0,
      cpu_us: self.user + self.system,
      rss: process.memoryUsage().rss,
      workers: running ? snap!.workers : this.lastWorkers,
      stats: span ? { from: span.from, to: span.to, packed: packStats(span.stats) } : null,
      pending: this.outbox.pending,
      dropped: this.drops.total,
      fenced: this.fenced,
      ...(this.verifier || this.verified ? { verified: this.verifier?.totals() ?? this.verified! } : {}),
      ...(this.error ? { error: this.error } : {}),
    };
    const text = this.o.seal.wrap(UP, state);
    // While Redis is down this fails at once; what it carried rides on the next message that gets through.
    this.pub.publish(UP, text).then(
      (receivers) => span && this.outbox.delivered(receivers > 0),
      () => span && this.outbox.delivered(false),
    );
    const entry = { host: state.host, pid: state.pid, run: state.run, connected: state.connected, processes: state.workers.map((w) => w.pid) };
    this.pub.set(registryKey(this.id), JSON.stringify(entry), "PX", BEAT_MS * 5).catch(() => {});
  }

  private async quit(code: number): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.sup && !this.stopped) await this.stopFleet("interrupted");
    this.pub.del(registryKey(this.id)).catch(() => {});
    this.sub.disconnect();
    await this.pub.quit().catch(() => this.pub.disconnect());
    this.finished.resolve(code);
  }
}

