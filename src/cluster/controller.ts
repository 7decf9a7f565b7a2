/**
 * The controller of a federated run (`cicada run --redis URL`): machines running
 * `cicada worker` join over Redis; the controller hands each a share of the users and
 * disjoint identity ranges, restates it every second, adds up their running totals, and
 * re-splits when a machine joins or is lost.
 *
 * Identities are never used twice: a machine told to run fewer devices frees its tail
 * ranges only once it reports having applied that; a lost machine's ranges are held back
 * until its lease has lapsed (the grace period: it then drops its devices by itself, even if
 * it is only cut off or frozen rather than dead) and the broker has expired its sessions
 * (1.5 keepalives), so a new owner never meets the old connection.
 *
 * Machine states are trusted only once authentic (seal.ts, with a cluster key), well-formed
 * (wire.ts) and newer than the last one from the same agent; anything else is dropped and counted.
 */
import { hostname } from "node:os";
import type Redis from "ioredis";
import { DEFAULT_DRAIN_MS, type Publishing, type SwarmConfig, withPublishing } from "../engine/config.ts";
import { addVerified } from "../engine/verifier.ts";
import { addEncoded } from "../metrics/snapshot.ts";
import { StatsInbox } from "./stats-ledger.ts";
import { Stats } from "../metrics/stats.ts";
import { LoadError } from "../errors.ts";
import { type Range, total } from "./ranges.ts";
import { type Assignment, BEAT_MS, type Beat, CTL, LOST_MS, type MachineState, UP } from "./redis-protocol.ts";
import { append, cut, release, take } from "./ranges.ts";
import { openRedis, type RedisSettings } from "../store/connection.ts";
import { Drops, type Seal } from "./seal.ts";
import { parseState } from "./wire.ts";
import { split, type Fleet, type FleetSnapshot, type MachineInfo } from "./fleet.ts";

export interface ControllerOptions {
  redis: RedisSettings;
  swarm: SwarmConfig;
  synthetic: boolean;
  /** The identities the fleet may use: [first index, count]. */
  space: Range;
  /** Digest of the controller's certificate directory ids; machines must match it (unless synthetic). */
  digest: string;
  graceMs: number;
  /** Machines to wait for before the ramp starts, and for how long. */
  expect: number;
  waitMs: number;
  /** Signs beats and checks machine states (a cluster key, or none on loopback). */
  seal: Seal;
  /** --verify: machines verify their own devices. */
  verify?: { connections: number; actuateRate: number; waitMs: number };
}

interface Machine {
  id: string;
  order: number;
  lastSeen: number;
  lost: boolean;
  /** Why it gets no devices (a different certificate directory). */
  rejected?: string;
  a: Assignment;
  /** Tail ranges given up, free once the machine reports version `v` applied. */
  pending: { ranges: Range[]; v: number }[];
  state: MachineState | null;
  inbox: StatsInbox;
  since: number;
  seq: number;
}

export class Controller implements Fleet {
  readonly started = Date.now();
  readonly run = `${hostname()}-${process.pid}-${this.started.toString(36)}`;
  private beatSeq = 0;
  /** The swarm as machines get it: the plan only; each machine connects from its own addresses. */
  private wireSwarm: SwarmConfig;
  private readonly drops: Drops;
  private pub: Redis | null = null;
  private sub: Redis | null = null;
  private readonly machines = new Map<string, Machine>();
  private free: Range[];
  private quarantine: { machine: string; ranges: Range[]; until: number }[] = [];
  private users: number;
  private rate: number;
  private epoch = 0;
  private stopping = false;
  /** Until --expect-machines have joined, no devices are handed out: the ramp starts over all of them, not on the first to join. */
  private waiting = true;
  private order = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  /** When the controller's own link last came up: no machine is judged lost sooner than LOST_MS after. */
  private linkSince = 0;
  /** Everything counted, kept up to date by adding what each machine's new totals add to its last. */
  private merged = new Stats();

  constructor(
    private readonly o: ControllerOptions,
    private readonly say: (line: string) => void = () => {},
  ) {
    this.wireSwarm = { ...o.swarm, sources: [] };
    this.drops = new Drops("machine state", say);
    this.free = [[o.space[0], o.space[1]]];
    this.users = Math.min(o.swarm.users, o.space[1]);
    this.rate = o.swarm.rate;
  }

