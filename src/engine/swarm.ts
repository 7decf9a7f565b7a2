/**
 * The swarm: a population of simulated devices in one process. It ramps devices up at the
 * spawn rate, keeps each connected (mTLS, CONNECT, SUBSCRIBE), publishes on a jittered
 * schedule, answers the broker, and reconnects with backoff. All timers live in one wheel and
 * all sockets share one handler object. Start/setUsers/setRate/stop/snapshot are the
 * in-process API used by the CLI and the control API.
 *
 * Over 400 lines for now: the ramp, dialing, publish/ack/keepalive and renew/revoke still
 * share this one class and its private state. TODO(issue 17): split them, each under ~300 lines.
 */
import type { TLSOptions } from "bun";
import { PINGREQ, PublishTemplate, encodeConnect, encodeDisconnect, type ProtocolVersion, type QoS } from "../mqtt/codec.ts";
import { onData, type SessionHost } from "../mqtt/session.ts";
import { Stats } from "../metrics/stats.ts";
import { commonNameOf } from "../pki/subject.ts";
import { Transport, type LinkEvents, type Target } from "../transport/connect.ts";
import { Outbox } from "../transport/outbox.ts";
import { ServerPins } from "../transport/pins.ts";
import type { LifecycleAnswer, LifecycleHooks, LifecycleKind, LifecyclePlan } from "../lifecycle/types.ts";
import { Conn, DEFAULT_INFLIGHT, Device, Lifecycle, State } from "../mqtt/device.ts";
import { TICK_MS, TIMER_KINDS, Timer, Wheel, intendedTime, leaseClock } from "./scheduler.ts";

export interface SwarmConfig {
  targets: Target[];
  /** Local addresses to connect from, spread over devices (empty: the kernel chooses). */
  sources: string[];
  tls: boolean;
  /** Skip verifying the broker's certificate (dojot's tool did). */
  insecure: boolean;
  /** CA that signed the broker certificate (PEM). */
  caPem?: string;
  tenant: string;
  qos: QoS;
  version: ProtocolVersion;
  keepaliveS: number;
  /** Publish interval range, ms: each device waits uniformly within it. */
  intervalMs: [number, number];
  payloadSize: number;
  /** Reconnect backoff bounds, ms. */
  reconnectMs: [number, number];
  connectTimeoutMs: number;
  users: number;
  /** New devices per second. */
  rate: number;
  /** Largest inbound packet a device accepts, bytes (default DEFAULT_MAX_PACKET_SIZE); MQTT 5 tells the broker. */
  maxPacketSize?: number;
  /** QoS 1/2 publishes a device may have unacknowledged (--inflight, default 8); a publish that finds the window full is skipped as window_full. */
  inflight?: number;
  /** A publish not acknowledged this long after it was sent fails as ack_timeout (--ack-timeout, ms, default 30 s). */
  ackTimeoutMs?: number;
  /** On stop, how long outstanding acks are awaited before the rest count as unacked_at_stop (--drain, ms, default 5 s). */
  drainMs?: number;
  /** Renew and revoke certificates during the run (RENEW_DEVICES / REVOKE_DEVICES). */
  lifecycle?: LifecyclePlan;
}

/** Where device identities come from (a certificate directory, later Redis). */
export interface IdentitySource {
  readonly count: number;
  id(index: number): string;
  /** PEM certificate and key of device `index`. */
  load(index: number): { cert: string; key: string };
}

export interface SwarmSnapshot {
  target: number;
  rate: number;
  active: number;
  connected: number;
  /** QoS 1/2 publishes awaiting their ack now. */
  inflight: number;
  stats: Stats;
}

/** 1 MiB: far above what a device is sent (config, acks), far below what would hurt the process. */
export const DEFAULT_MAX_PACKET_SIZE = 1024 * 1024;

export const DEFAULT_ACK_TIMEOUT_MS = 30_000;
export const DEFAULT_DRAIN_MS = 5000;

/** A publish that leaves later than this after its scheduled time counts as a late send. */
export const LATE_MS = 100;

