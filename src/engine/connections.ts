/**
 * The devices' connections: dialing (mTLS with the device's own certificate, read afresh at
 * each dial), the socket events (LinkEvents) and the MQTT session's callbacks (SessionHost),
 * taking a device out, and reconnecting with backoff. Each outcome is counted once, here.
 */
import { PublishTemplate, encodeConnect, encodeDisconnect } from "../mqtt/codec.ts";
import { Conn, Device, Lifecycle, State } from "../mqtt/device.ts";
import { onData, subscribe } from "../mqtt/session.ts";
import type { IPublishPacket } from "mqtt-packet";
import type { Stats } from "../metrics/stats.ts";
import { commonNameOf } from "../pki/subject.ts";
import { Transport, type LinkEvents } from "../transport/connect.ts";
import { ServerPins } from "../transport/pins.ts";
import type { LifecycleHooks } from "../lifecycle/types.ts";
import type { LoadedScenario } from "../scenario/load.ts";
import { ScenarioRunner, type ScenarioLinks } from "./scenario.ts";
import { Renewals, type Redialer } from "./renewal.ts";
import { Timer } from "./scheduler.ts";
import { deviceTopic, type IdentitySource, type SwarmConfig } from "./config.ts";
import type { SwarmState } from "./state.ts";
import type { Traffic } from "./traffic.ts";

export class Connections implements ScenarioLinks, LinkEvents, Redialer {
  /** Broker certificates verified so far, per target: later connections skip the CA store. */
  readonly serverPins: ServerPins;
  /** Renew and revoke, when the run asks for them. */
  readonly renewals: Renewals | null;
  /** The devices' scenario (--scenario), or null for the built-in device. */
  readonly scenario: ScenarioRunner | null;
  private readonly transport: Transport;

  /** @param mayDial false once the machine's lease lapsed: nothing dials again. */
  constructor(
    private readonly st: SwarmState,
    private readonly traffic: Traffic,
    lifecycle: LifecycleHooks | null,
    private readonly mayDial: () => boolean,
    scenario: LoadedScenario | null = null,
  ) {
    this.serverPins = new ServerPins(st.cfg);
    this.scenario = scenario ? new ScenarioRunner(st, scenario, this, traffic) : null;
    if (st.cfg.lifecycle && !lifecycle) throw new Error("lifecycle settings without a lifecycle service");
    this.renewals = st.cfg.lifecycle && lifecycle ? new Renewals(st, lifecycle, this) : null;
    // cicada's TLS runs over plain sockets: Bun's TLS handshake event is not wanted then.
    this.transport = new Transport(this, st.cfg.tls && st.cfg.tlsStack !== "cicada", !st.cfg.insecure);
  }

  get stats(): Stats {
    return this.st.stats;
  }

  get maxPacketSize(): number {
    return this.st.maxPacketSize;
  }

  // ---- dialing ----------------------------------------------------------------------------

  /** Device `index` joins the swarm (the ramp). */
  spawn(index: number, now: number): void {
    const { cfg, devices, identities } = this.st;
    let dev = devices[index];
    const id = identities.id(index);
    // A slot whose identity changed (its machine handed ranges over) gets a fresh device.
    if (!dev || dev.id !== id) {
      const clientId = `${cfg.tenant}:${id}`;
      dev = new Device(index, id, clientId, this.publishFor(index, id, clientId), this.st.window, this.st.persistent);
      dev.alias = this.aliasesFor(dev);
      devices[index] = dev;
    }
    dev.attempts = 0;
    if (dev.lifecycle === Lifecycle.REVOKED) return; // its certificate is revoked: it stays down
    this.dial(dev, now);
  }

