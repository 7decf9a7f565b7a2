/**
 * The supervisor: runs a fleet as several worker processes of this binary on one machine,
 * splits users and spawn rate across them, and adds up the stats deltas they send every
 * second (counters add, histograms merge exactly). A worker that dies, or goes silent for
 * WATCHDOG_MS without running, is counted, replaced, and its devices resume in the new process.
 */
import type { Subprocess } from "bun";
import type { StoreSettings } from "../store/redis.ts";
import { Stats } from "../metrics/stats.ts";
import { addEncoded } from "../metrics/snapshot.ts";
import { DEFAULT_DRAIN_MS, type Publishing, type SwarmConfig, withPublishing } from "../engine/config.ts";
import { leaseClock } from "../engine/scheduler.ts";
import type { IdList, Range } from "./ranges.ts";
import { namesFor, type Names } from "./identities.ts";
import type { LifecycleHooks } from "../lifecycle/types.ts";
import type { FromWorker, ToWorker, WorkerSpec, WorkerStatus } from "./ipc-protocol.ts";
import { split, type Fleet, type FleetSnapshot } from "./fleet.ts";
import { selfArgv } from "../sys/self.ts";
import { procStat, type ProcStat } from "../sys/cpu.ts";

/** A worker silent this long, and not running, is hung (or stopped): it is killed and replaced. */
export const WATCHDOG_MS = 5000;
/**
 * A silent worker that is still running is busy, not hung: a saturated machine (its timers run
 * late), one short of memory (its threads wait in the kernel while pages are reclaimed) or a long
 * synchronous task. Killing it would drop its devices onto the brokers at once and make the
 * overload a storm, so it gets this long before it is killed all the same.
 */
export const BUSY_MS = 60_000;

/**
 * Whether a silent process is still running: it used CPU within the watchdog's window (CPU
 * times, oldest first), or is on a core or waiting for one (R), or waits inside the kernel (D:
 * the disk, or memory being reclaimed, which on a machine short of memory can take seconds and
 * no CPU time of its own). Stopped (T), sleeping with no CPU for the whole window, or gone: not running.
 */
export function running(now: Pick<ProcStat, "state"> | null, window: (number | null)[]): boolean {
  if (!now || now.state === "T" || now.state === "t" || now.state === "Z") return false;
  if (now.state === "R" || now.state === "D") return true;
  const known = window.filter((t): t is number => t !== null);
  return known.length >= 2 && known[known.length - 1]! > known[0]!;
}

/** How often the watchdog looks at every worker. */
const CHECK_MS = 1000;
/** A new worker may take this long to send its first message: start-up on a loaded machine is slow (many processes loading at once). */
export const STARTUP_MS = 30_000;

export interface FleetPlan {
  certDir: string;
  synthetic: boolean;
  /** The identities the fleet may use (indices into the directory's sorted ids). */
  ranges: Range[];
  workers: number;
  swarm: SwarmConfig;
  store?: StoreSettings;
}

/** One spec per worker: worker k takes positions k, k+W, ... of the fleet's identities; users and rate split evenly. */
export function planWorkers(plan: FleetPlan): WorkerSpec[] {
  const users = split(plan.swarm.users, plan.workers);
  return users.map((u, slot) => ({
    slot,
    stride: plan.workers,
    certDir: plan.certDir,
    ranges: plan.ranges,
    synthetic: plan.synthetic,
    ...(plan.store ? { store: plan.store } : {}),
    swarm: { ...plan.swarm, users: u, rate: (plan.swarm.rate * u) / Math.max(1, plan.swarm.users), ...(plan.swarm.churn ? { churn: (plan.swarm.churn * u) / Math.max(1, plan.swarm.users) } : {}) },
  }));
}

interface Worker {
  spec: WorkerSpec;
  proc: Subprocess | null;
  lastSeen: number;
  lastSeq: number;
  status: WorkerStatus;
  restarts: number;
  stopped: boolean;
  exited: Promise<void>;
  /** Its CPU time at the watchdog's checks over the last WATCHDOG_MS (clock ticks, oldest first; null: unknown), and whether it was silent at the last. */
  ticks: (number | null)[];
  silent: boolean;
  /** The watchdog killed it; its exit is awaited. */
  killing: boolean;
  /** Its first positions whose ids it was sent (when the supervisor names them). */
  named: number;
}

const IDLE: WorkerStatus = { v: 0, target: 0, active: 0, connected: 0, inflight: 0, rss: 0, cpu_us: 0, fds: 0, fd_limit: 0 };

export class Supervisor implements Fleet {
  stats = new Stats();
  private readonly workers: Worker[];
  private stopping = false;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private restarts = 0;
  private users: number;
  private rate: number;
  /** Settings version: bumped by every change sent to the workers, echoed back in their status. */
  private v = 1;
  /** Ms since the epoch after which the devices must be gone (a machine's lease); Infinity without one. */
  private leaseUntil = Infinity;