export class Swarm implements SessionHost, LinkEvents {
  /** Everything counted since the start, or since the last takeStats(). */
  stats = new Stats();
  readonly maxPacketSize: number;
  private readonly window: number;
  private readonly ackTimeoutMs: number;
  private readonly devices: Device[] = [];
  private readonly wheel: Wheel;
  private readonly outbox = new Outbox();
  private readonly transport: Transport;
  /** Broker certificates verified so far, per target: later connections skip the CA store. */
  readonly serverPins = new ServerPins();
  private readonly epochOffset: number;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastTick = 0;
  /** When the tick before the current one ran: timers due after it could not have fired earlier. */
  private prevTick = 0;
  private tokens = 0;
  private target: number;
  private rate: number;
  /** Devices [0, active) are in the swarm (connecting, connected or waiting to reconnect). */
  private active = 0;
  private connectedCount = 0;
  private stopping = false;
  /** A stop in a hurry (a second Ctrl-C): no waiting for acks or for sockets to close. */
  private hurried = false;
  /**
   * When (leaseClock, shared with the machine agent) this swarm may no longer dial: a federated
   * machine's lease. Once it lapses the swarm is fenced for good.
   */
  private leaseUntil = Infinity;
  private fenced = false;
  /** Set once the cap answered no: this process stops asking. */
  private readonly capReached = { renew: false, revoke: false };

  /**
   * @param lifecycle who grants and performs renewals and revocations (required when
   *   `cfg.lifecycle` asks for them)
   */
  constructor(
    private readonly cfg: SwarmConfig,
    private readonly identities: IdentitySource,
    private readonly clock: () => number = () => performance.now(),
    private readonly lifecycle: LifecycleHooks | null = null,
  ) {
    this.target = Math.min(cfg.users, identities.count);
    this.maxPacketSize = cfg.maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE;
    this.window = cfg.inflight ?? DEFAULT_INFLIGHT;
    this.ackTimeoutMs = cfg.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    this.rate = cfg.rate;
    this.epochOffset = Date.now() - clock();
    this.wheel = new Wheel(TIMER_KINDS, Math.max(16, this.target), (d, k, at) => this.fireGuarded(d, k, at), clock());
    this.transport = new Transport(this, cfg.tls, !cfg.insecure);
  }

  // ---- in-process API -------------------------------------------------------------------

  start(): void {
    if (this.timer) return;
    this.lastTick = this.clock();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  setUsers(n: number): void {
    this.target = this.fenced ? 0 : Math.max(0, Math.min(n, this.identities.count));
    this.wheel.grow(this.target);
    while (this.active > this.target) this.retire(this.devices[--this.active]!);
  }

  setRate(r: number): void {
    this.rate = r;
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
    const s = this.stats;
    this.stats = new Stats();
    return s;
  }

  snapshot(): SwarmSnapshot {
    return { target: this.target, rate: this.rate, active: this.active, connected: this.connectedCount, inflight: this.inflightNow(), stats: this.stats };
  }

  /** QoS 1/2 publishes awaiting their ack, over every device. */
  private inflightNow(): number {
    let n = 0;
    for (const d of this.devices) if (d) n += d.inflight.count;
    return n;
  }

  /**
   * Stops publishing, waits up to the drain time for outstanding acks (what is still
   * unacknowledged then fails as unacked_at_stop), then sends DISCONNECT to every device and
   * waits up to `timeoutMs` for the sockets to close.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    this.stopping = true;
    const drainEnd = Date.now() + (this.cfg.drainMs ?? DEFAULT_DRAIN_MS);
    while (this.inflightNow() > 0 && Date.now() < drainEnd && !this.hurried) {
      await Bun.sleep(20);
      this.outbox.flush(this.clock());
    }
    for (const d of this.devices) if (d) for (let n = d.inflight.clear(); n > 0; n--) this.stats.rows.publish.fail("unacked_at_stop");
    this.setUsers(0);
    this.outbox.flush(this.clock());
    const deadline = Date.now() + timeoutMs;
    while (this.devices.some((d) => d.state === State.STOPPING) && Date.now() < deadline && !this.hurried) {
      await Bun.sleep(20);
      this.outbox.flush(this.clock());
    }
    for (const d of this.devices) {
      if (d.state === State.STOPPING) {
        d.conn?.socket?.terminate();
        d.state = State.IDLE;
      }
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  wallClock(monotonic: number): number {
    return monotonic + this.epochOffset;
  }

  // ---- scheduling -----------------------------------------------------------------------

  /** One scheduler step: timers, the ramp, then one write per socket. Public for tests with a fake clock. */
  tick(): void {
    const now = this.clock();
    const lag = now - this.lastTick - TICK_MS;
    this.stats.loopLag.recordMs(lag > 0 ? lag : 0);
    const dt = (now - this.lastTick) / 1000;
    this.prevTick = this.lastTick;
    this.lastTick = now;
    // Before any timer: a process that wakes after its lease lapsed must not redial anything.
    this.leaseLapsed();
    this.wheel.tick(now);
    if (!this.stopping && this.active < this.target) {
      this.tokens = Math.min(this.tokens + this.rate * dt, Math.max(1, this.rate));
      while (this.tokens >= 1 && this.active < this.target) {
        this.tokens -= 1;
        this.spawn(this.active++, now);
      }
    } else this.tokens = 0;
    this.outbox.flush(now);
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
      this.stats.health.timer_errors++;
      const conn = this.devices[index]?.conn;
      if (conn) this.drop(conn, `internal:${err instanceof Error ? err.name : "error"}`);
    }
  }

