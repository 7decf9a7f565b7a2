// engine/ — the swarm: simulated devices in one process, their timers, connections, traffic and renewals.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The swarm: a population of simulated devices in one process. It ramps devices up at the
 * spawn rate, keeps each connected (mTLS, CONNECT, SUBSCRIBE), publishes on a jittered
 * schedule, answers the broker, and reconnects with backoff. All timers live in one wheel and
 * all sockets share one handler object. Start/setUsers/setRate/stop/snapshot are the
 * in-process API used by the fleets and tests.
 *
 * The parts: connections.ts (dialing, socket and MQTT events, reconnects), traffic.ts
 * (publish, acks, keepalive), renewal.ts (renew and revoke), ramp.ts, sharing state.ts.
 */
import type { LifecycleHooks } from "../lifecycle/types.ts";
import { Stats } from "../metrics/stats.ts";
import { Lifecycle, State } from "../mqtt/device.ts";
import type { ServerPins } from "../transport/pins.ts";
import { DEFAULT_DRAIN_MS, type IdentitySource, type Publishing, type SwarmConfig, withPublishing } from "./config.ts";
import { Connections } from "./connections.ts";
import { Ramp } from "./ramp.ts";
import { TICK_MS, TIMER_KINDS, Timer, Wheel, leaseClock, type Clock } from "./scheduler.ts";
import { SwarmState } from "./state.ts";
import { Traffic } from "./traffic.ts";
import type { LoadedScenario } from "../scenario/load.ts";

export interface SwarmSnapshot {
  target: number;
  rate: number;
  active: number;
  connected: number;
  /** QoS 1/2 publishes awaiting their ack now. */
  inflight: number;
  stats: Stats;
}

export class Swarm {
  private readonly st: SwarmState;
  private readonly links: Connections;
  private readonly traffic: Traffic;
  private readonly ramp: Ramp;
  /** Paces churn (--churn) as the ramp paces new devices. */
  private readonly churn: Ramp;
  private churnNext = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastTick = 0;
  private target: number;
  /** A stop in a hurry (a second Ctrl-C): no waiting for acks or for sockets to close. */
  private hurried = false;
  /**
   * When (leaseClock, shared with the machine agent) this swarm may no longer dial: a federated
   * machine's lease. Once it lapses the swarm is fenced for good.
   */
  private leaseUntil = Infinity;
  private fenced = false;

  /**
   * @param lifecycle who grants and performs renewals and revocations (required when
   *   `cfg.lifecycle` asks for them)
   * @param scenario what the devices do (--scenario); null: the built-in device
   */
  constructor(
    private readonly cfg: SwarmConfig,
    private readonly identities: IdentitySource,
    clock: Clock = () => performance.now(),
    lifecycle: LifecycleHooks | null = null,
    scenario: LoadedScenario | null = null,
  ) {
    this.target = Math.min(cfg.users, identities.count);
    const kinds = scenario ? TIMER_KINDS + 1 : TIMER_KINDS;
    const wheel = new Wheel(kinds, Math.max(16, this.target), (d, k, at) => this.fireGuarded(d, k, at), clock());
    this.st = new SwarmState(cfg, identities, clock, wheel, scenario !== null);
    this.traffic = new Traffic(this.st);
    this.links = new Connections(this.st, this.traffic, lifecycle, () => !this.leaseLapsed(), scenario);
    this.ramp = new Ramp(cfg.rate);
    this.churn = new Ramp(cfg.churn ?? 0);
  }

  /** Everything counted since the start, or since the last takeStats(). */
  get stats(): Stats {
    return this.st.stats;
  }

  /** Broker certificates verified so far, per target (tests and benchmarks read the totals). */
  get serverPins(): ServerPins {
    return this.links.serverPins;
  }

  // ---- in-process API -------------------------------------------------------------------