  /**
   * @param lifecycle answers the workers' renew/revoke requests (the machine's caps and signer)
   * @param ids the sorted ids the ranges index, as the caller listed them (kept for the run:
   *   pack a long list, `PackedIds`): each worker is sent the names of its own positions as its
   *   users grow, and lists nothing (null: synthetic ids, or workers list them)
   */
  constructor(
    specs: WorkerSpec[],
    private readonly onEvent: (line: string) => void = () => {},
    private readonly lifecycle: LifecycleHooks | null = null,
    private readonly ids: IdList | null = null,
  ) {
    this.workers = specs.map((spec) => ({ spec, proc: null, lastSeen: 0, lastSeq: 0, status: { ...IDLE }, restarts: 0, stopped: false, exited: Promise.resolve(), ticks: [], silent: false, killing: false, named: 0 }));
    this.users = specs.reduce((a, s) => a + s.swarm.users, 0);
    this.rate = specs.reduce((a, s) => a + s.swarm.rate, 0);
  }

  start(): void {
    for (const w of this.workers) this.spawn(w);
    this.watchdog = setInterval(() => this.check(), CHECK_MS);
  }

  setUsers(n: number): void {
    this.users = n;
    this.reshare();
  }

  setRate(r: number): void {
    this.rate = r;
    this.reshare();
  }

  setPublishing(p: Partial<Publishing>): void {
    const v = ++this.v;
    for (const w of this.workers) {
      // Kept in the spec too, so a worker that is replaced publishes as the others do.
      w.spec.swarm = withPublishing(w.spec.swarm, p);
      this.post(w, { t: "set", v, publishing: p });
    }
  }

  snapshot(): FleetSnapshot {
    let target = 0, active = 0, connected = 0, inflight = 0;
    for (const w of this.workers) {
      target += w.spec.swarm.users;
      active += w.status.active;
      connected += w.status.connected;
      inflight += w.status.inflight;
    }
    const workers = this.workers.map((w) => ({ ...w.status, slot: w.spec.slot, pid: w.proc?.pid ?? 0, restarts: w.restarts, alive: !!w.proc && w.proc.exitCode === null }));
    return { target, active, connected, inflight, stats: this.stats, workers, restarts: this.restarts };
  }

  resetStats(): void {
    // Deltas already sent are dropped; workers keep sending only what they count from now on.
    this.stats = new Stats();
  }

  /** Stops every worker; one that has not exited after the drain time plus `graceMs` is killed. */
  async stop(graceMs = 15_000): Promise<FleetSnapshot> {
    const timeoutMs = graceMs + (this.workers[0]?.spec.swarm.drainMs ?? DEFAULT_DRAIN_MS);
    this.stopping = true;
    if (this.watchdog) clearInterval(this.watchdog);
    for (const w of this.workers) this.post(w, { t: "stop" });
    const all = Promise.all(this.workers.map((w) => w.exited));
    const timer = setTimeout(() => {
      for (const w of this.workers) if (w.proc?.exitCode === null) w.proc.kill("SIGKILL");
    }, timeoutMs);
    await all;
    clearTimeout(timer);
    return this.snapshot();
  }

  /**
   * Sets the lease: past `until` (leaseClock, the same on every process of this machine) every worker drops
   * its devices and dials nothing more, and a worker that dies is not replaced — even if this
   * process was frozen and wakes with the message still queued.
   */
  lease(until: number): void {
    if (leaseClock() > this.leaseUntil) return; // lapsed: only a new fleet runs devices again
    this.leaseUntil = until;
    for (const w of this.workers) this.post(w, { t: "lease", until });
  }

  /** True once the lease has lapsed. */
  lapsed(): boolean {
    return leaseClock() > this.leaseUntil;
  }

  hurry(): void {
    for (const w of this.workers) this.post(w, { t: "hurry" });
  }

  /** Hands the fleet a new list of identity ranges (grown or shrunk at the end) and users to run from it. */
  assign(ranges: Range[], users: number, rate: number): void {
    for (const w of this.workers) w.spec.ranges = ranges;
    this.users = users;
    this.rate = rate;
    this.reshare(ranges);
  }

  /** True once every live worker has applied the latest settings. */
  settled(): boolean {
    return this.workers.every((w) => !w.proc || w.proc.exitCode !== null || w.status.v >= this.v);
  }

  /** How many leading positions of the ranges are in use: the ones after it can be handed over once settled. */
  used(): number {
    let n = 0;
    for (const w of this.workers) if (w.status.active > 0) n = Math.max(n, w.spec.slot + (w.status.active - 1) * w.spec.stride + 1);
    return n;
  }

  private reshare(ranges?: Range[]): void {
    const v = ++this.v;
    const users = split(this.users, this.workers.length);
    this.workers.forEach((w, i) => {
      const u = users[i]!;
      w.spec.swarm.users = u;
      w.spec.swarm.rate = (this.rate * u) / Math.max(1, this.users);
      this.post(w, { t: "set", v, users: u, rate: w.spec.swarm.rate, ...(ranges ? { ranges } : {}), ...this.named(w, !!ranges) });
    });
  }