  private fire(index: number, kind: number, at: number): void {
    const dev = this.devices[index];
    if (!dev) return;
    const now = this.clock();
    switch (kind) {
      case Timer.PUBLISH:
        return this.publish(dev, at, now);
      case Timer.KEEPALIVE:
        return this.keepalive(dev, now);
      case Timer.TIMEOUT:
        if (dev.conn && (dev.state === State.DIALING || dev.state === State.CONNECTING)) this.drop(dev.conn, "timeout");
        return;
      case Timer.RECONNECT:
        if (dev.state === State.WAITING) this.dialDevice(dev, now);
        return;
      case Timer.ACK:
        return this.expireAcks(dev, now);
    }
  }

  // ---- device lifecycle -----------------------------------------------------------------

  private spawn(index: number, now: number): void {
    let dev = this.devices[index];
    const id = this.identities.id(index);
    // A slot whose identity changed (its machine handed ranges over) gets a fresh device.
    if (!dev || dev.id !== id) {
      const clientId = `${this.cfg.tenant}:${id}`;
      dev = new Device(index, id, clientId, new PublishTemplate(`${clientId}/attrs`, this.cfg.qos, this.cfg.version, this.cfg.payloadSize), this.window);
      this.devices[index] = dev;
    }
    dev.attempts = 0;
    if (dev.lifecycle === Lifecycle.REVOKED) return; // its certificate is revoked: it stays down
    this.dialDevice(dev, now);
  }

  /** Dials `dev`; `fullVerify` forces a CA store even when the target has a pinned certificate. */
  private dialDevice(dev: Device, now: number, fullVerify = false): void {
    if (this.leaseLapsed()) {
      dev.state = State.IDLE;
      return;
    }
    const conn = new Conn(dev, this.cfg.version, this.cfg.qos);
    conn.dialAt = now;
    dev.conn = conn;
    dev.state = State.DIALING;
    const { targets, sources } = this.cfg;
    const target = targets[dev.index % targets.length]!;
    const source = sources.length ? sources[Math.floor(dev.index / targets.length) % sources.length] : undefined;
    let tls: TLSOptions | undefined;
    if (this.cfg.tls) {
      let ident;
      try {
        ident = dev.renewed ?? this.identities.load(dev.index);
      } catch {
        conn.closed = true;
        return this.closed(conn, "identity_unreadable");
      }
      // The identity is the certificate's CN, as the broker sees it (use_identity_as_username), not an assumed tenant:id.
      const cn = commonNameOf(ident.cert);
      if (cn && cn !== dev.clientId) {
        dev.clientId = cn;
        dev.publish = new PublishTemplate(`${cn}/attrs`, this.cfg.qos, this.cfg.version, this.cfg.payloadSize);
      }
      if (this.cfg.insecure) {
        tls = { cert: ident.cert, key: ident.key, rejectUnauthorized: false };
      } else {
        // The CA store costs ~4 KB per connection: only until a broker certificate is pinned.
        const pins = (conn.pins = this.serverPins.for(target.host, target.port));
        conn.pinned = pins.usable && !fullVerify;
        tls = conn.pinned ? { cert: ident.cert, key: ident.key, rejectUnauthorized: false } : { cert: ident.cert, key: ident.key, ca: this.cfg.caPem, rejectUnauthorized: true };
      }
    }
    this.wheel.set(dev.index, Timer.TIMEOUT, now + this.cfg.connectTimeoutMs);
    this.transport.dial(conn, { target, source, tls });
  }

  /** Takes a device out of the swarm: DISCONNECT if connected, then close. */
  private retire(dev: Device): void {
    this.wheel.clearAll(dev.index);
    const conn = dev.conn;
    if (dev.state === State.CONNECTED && conn?.socket) return this.disconnect(dev, conn);
    this.abort(dev);
    dev.state = State.IDLE;
  }