  /** Dials `dev`; `fullVerify` forces a CA store even when the target has a pinned certificate. */
  dial(dev: Device, now: number, fullVerify = false): void {
    if (!this.mayDial()) {
      dev.state = State.IDLE;
      return;
    }
    const cfg = this.st.cfg;
    const conn = new Conn(dev, cfg.version, cfg.qos);
    conn.keepaliveS = cfg.keepaliveS;
    conn.dialAt = now;
    dev.conn = conn;
    dev.state = State.DIALING;
    const { targets, sources } = cfg;
    const target = targets[dev.index % targets.length]!;
    const source = sources.length ? sources[Math.floor(dev.index / targets.length) % sources.length] : undefined;
    let tls;
    if (cfg.tls) {
      let ident;
      try {
        ident = dev.renewed ?? this.st.identities.load(dev.index);
      } catch {
        conn.closed = true;
        return this.closed(conn, "identity_unreadable");
      }
      // The identity is the certificate's CN, as the broker sees it (use_identity_as_username), not an assumed tenant:id.
      const cn = commonNameOf(ident.cert);
      if (cn && cn !== dev.clientId) {
        dev.clientId = cn;
        if (cfg.topic === undefined) {
          dev.publish = this.publishFor(dev.index, dev.id, cn);
          dev.alias = this.aliasesFor(dev);
        }
      }
      // The CA store costs ~4 KB per connection: only until a broker certificate is pinned.
      if (cfg.tlsStack === "cicada") conn.tls13 = this.serverPins.clientFor(conn, target, ident, cfg.caPem, cfg.insecure, fullVerify);
      else tls = this.serverPins.tlsFor(conn, target, ident, cfg.caPem, cfg.insecure, fullVerify);
    }
    this.st.wheel.set(dev.index, Timer.TIMEOUT, now + cfg.connectTimeoutMs);
    this.st.dialled(conn);
    this.transport.dial(conn, { target, source, tls, ...(cfg.ws ? { ws: cfg.ws } : {}) });
  }

  /** Device `index`'s PUBLISH: on --topic with its placeholders filled, else on `<identity>/attrs`. */
  private publishFor(index: number, id: string, identity: string, topicAlias?: number): PublishTemplate {
    const cfg = this.st.cfg;
    const topic = cfg.topic === undefined ? `${identity}/attrs` : deviceTopic(cfg.topic, { tenant: cfg.tenant, id, index: position(this.st.identities, index), machine: cfg.machine ?? "" });
    return this.template(index, topic, topicAlias);
  }

  private template(index: number, topic: string, topicAlias?: number): PublishTemplate {
    const cfg = this.st.cfg;
    return new PublishTemplate(topic, cfg.qos, cfg.version, payloadSizeOf(cfg, position(this.st.identities, index)), {
      ...(cfg.payload !== undefined ? { payload: cfg.payload } : {}),
      ...(cfg.retain ? { retain: true } : {}),
      ...(cfg.properties ? { properties: cfg.properties } : {}),
      ...(topicAlias ? { topicAlias } : {}),
    });
  }

  /**
   * --topic-alias: a device's one topic as alias 1. None when its topic changes per message, or
   * is too short for an alias to save more than setting it costs.
   */
  private aliasesFor(dev: Device): Device["alias"] {
    if (!this.st.cfg.topicAlias || dev.publish.topicVaries) return null;
    const first = this.publishFor(dev.index, dev.id, dev.clientId, 1);
    const next = this.template(dev.index, "", 1);
    return dev.publish.length - next.length >= first.length - dev.publish.length ? { first, next } : null;
  }

  /** The connect timer fired: an attempt still short of CONNACK is dropped as a timeout. */
  timedOut(dev: Device): void {
    if (dev.conn && (dev.state === State.DIALING || dev.state === State.CONNECTING)) this.drop(dev.conn, "timeout");
  }

  /** The reconnect timer fired. */
  reconnect(dev: Device, now: number): void {
    if (dev.state === State.WAITING) this.dial(dev, now);
  }

  /** Reconnects a device now: DISCONNECT and close if connected (closed() dials again), else dial at once. */
  redial(dev: Device): void {
    const conn = dev.conn;
    this.st.wheel.clearAll(dev.index);
    if (dev.state === State.CONNECTED && conn?.socket) return this.disconnect(dev, conn);
    if (dev.state === State.STOPPING) return; // closed() dials again
    this.abort(dev);
    this.dial(dev, this.st.clock());
  }