  async start(): Promise<void> {
    this.pub = await openRedis(this.o.redis, "cicada-controller", this.say);
    this.sub = await openRedis(this.o.redis, "cicada-controller-sub", this.say);
    this.linkSince = performance.now();
    this.sub.on("ready", () => (this.linkSince = performance.now()));
    this.sub.on("message", (_channel: string, text: string) => this.onState(text));
    await this.sub.subscribe(UP);
    this.timer = setInterval(() => this.tick(), BEAT_MS);
    this.tick();
    const deadline = performance.now() + this.o.waitMs;
    let said = -1;
    while (this.live().length < this.o.expect) {
      if (performance.now() > deadline) {
        await this.close();
        throw new LoadError(`only ${this.live().length} of ${this.o.expect} machines joined within ${this.o.waitMs / 1000} s (start \`cicada worker --redis ...\` on each)`);
      }
      if (said !== this.live().length) this.say(`waiting for machines: ${(said = this.live().length)}/${this.o.expect} joined`);
      await Bun.sleep(200);
    }
    this.waiting = false;
    this.tick();
  }

  setUsers(n: number): void {
    this.users = Math.min(n, this.o.space[1]);
    this.tick();
  }

  setRate(r: number): void {
    this.rate = r;
    this.tick();
  }

  /** Every beat carries the swarm's publishing settings: machines apply a change when they see it. */
  setPublishing(p: Partial<Publishing>): void {
    this.wireSwarm = withPublishing(this.wireSwarm, p);
    this.tick();
  }

  resetStats(): void {
    this.epoch++;
    for (const m of this.machines.values()) m.inbox.reset();
    this.merged = new Stats();
    this.tick();
  }

  snapshot(): FleetSnapshot {
    let target = 0, active = 0, connected = 0, inflight = 0, restarts = 0;
    const machines: MachineInfo[] = [];
    for (const m of this.machines.values()) {
      const s = m.state;
      if (!m.lost) target += m.a.users;
      if (s && !m.lost) {
        active += s.active;
        connected += s.connected;
        inflight += s.workers.reduce((a, w) => a + w.inflight, 0);
      }
      restarts += s?.workers.reduce((a, w) => a + w.restarts, 0) ?? 0;
      machines.push({
        id: m.id,
        host: s?.host ?? "",
        pid: s?.pid ?? 0,
        lost: m.lost,
        users: m.a.users,
        ranges: m.a.ranges,
        connected: s?.connected ?? 0,
        processes: s?.workers.length ?? 0,
        cpu_us: (s?.cpu_us ?? 0) + (s?.workers.reduce((a, w) => a + w.cpu_us, 0) ?? 0),
        rss: (s?.rss ?? 0) + (s?.workers.reduce((a, w) => a + w.rss, 0) ?? 0),
        dropped: s?.dropped ?? 0,
        ...(m.rejected ? { rejected: m.rejected } : {}),
      });
    }
    const workers = [...this.machines.values()].flatMap((m) => m.state?.workers.map((w) => ({ ...w, machine: m.id })) ?? []);
    // Each machine's consumer counts its own devices, as running totals: the last of each, added up.
    const verifiedOf = [...this.machines.values()].flatMap((m) => (m.state?.verified ? [m.state.verified] : []));
    const verified = this.o.verify ? verifiedOf.reduce(addVerified, { delivered: 0, duplicated: 0, reordered: 0, commands_sent: 0, latency: [] }) : undefined;
    return { target, active, connected, inflight, stats: this.merged, workers, restarts, machines, dropped: { ...this.drops.byReason }, ...(verified ? { verified } : {}) };
  }

  /** Tells every machine to stop and waits for their final totals (machines lost meanwhile are not waited for). */
  async stop(graceMs = 20_000): Promise<FleetSnapshot> {
    // Machines first wait up to the drain time for outstanding acks.
    const timeoutMs = graceMs + (this.o.swarm.drainMs ?? DEFAULT_DRAIN_MS);
    const before = this.snapshot();
    this.stopping = true;
    this.tick();
    const deadline = performance.now() + timeoutMs;
    const waiting = () => [...this.machines.values()].filter((m) => !m.lost && !m.rejected && m.state?.run === this.run && (m.state.running || m.state.pending > 0));
    while (waiting().length && performance.now() < deadline) await Bun.sleep(100);
    for (const m of waiting()) this.say(`machine ${m.id} sent no final stats within ${timeoutMs / 1000} s`);
    // Final totals arrived: the last beats tell machines the run is over.
    this.tick();
    await this.close();
    return { ...this.snapshot(), target: before.target, active: before.active, connected: before.connected };
  }