  private post(w: Worker, m: ToWorker): void {
    try {
      if (w.proc && w.proc.exitCode === null) w.proc.send(m);
    } catch {
      // The channel closed under us: the exit handler deals with it.
    }
  }

  private spawn(w: Worker): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    w.exited = promise;
    w.lastSeen = performance.now();
    w.status = { ...IDLE };
    const proc = Bun.spawn(selfArgv(["__swarm-worker"]), {
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      ipc: (m: FromWorker) => this.onMessage(w, m),
      onExit: (_p, code, signal) => {
        resolve();
        this.onExit(w, code, signal);
      },
    });
    w.proc = proc;
    w.lastSeq = 0;
    w.ticks = [];
    w.killing = false;
    w.silent = false;
    proc.send({ t: "start", spec: { ...w.spec, ...this.named(w, true) }, v: this.v, ...(Number.isFinite(this.leaseUntil) ? { lease: this.leaseUntil } : {}) } satisfies ToWorker);
  }

  /**
   * The ids of a worker's positions it runs devices on (up to its users) that it was not sent yet,
   * when this supervisor has the listing; all of them again when `fresh` (a new process, new ranges).
   * Not the whole ranges: a run's ranges span every certificate, so that users can grow into them.
   */
  private named(w: Worker, fresh: boolean): { names?: Names } {
    if (!this.ids || w.spec.synthetic) return {};
    if (fresh) w.named = 0;
    const from = w.named;
    const to = w.spec.swarm.users;
    if (to <= from) return {};
    w.named = to;
    return { names: namesFor(this.ids, w.spec.ranges, w.spec.stride, w.spec.slot, from, to) };
  }

  private onMessage(w: Worker, m: FromWorker): void {
    if (m.t === "error") {
      this.onEvent(`worker ${w.spec.slot}: ${m.message}`);
      return;
    }
    if (m.t === "lifecycle") {
      const proc = w.proc;
      const answer = this.lifecycle ? this.lifecycle.request(m.kind, m.id, m.certPem) : Promise.resolve({ granted: false as const });
      // Answer the process that asked (a replacement numbers its requests afresh).
      void answer.then((a) => {
        if (w.proc === proc) this.post(w, { t: "lifecycle", req: m.req, answer: a });
      });
      return;
    }
    w.lastSeen = performance.now();
    w.lastSeq = m.seq;
    w.status = m.status;
    addEncoded(this.stats, m.delta);
    if (m.t === "stopped") w.stopped = true;
  }

  private onExit(w: Worker, code: number | null, signal: number | string | null): void {
    if (this.stopping || w.stopped) return;
    this.restarts++;
    w.restarts++;
    // What it held as last reported: its links and its unacknowledged publishes end here.
    for (let n = w.status.inflight; n > 0; n--) this.stats.rows.publish.fail("worker_lost");
    for (let n = w.status.connected; n > 0; n--) this.stats.rows.disconnect.fail("worker_lost");
    w.status = { ...IDLE };
    this.onEvent(`worker ${w.spec.slot} (pid ${w.proc?.pid}) exited (${signal ?? `code ${code}`}); restarting it`);
    w.proc = null;
    setTimeout(() => {
      if (this.stopping) return;
      if (this.lapsed()) return this.onEvent(`worker ${w.spec.slot} not restarted: the lease has lapsed`);
      this.spawn(w);
    }, 200);
  }

  /**
   * Every second: a worker that sent nothing for WATCHDOG_MS (STARTUP_MS before its first message)
   * is hung unless it is still running (running()); a busy one is waited for up to BUSY_MS. A hung
   * one is killed, and the exit handler replaces it.
   */
  private check(): void {
    const now = performance.now();
    for (const w of this.workers) {
      // A worker killed here is left alone while it exits (19,000 sockets take a while to close).
      if (!w.proc || w.proc.exitCode !== null || w.killing) continue;
      const stat = procStat(w.proc.pid);
      w.ticks.push(stat?.cpuTicks ?? null);
      if (w.ticks.length > WATCHDOG_MS / CHECK_MS + 1) w.ticks.shift();
      const ran = running(stat, w.ticks);
      const quiet = now - w.lastSeen;
      if (quiet <= (w.lastSeq ? WATCHDOG_MS : STARTUP_MS)) {
        if (w.silent) this.onEvent(`worker ${w.spec.slot} (pid ${w.proc.pid}) answered again after ${Math.round(quiet / 1000)} s`);
        w.silent = false;
        continue;
      }
      const s = Math.round(quiet / 1000);
      if (ran && quiet <= BUSY_MS) {
        if (!w.silent) this.onEvent(`worker ${w.spec.slot} (pid ${w.proc.pid}) silent for ${s} s but running (the machine is overloaded or short of memory, or a scenario blocks it): waiting up to ${BUSY_MS / 1000} s`);
        w.silent = true;
        continue;
      }
      this.onEvent(`worker ${w.spec.slot} (pid ${w.proc.pid}) silent for ${s} s${ran ? "" : " and not running"}; killing it`);
      w.silent = false;
      w.killing = true;
      w.proc.kill("SIGKILL");
    }
  }
}