  /** Churn: a connected device sends DISCONNECT and dials again at once (a reconnect storm, --churn). False when it is not connected. */
  churn(dev: Device): boolean {
    const conn = dev.conn;
    if (dev.state !== State.CONNECTED || !conn?.socket) return false;
    dev.churned = true;
    this.st.wheel.clearAll(dev.index);
    this.disconnect(dev, conn);
    return true;
  }

  // ---- leaving ----------------------------------------------------------------------------

  /** A scenario's d.offline: DISCONNECT now, dial again `ms` after the connection has closed. False when it is not connected. */
  offline(dev: Device, ms: number): boolean {
    const conn = dev.conn;
    if (dev.state !== State.CONNECTED || !conn?.socket) return false;
    dev.offlineMs = ms;
    this.st.wheel.clearAll(dev.index);
    this.disconnect(dev, conn);
    return true;
  }

  /** Takes a device out of the swarm: DISCONNECT if connected, then close. */
  retire(dev: Device): void {
    this.st.wheel.clearAll(dev.index);
    const conn = dev.conn;
    if (dev.state === State.CONNECTED && conn?.socket) return this.disconnect(dev, conn);
    this.abort(dev);
    dev.state = State.IDLE;
  }

  /** DISCONNECT, then close; closed() sees STOPPING and accounts for it. */
  private disconnect(dev: Device, conn: Conn): void {
    this.st.connected--;
    dev.state = State.STOPPING;
    this.st.outbox.send(conn, encodeDisconnect(conn.version));
    this.st.outbox.flush(this.st.clock());
    conn.socket!.end();
  }

  /** Drops a connection attempt that has not connected, without accounting (the device moves on). */
  private abort(dev: Device): void {
    const conn = dev.conn;
    if (conn) this.st.settle(conn);
    if (conn && !conn.closed) {
      conn.closed = true;
      conn.socket?.terminate();
    }
    dev.conn = null;
  }

  /** Exponential backoff from MIN to MAX with jitter: uniform in [max(min, d/2), d]. */
  private scheduleReconnect(dev: Device): void {
    const [lo, hi] = this.st.cfg.reconnectMs;
    dev.attempts++;
    const d = Math.min(hi, lo * 2 ** Math.min(dev.attempts - 1, 30));
    const floor = Math.max(lo, d / 2);
    const delay = floor + Math.random() * (d - floor);
    dev.state = State.WAITING;
    this.st.wheel.set(dev.index, Timer.RECONNECT, this.st.clock() + delay);
  }

  // ---- LinkEvents (socket callbacks) ------------------------------------------------------

  opened(conn: Conn): void {
    if (conn.device.conn !== conn) {
      conn.socket?.terminate();
      return;
    }
    conn.tcpAt = this.st.clock();
    this.st.stats.phases.tcp_connect.recordMs(conn.tcpAt - conn.dialAt);
  }

  upgrading(conn: Conn): void {
    if (conn.device.conn !== conn) return;
    conn.upgradeAt = this.st.clock();
    if (this.st.cfg.tls) this.st.stats.phases.tls_handshake.recordMs(conn.upgradeAt - conn.tcpAt);
  }

  ready(conn: Conn): void {
    const dev = conn.device;
    if (dev.conn !== conn || dev.state !== State.DIALING) return;
    const now = this.st.clock();
    if (conn.ws) this.st.stats.phases.ws_upgrade.recordMs(now - conn.upgradeAt);
    else if (this.st.cfg.tls) this.st.stats.phases.tls_handshake.recordMs(now - conn.tcpAt);
    dev.state = State.CONNECTING;
    conn.connectSentAt = now;
    this.st.outbox.send(conn, encodeConnect(dev.clientId, this.st.cfg.keepaliveS, conn.version, this.st.maxPacketSize, this.st.cfg.session));
    this.st.outbox.flush(now);
  }

  data(conn: Conn, bytes: Uint8Array): void {
    if (conn.device.conn !== conn) return;
    const now = this.st.clock();
    onData(this, conn, bytes, now);
    this.st.outbox.flush(now);
  }

  drained(conn: Conn): void {
    this.st.outbox.drain(conn, this.st.clock());
  }