  start(): void {
    if (this.timer) return;
    this.lastTick = this.st.clock();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  setUsers(n: number): void {
    const st = this.st;
    this.target = this.fenced ? 0 : Math.max(0, Math.min(n, this.identities.count));
    st.wheel.grow(this.target);
    while (st.active > this.target) {
      const dev = st.devices[--st.active];
      if (dev) this.links.retire(dev); // a hole: that device never started
    }
  }

  setRate(r: number): void {
    this.ramp.rate = r;
  }

  /** Changes how devices publish (interval, pause/resume) while they run. */
  setPublishing(p: Partial<Publishing>): void {
    const st = this.st;
    st.publishing = withPublishing(st.publishing, p);
    if (this.links.scenario) this.links.scenario.rearm(st.clock());
    else this.traffic.rearm(st.clock());
  }

  /** Cuts a stop short: what is still in flight is counted unacked_at_stop at once, sockets are closed without waiting. */
  hurry(): void {
    this.hurried = true;
  }

  /** Extends the lease (see leaseUntil); a lapsed lease is never renewed. */
  setLease(until: number): void {
    if (!this.leaseLapsed()) this.leaseUntil = until;
  }

  /**
   * True once the lease has lapsed; the first time, every device leaves (DISCONNECT where the
   * link is still up) and none reconnects: the controller may have handed these identities to
   * another machine while this one was cut off or frozen.
   */
  private leaseLapsed(): boolean {
    if (this.fenced) return true;
    if (leaseClock() <= this.leaseUntil) return false;
    this.fenced = true;
    this.setUsers(0);
    return true;
  }

  /** Returns the stats counted so far and starts counting afresh (workers ship these deltas). */
  takeStats(): Stats {
    const s = this.st.stats;
    this.st.stats = new Stats();
    return s;
  }

  snapshot(): SwarmSnapshot {
    const st = this.st;
    return { target: this.target, rate: this.ramp.rate, active: st.active, connected: st.connected, inflight: this.traffic.inflightNow(), stats: st.stats };
  }

  /**
   * Stops publishing, waits up to the drain time for outstanding acks (what is still
   * unacknowledged then fails as unacked_at_stop), then sends DISCONNECT to every device and
   * waits up to `timeoutMs` for the sockets to close.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    const st = this.st;
    st.stopping = true;
    const drainEnd = Date.now() + (this.cfg.drainMs ?? DEFAULT_DRAIN_MS);
    while (this.traffic.inflightNow() > 0 && Date.now() < drainEnd && !this.hurried) {
      await Bun.sleep(20);
      st.outbox.flush(st.clock());
    }
    this.traffic.abandonAll();
    this.setUsers(0);
    st.outbox.flush(st.clock());
    const deadline = Date.now() + timeoutMs;
    while (st.devices.some((d) => d?.state === State.STOPPING) && Date.now() < deadline && !this.hurried) {
      await Bun.sleep(20);
      st.outbox.flush(st.clock());
    }
    for (const d of st.devices) {
      if (d?.state === State.STOPPING) {
        d.conn?.socket?.terminate();
        d.state = State.IDLE;
      }
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  // ---- scheduling -----------------------------------------------------------------------

  /** One scheduler step: timers, the ramp, then one write per socket. Public for tests with a fake clock. */
  tick(): void {
    const st = this.st;
    const now = st.clock();
    const lag = now - this.lastTick - TICK_MS;
    st.stats.loopLag.recordMs(lag > 0 ? lag : 0);
    const dt = (now - this.lastTick) / 1000;
    st.prevTick = this.lastTick;
    this.lastTick = now;
    // Before any timer: a process that wakes after its lease lapsed must not redial anything.
    this.leaseLapsed();
    st.wheel.tick(now);
    for (let n = this.ramp.take(dt, this.room(dt)); n > 0; n--) this.spawnGuarded(st.active++, now);
    if (this.churn.rate > 0) this.churnSome(dt);
    st.outbox.flush(now);
  }

  /**
   * How many more devices the ramp may start now: up to the target, and while --max-connecting
   * connects are in flight, none (the time it waits is counted in health.ramp_held_ms).
   */
  private room(dt: number): number {
    const st = this.st;
    if (st.stopping) return 0;
    const wanted = this.target - st.active;
    const max = st.cfg.maxConnecting;
    if (!max || wanted <= 0) return wanted;
    const free = max - st.connecting;
    if (free <= 0) st.stats.health.ramp_held_ms += Math.round(dt * 1000);
    return Math.min(wanted, free);
  }

  /**
   * A timer is guarded like a socket callback: a throw costs that device a counted error
   * (health.timer_errors) and its connection, which reconnects with backoff; the other timers
   * of the tick still fire and the process goes on.
   */
  private fireGuarded(index: number, kind: number, at: number): void {
    try {
      this.fire(index, kind, at);
    } catch (err) {
      this.st.stats.health.timer_errors++;
      const conn = this.st.devices[index]?.conn;
      if (conn) this.links.drop(conn, `internal:${err instanceof Error ? err.name : "error"}`);
    }
  }

  /** Churn: the next connected devices in turn disconnect and reconnect, at the churn rate. */
  private churnSome(dt: number): void {
    const st = this.st;
    let n = this.churn.take(dt, st.stopping ? 0 : st.connected);
    for (let tried = 0; n > 0 && tried < st.active; tried++) {
      const dev = st.devices[this.churnNext++ % st.active];
      if (dev && this.links.churn(dev)) n--;
    }
  }

  /** A device that cannot even start (its identity unreadable, say) costs a counted error, not the tick. */
  private spawnGuarded(index: number, now: number): void {
    try {
      this.links.spawn(index, now);
    } catch {
      this.st.stats.health.timer_errors++;
    }
  }

  private fire(index: number, kind: number, at: number): void {
    const dev = this.st.devices[index];
    if (!dev) return;
    const now = this.st.clock();
    switch (kind) {
      case Timer.PUBLISH: {
        const renewals = this.links.renewals;
        if (this.traffic.publish(dev, at, now) && renewals && dev.lifecycle === Lifecycle.NONE) renewals.consider(dev, now);
        return;
      }
      case Timer.KEEPALIVE:
        if (!this.traffic.keepalive(dev, now)) this.links.drop(dev.conn!, "keepalive_timeout");
        return;
      case Timer.TIMEOUT:
        return this.links.timedOut(dev);
      case Timer.RECONNECT:
        return this.links.reconnect(dev, now);
      case Timer.ACK:
        return this.traffic.expireAcks(dev, now);
      case Timer.SCENARIO:
        return this.links.scenario?.fire(dev, at, now);
    }
  }
}