  /** DISCONNECT, then close; closed() sees STOPPING and accounts for it. */
  private disconnect(dev: Device, conn: Conn): void {
    this.connectedCount--;
    dev.state = State.STOPPING;
    this.outbox.send(conn, encodeDisconnect(conn.version));
    this.outbox.flush(this.clock());
    conn.socket!.end();
  }

  /** Drops a connection attempt that has not connected, without accounting (the device moves on). */
  private abort(dev: Device): void {
    const conn = dev.conn;
    if (conn && !conn.closed) {
      conn.closed = true;
      conn.socket?.terminate();
    }
    dev.conn = null;
  }

  // ---- LinkEvents (socket callbacks) ------------------------------------------------------

  opened(conn: Conn): void {
    const dev = conn.device;
    if (dev.conn !== conn) {
      conn.socket?.terminate();
      return;
    }
    conn.tcpAt = this.clock();
    this.stats.phases.tcp_connect.recordMs(conn.tcpAt - conn.dialAt);
  }

  ready(conn: Conn): void {
    const dev = conn.device;
    if (dev.conn !== conn || dev.state !== State.DIALING) return;
    const now = this.clock();
    if (this.cfg.tls) this.stats.phases.tls_handshake.recordMs(now - conn.tcpAt);
    dev.state = State.CONNECTING;
    conn.connectSentAt = now;
    this.outbox.send(conn, encodeConnect(dev.clientId, this.cfg.keepaliveS, conn.version, this.maxPacketSize));
    this.outbox.flush(now);
  }

  data(conn: Conn, bytes: Uint8Array): void {
    if (conn.device.conn !== conn) return;
    const now = this.clock();
    onData(this, conn, bytes, now);
    this.outbox.flush(now);
  }

  drained(conn: Conn): void {
    this.outbox.drain(conn, this.clock());
  }

  unpinned(conn: Conn): void {
    const dev = conn.device;
    if (dev.conn !== conn || dev.state !== State.DIALING) {
      conn.socket?.terminate();
      return;
    }
    this.abort(dev);
    this.dialDevice(dev, this.clock(), true);
  }

  crashed(conn: Conn, err: unknown): void {
    this.drop(conn, `internal:${err instanceof Error ? err.name : "error"}`);
  }

  closed(conn: Conn, reason: string | null): void {
    const dev = conn.device;
    if (dev.conn !== conn) return;
    dev.conn = null;
    this.wheel.clearAll(dev.index);
    const why = conn.failReason ?? reason ?? "closed_by_broker";
    const lostInflight = this.abandonInflight(dev);
    const live = !this.stopping && dev.index < this.active;
    switch (dev.state) {
      case State.STOPPING:
        this.stats.rows.disconnect.ok();
        dev.state = State.IDLE;
        // Disconnected to renew or to check a revocation: dial again at once.
        if (live && (dev.lifecycle === Lifecycle.REVOKE_CHECK || dev.lifecycle === Lifecycle.RENEW_CONNECT)) this.dialDevice(dev, this.clock());
        return;
      case State.CONNECTED:
        this.connectedCount--;
        this.stats.rows.disconnect.fail(why);
        if (lostInflight) for (let i = 0; i < lostInflight; i++) this.stats.rows.publish.fail("connection_lost");
        break;
      case State.DIALING:
      case State.CONNECTING:
        // A refused revoked certificate is what a revoke expects, not a connect failure.
        if (dev.lifecycle === Lifecycle.REVOKE_CHECK) return this.revokeRefused(dev);
        this.stats.rows.connect.fail(why);
        if (dev.lifecycle === Lifecycle.RENEW_CONNECT) this.lifecycleDone(dev, "renew", why);
        break;
      default:
        return;
    }
    if (!live) {
      dev.state = State.IDLE;
      return;
    }
    this.scheduleReconnect(dev);
  }

  // ---- SessionHost (MQTT callbacks) -------------------------------------------------------

  send(conn: Conn, bytes: Uint8Array): void {
    this.outbox.send(conn, bytes);
  }