  unpinned(conn: Conn): void {
    const dev = conn.device;
    if (dev.conn !== conn || dev.state !== State.DIALING) {
      conn.socket?.terminate();
      return;
    }
    this.abort(dev);
    this.dial(dev, this.st.clock(), true);
  }

  crashed(conn: Conn, err: unknown): void {
    this.drop(conn, `internal:${err instanceof Error ? err.name : "error"}`);
  }

  closed(conn: Conn, reason: string | null): void {
    this.st.settle(conn);
    const dev = conn.device;
    if (dev.conn !== conn) return;
    const st = this.st;
    dev.conn = null;
    st.wheel.clearAll(dev.index);
    const why = conn.failReason ?? reason ?? "closed_by_broker";
    const live = st.wanted(dev);
    // A persistent session keeps what is in flight for the device's return (resent on resume, §4.4).
    const lostInflight = live && st.persistent ? 0 : dev.inflight.clear();
    const away = dev.offlineMs;
    dev.offlineMs = 0;
    if (dev.state === State.STOPPING || dev.state === State.CONNECTED) this.scenario?.closed(dev, dev.state === State.CONNECTED ? why : away > 0 ? "offline" : "disconnected");
    switch (dev.state) {
      case State.STOPPING:
        st.stats.rows.disconnect.ok();
        // Left on purpose (churn, a renew or revoke) with publishes unacknowledged: they end here, counted.
        for (let i = 0; i < lostInflight; i++) st.stats.rows.publish.fail("connection_lost");
        dev.state = State.IDLE;
        // Offline for a while (a scenario's d.offline): back after that long.
        if (live && away > 0) {
          dev.state = State.WAITING;
          st.wheel.set(dev.index, Timer.RECONNECT, st.clock() + away);
          return;
        }
        // Disconnected to renew or to check a revocation: dial again at once.
        if (live && (dev.churned || dev.lifecycle === Lifecycle.REVOKE_CHECK || dev.lifecycle === Lifecycle.RENEW_CONNECT)) {
          dev.churned = false;
          this.dial(dev, st.clock());
        }
        return;
      case State.CONNECTED:
        st.connected--;
        st.stats.rows.disconnect.fail(why);
        for (let i = 0; i < lostInflight; i++) st.stats.rows.publish.fail("connection_lost");
        break;
      case State.DIALING:
      case State.CONNECTING:
        if (this.renewals && !this.renewals.refused(dev, why)) return;
        st.stats.rows.connect.fail(why);
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
    this.st.outbox.send(conn, bytes);
  }

  connected(conn: Conn, now: number): void {
    this.st.settle(conn);
    const dev = conn.device;
    dev.state = State.CONNECTED;
    dev.attempts = 0;
    dev.connectedAt = now;
    this.st.connected++;
    // The built-in device subscribes to its config topic; a scenario subscribes to what it wants.
    if (!this.scenario) subscribe(this, conn, `${dev.clientId}/config`, conn.qos, now);
    if (this.renewals && !this.renewals.connected(dev, now)) return;
    this.traffic.begin(dev, now, !this.scenario);
    this.scenario?.connected(dev, now);
  }

  received(conn: Conn, packet: IPublishPacket): void {
    this.scenario?.message(conn, packet);
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

  wallClock(monotonic: number): number {
    return this.st.wallClock(monotonic);
  }
}

/** Device `index`'s place among the whole fleet's identities (for {index} and its payload size). */
function position(ids: IdentitySource, index: number): number {
  return ids.position?.(index) ?? index;
}

/**
 * The padded payload's size for the device at fleet position `p`: --payload-size, or with a
 * range one size per device spread over it (the same on every reconnect and machine).
 */
function payloadSizeOf(cfg: SwarmConfig, p: number): number {
  const hi = cfg.payloadSizeMax;
  if (hi === undefined || hi <= cfg.payloadSize) return cfg.payloadSize;
  return cfg.payloadSize + (Math.imul(p + 1, 0x9e3779b1) >>> 0) % (hi - cfg.payloadSize + 1);
}