  private async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sub?.disconnect();
    await this.pub?.quit().catch(() => this.pub?.disconnect());
  }

  private live(): Machine[] {
    return [...this.machines.values()].filter((m) => !m.lost && !m.rejected).sort((a, b) => a.order - b.order);
  }

  private onState(text: string): void {
    const opened = this.o.seal.open(UP, text);
    if (!opened.ok) return this.drops.count(opened.reason);
    const parsed = parseState(opened.value);
    if (!parsed) return this.drops.count("invalid");
    const s = parsed.state;
    if (s.run !== null && s.run !== this.run) return; // busy with another controller's run
    let m = this.machines.get(s.machine);
    if (!m) {
      if (s.running || this.stopping) return; // still busy with an earlier run, or too late
      m = { id: s.machine, order: this.order++, lastSeen: 0, lost: false, a: { v: 1, fence: 1, ranges: [], users: 0, rate: 0 }, pending: [], state: null, inbox: new StatsInbox(), since: s.since, seq: -1 };
      if (!this.o.synthetic && s.digest !== this.o.digest) {
        m.rejected = `its certificate directory differs from the controller's (${s.ids} ids, digest ${s.digest} vs ${this.o.digest}): give every machine the same directory`;
        this.say(`machine ${s.machine} (${s.host}) not used: ${m.rejected}`);
      } else this.say(`machine ${s.machine} (${s.host}, pid ${s.pid}) joined`);
      this.machines.set(s.machine, m);
    }
    // Redis delivers one publisher's messages in order: an older agent or an old step is a replay.
    if (s.since < m.since) return this.drops.count("replayed");
    if (s.since > m.since) {
      // A (re)started agent under this name: its totals count from zero again; what it counted before stays counted.
      m.since = s.since;
      m.seq = -1;
      m.inbox.reset();
    }
    if (s.seq <= m.seq) return this.drops.count("replayed");
    m.seq = s.seq;
    m.lastSeen = performance.now();
    m.state = s;
    if (s.error) this.say(`machine ${m.id}: ${s.error}`);
    if (s.run === this.run && s.epoch === this.epoch && s.stats && s.stats.to > m.inbox.applied) {
      const add = m.inbox.accept({ from: s.stats.from, to: s.stats.to, stats: parsed.stats! });
      if (add) addEncoded(this.merged, add);
    }
    if (!m.lost && s.fenced >= m.a.fence && !s.running) {
      // It dropped its devices when its lease lapsed, without being declared lost. Cut off from the
      // network, it could not tell the broker, which keeps their sessions until 1.5 keepalives after
      // their last packet: its identities wait that out, then go back to the pool (and most likely to it).
      const holdMs = this.brokerExpiryMs();
      this.quarantine.push({ machine: m.id, ranges: [...m.a.ranges, ...m.pending.flatMap((p) => p.ranges)], until: performance.now() + holdMs });
      m.a = { v: m.a.v + 1, fence: m.a.fence + 1, ranges: [], users: 0, rate: 0 };
      m.pending = [];
      this.say(`machine ${m.id} dropped its devices (lease lapsed); its identities are reused in ${Math.round(holdMs / 1000)} s, once the broker has expired their sessions`);
    }
    if (m.lost && !s.running) {
      // Back, and its devices are stopped: it can take a share again. Its held identities stay
      // quarantined until the broker has expired their sessions (reuseDelayMs).
      m.lost = false;
      m.order = this.order++;
      m.a = { v: m.a.v + 1, fence: m.a.fence + 1, ranges: [], users: 0, rate: 0 };
      this.say(`machine ${m.id} is back`);
    }
  }

  /** Reconciles assignments with users, rate and the machines seen, then publishes the beat. */
  private tick(): void {
    const now = performance.now();
    const linkUp = this.sub?.status === "ready" && this.pub?.status === "ready";
    if (linkUp && now - this.linkSince > LOST_MS) {
      for (const m of this.machines.values()) {
        if (m.lost || m.rejected || now - m.lastSeen <= LOST_MS) continue;
        m.lost = true;
        const held = [...m.a.ranges, ...m.pending.flatMap((p) => p.ranges)];
        const holdMs = this.reuseDelayMs();
        this.quarantine.push({ machine: m.id, ranges: held, until: now + holdMs });
        this.say(
          `machine ${m.id} lost (silent for ${Math.round((now - m.lastSeen) / 1000)} s); its ${total(held)} identities are reused in ${Math.round(holdMs / 1000)} s, once its lease has lapsed and the broker has expired its sessions`,
        );
        m.a = { v: m.a.v + 1, fence: m.a.fence, ranges: [], users: 0, rate: 0 };
        m.pending = [];
      }
    }
    for (const q of this.quarantine.filter((q) => q.until <= now)) this.free = release(this.free, q.ranges);
    this.quarantine = this.quarantine.filter((q) => q.until > now);
    for (const m of this.machines.values()) {
      const done = m.pending.filter((p) => m.state && m.state.v >= p.v && m.state.used <= total(m.a.ranges));
      for (const p of done) this.free = release(this.free, p.ranges);
      m.pending = m.pending.filter((p) => !done.includes(p));
    }
    if (!this.stopping && !this.waiting) this.allocate();
    this.publish();
  }

  /**
   * How long a lost machine's identities are held back, from when it is declared lost: its
   * lease (the grace) must have lapsed, so it has dropped its devices, and the broker must have
   * expired their sessions (1.5 keepalives after their last packet, §3.1.2.10), so no new owner
   * takes over a connection that is still open; LOST_MS more covers the time it was silent
   * before being declared lost, and clock rates.
   */
  reuseDelayMs(): number {
    return Math.max(this.o.graceMs, 1.5 * this.o.swarm.keepaliveS * 1000) + LOST_MS;
  }

  /** How long after now every session of devices dropped by now has expired at the broker (1.5 keepalives, §3.1.2.10), and two beats more. */
  brokerExpiryMs(): number {
    return 1.5 * this.o.swarm.keepaliveS * 1000 + 2 * BEAT_MS;
  }

  private allocate(): void {
    const live = this.live();
    const shares = split(this.users, live.length);
    // Shrink first, so what others need may come from the freed tails (once released).
    live.forEach((m, i) => {
      const held = total(m.a.ranges);
      if (shares[i]! < held) {
        const { kept, freed } = cut(m.a.ranges, shares[i]!);
        m.a = { ...m.a, v: m.a.v + 1, ranges: kept };
        m.pending.push({ ranges: freed, v: m.a.v });
      }
    });
    live.forEach((m, i) => {
      const need = shares[i]! - total(m.a.ranges);
      if (need > 0 && this.free.length) {
        const { taken, left } = take(this.free, need);
        this.free = left;
        if (taken.length) m.a = { ...m.a, v: m.a.v + 1, ranges: append(m.a.ranges, taken) };
      }
      const users = total(m.a.ranges);
      const rate = (this.rate * users) / Math.max(1, this.users);
      if (users !== m.a.users || Math.abs(rate - m.a.rate) > 1e-9) m.a = { ...m.a, v: m.a.v + 1, users, rate };
    });
  }

  private publish(): void {
    const assign: Record<string, Assignment> = {};
    const acks: Record<string, number> = {};
    for (const m of this.machines.values()) {
      if (!m.lost && !m.rejected) assign[m.id] = m.a;
      acks[m.id] = m.inbox.applied;
    }
    const beat: Beat = {
      t: "beat",
      run: this.run,
      started: this.started,
      seq: ++this.beatSeq,
      at: Date.now(),
      epoch: this.epoch,
      grace_ms: this.o.graceMs,
      stop: this.stopping,
      swarm: this.wireSwarm,
      synthetic: this.o.synthetic,
      ...(this.o.verify ? { verify: this.o.verify } : {}),
      assign,
      acks,
    };
    // While Redis is down this fails at once; the next beat restates everything.
    this.pub?.publish(CTL, this.o.seal.wrap(CTL, beat)).catch(() => {});
  }
}