  connected(conn: Conn, now: number): void {
    const dev = conn.device;
    dev.state = State.CONNECTED;
    dev.attempts = 0;
    dev.connectedAt = now;
    this.connectedCount++;
    if (dev.lifecycle === Lifecycle.RENEW_CONNECT) this.lifecycleDone(dev, "renew", null, now);
    else if (dev.lifecycle === Lifecycle.REVOKE_CHECK) {
      // The broker took a revoked certificate: a finding about the platform. The device leaves.
      this.lifecycleDone(dev, "revoke", "revoked_but_accepted");
      dev.lifecycle = Lifecycle.REVOKED;
      this.retire(dev);
      return;
    }
    this.wheel.clear(dev.index, Timer.TIMEOUT);
    dev.nextPublishAt = now + this.interval();
    this.wheel.set(dev.index, Timer.PUBLISH, dev.nextPublishAt);
    // Keepalive 0 turns the mechanism off (§3.1.2.10).
    if (this.cfg.keepaliveS > 0) this.wheel.set(dev.index, Timer.KEEPALIVE, now + this.cfg.keepaliveS * 1000);
  }

  drop(conn: Conn, reason: string): void {
    if (conn.closed) return;
    conn.failReason ??= reason;
    if (conn.socket) {
      conn.socket.terminate();
      return; // close() follows and does the accounting
    }
    // Still dialing: account now; the socket, if it ever opens, is terminated in opened().
    conn.closed = true;
    this.closed(conn, reason);
  }

  // ---- periodic work ----------------------------------------------------------------------

  private interval(): number {
    const [lo, hi] = this.cfg.intervalMs;
    return lo + Math.random() * (hi - lo);
  }

  private publish(dev: Device, deadline: number, now: number): void {
    const conn = dev.conn;
    // Stopping: nothing new leaves while outstanding acks drain.
    if (dev.state !== State.CONNECTED || !conn || this.stopping) return;
    const scheduled = intendedTime(deadline, this.prevTick, now);
    // The next one keeps to the schedule even when this one is late.
    let next = deadline + this.interval();
    if (next <= now) next = now + 1;
    dev.nextPublishAt = next;
    this.wheel.set(dev.index, Timer.PUBLISH, next);
    if (now - scheduled > LATE_MS) this.stats.health.late_sends++;
    if (conn.pending) {
      this.stats.health.backpressure_skips++;
      this.stats.rows.publish.fail("backpressure");
      return;
    }
    const qos = this.cfg.qos;
    let id = 0;
    if (qos > 0) {
      // A full window is a skipped publish, counted, never a silently reused slot.
      if (dev.inflight.count >= dev.inflight.size) {
        this.stats.rows.publish.fail("window_full");
        return;
      }
      id = dev.packetId();
      dev.inflight.add(id, scheduled, now);
      // One ack timer per device, at the oldest outstanding publish's deadline.
      if (dev.inflight.count === 1) this.wheel.set(dev.index, Timer.ACK, now + this.ackTimeoutMs);
    }
    const bytes = new Uint8Array(dev.publish.length);
    dev.publish.fill(bytes, 0, id, Math.round(this.wallClock(scheduled)), dev.nextSeq++);
    this.outbox.send(conn, bytes);
    this.stats.sent++;
    if (qos === 0) this.stats.rows.publish.ok();
    if (this.cfg.lifecycle && dev.lifecycle === Lifecycle.NONE) this.maybeLifecycle(dev, now);
  }

  // ---- renew and revoke -------------------------------------------------------------------

  /** At a publish: perhaps ask for a revoke, else perhaps for a renew (each by its own chance). */
  private maybeLifecycle(dev: Device, now: number): void {
    const lc = this.cfg.lifecycle!;
    for (const kind of ["revoke", "renew"] as const) {
      const p = lc[kind];
      if (!p || this.capReached[kind] || now - dev.connectedAt < p.afterMs || Math.random() * 100 >= p.probability) continue;
      if (!this.lifecycle) throw new Error("lifecycle settings without a lifecycle service");
      let cert: string;
      try {
        cert = (dev.renewed ?? this.identities.load(dev.index)).cert;
      } catch {
        return;
      }
      dev.lifecycle = Lifecycle.PENDING;
      dev.lifecycleAt = now;
      this.lifecycle.request(kind, dev.id, cert).then(
        (a) => this.answered(dev, kind, a),
        () => this.answered(dev, kind, { granted: true, failure: "signer_error" }),
      );
      return;
    }
  }

  private answered(dev: Device, kind: LifecycleKind, a: LifecycleAnswer): void {
    if (!a.granted) {
      this.capReached[kind] = true;
      dev.lifecycle = Lifecycle.NONE;
      return;
    }
    if (a.failure) return this.lifecycleDone(dev, kind, a.failure);
    if (this.stopping || dev.index >= this.active || this.devices[dev.index] !== dev) return this.lifecycleDone(dev, kind, "stopped");
    if (kind === "renew") {
      if (!a.cert || !a.key) return this.lifecycleDone(dev, kind, "signer_error");
      dev.renewed = { cert: a.cert, key: a.key };
      dev.lifecycle = Lifecycle.RENEW_CONNECT;
    } else dev.lifecycle = Lifecycle.REVOKE_CHECK;
    this.redial(dev);
  }

  /** Reconnects a device now: DISCONNECT and close if connected (closed() dials again), else dial at once. */
  private redial(dev: Device): void {
    const conn = dev.conn;
    this.wheel.clearAll(dev.index);
    if (dev.state === State.CONNECTED && conn?.socket) return this.disconnect(dev, conn);
    if (dev.state === State.STOPPING) return; // closed() dials again
    this.abort(dev);
    this.dialDevice(dev, this.clock());
  }

  /** The revoked certificate was refused, as it must be: the revoke succeeded and the device stays down. */
  private revokeRefused(dev: Device): void {
    this.lifecycleDone(dev, "revoke", null);
    dev.lifecycle = Lifecycle.REVOKED;
    dev.state = State.IDLE;
  }

  /** Counts a renew or revoke: a success with its latency when `failure` is null. */
  private lifecycleDone(dev: Device, kind: LifecycleKind, failure: string | null, now = this.clock()): void {
    if (failure === null) this.stats.rows[kind].ok(now - dev.lifecycleAt);
    else this.stats.rows[kind].fail(failure);
    dev.lifecycle = Lifecycle.DONE;
  }

  /**
   * Keepalive (§3.1.2.10), right whatever the QoS: a PINGREQ when nothing was sent for a
   * keepalive period (the server's rule) or nothing was received for one (a QoS 0 device that
   * publishes often hears nothing back); the link is dead only when a PINGRESP is overdue, half
   * a keepalive after its PINGREQ with nothing received since.
   */
  private keepalive(dev: Device, now: number): void {
    const conn = dev.conn;
    if (dev.state !== State.CONNECTED || !conn) return;
    const ka = this.cfg.keepaliveS * 1000;
    if (conn.pingOutstanding && now - conn.pingSentAt >= ka / 2) {
      // Overdue. Not a byte since the PINGREQ: dead. Heard from since: alive (a broker busy with acks), ping again when due.
      if (conn.lastRx < conn.pingSentAt) return this.drop(conn, "keepalive_timeout");
      conn.pingOutstanding = false;
    }
    if (!conn.pingOutstanding && (now - conn.lastTx >= ka || now - conn.lastRx >= ka)) {
      conn.pingOutstanding = true;
      conn.pingSentAt = now;
      this.outbox.send(conn, PINGREQ);
    }
    const next = conn.pingOutstanding ? conn.pingSentAt + ka / 2 : Math.min(conn.lastTx, conn.lastRx) + ka;
    this.wheel.set(dev.index, Timer.KEEPALIVE, Math.max(next, now + TICK_MS));
  }

  /** Fails the publishes whose ack is overdue (ack_timeout); re-arms for the next deadline. */
  private expireAcks(dev: Device, now: number): void {
    const w = dev.inflight;
    let next = Infinity;
    for (let s = 0; s < w.size; s++) {
      if (Number.isNaN(w.at[s]!)) continue;
      const due = w.sentAt[s]! + this.ackTimeoutMs;
      if (due <= now) {
        w.release(s);
        this.stats.rows.publish.fail("ack_timeout");
      } else if (due < next) next = due;
    }
    if (next < Infinity) this.wheel.set(dev.index, Timer.ACK, next);
  }

  /** Clears in-flight publishes of a lost connection; returns how many there were. */
  private abandonInflight(dev: Device): number {
    return dev.inflight.clear();
  }

  /** Exponential backoff from MIN to MAX with jitter: uniform in [max(min, d/2), d]. */
  private scheduleReconnect(dev: Device): void {
    const [lo, hi] = this.cfg.reconnectMs;
    dev.attempts++;
    const d = Math.min(hi, lo * 2 ** Math.min(dev.attempts - 1, 30));
    const floor = Math.max(lo, d / 2);
    const delay = floor + Math.random() * (d - floor);
    dev.state = State.WAITING;
    this.wheel.set(dev.index, Timer.RECONNECT, this.clock() + delay);
  }
}
