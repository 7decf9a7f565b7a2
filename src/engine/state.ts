/**
 * What the parts of a swarm share (swarm.ts, connections.ts, traffic.ts, renewal.ts): its
 * settings, its devices, the timer wheel, the write batcher and the stats being counted.
 */
import { DEFAULT_INFLIGHT, type Conn, type Device } from "../mqtt/device.ts";
import { Stats } from "../metrics/stats.ts";
import { Outbox } from "../transport/outbox.ts";
import { DEFAULT_ACK_TIMEOUT_MS, DEFAULT_MAX_PACKET_SIZE, type IdentitySource, type Publishing, type SwarmConfig } from "./config.ts";
import type { Clock, Wheel } from "./scheduler.ts";

export class SwarmState {
  /** Everything counted since the start, or since the last takeStats(). */
  stats = new Stats();
  readonly devices: Device[] = [];
  readonly outbox = new Outbox();
  /** Devices [0, active) are in the swarm (connecting, connected or waiting to reconnect). */
  active = 0;
  connected = 0;
  /** Connects in flight: dialled, not yet connected (CONNACK) nor ended. Bounded for the ramp by cfg.maxConnecting. */
  connecting = 0;
  /** Set by stop(): nothing new is published, nothing reconnects. */
  stopping = false;
  /** When the tick before the current one ran: timers due after it could not have fired earlier. */
  prevTick = 0;
  readonly maxPacketSize: number;
  /** In-flight window per device (--inflight). */
  readonly window: number;
  /** Persistent sessions (--clean false): in-flight publishes outlive a connection and are resent on resume. */
  readonly persistent: boolean;
  readonly ackTimeoutMs: number;
  /** How devices publish now: the settings' until changed live (Swarm.setPublishing). */
  publishing: Publishing;
  private readonly epochOffset: number;

  constructor(
    readonly cfg: SwarmConfig,
    readonly identities: IdentitySource,
    readonly clock: Clock,
    readonly wheel: Wheel,
    scripted = false,
  ) {
    this.maxPacketSize = cfg.maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE;
    this.window = cfg.inflight ?? DEFAULT_INFLIGHT;
    // A scenario chooses each publish's QoS, so its in-flight publishes may outlive a connection whatever --qos says.
    this.persistent = cfg.session?.clean === false && (cfg.qos > 0 || scripted);
    this.ackTimeoutMs = cfg.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    this.publishing = { intervalMs: [...cfg.intervalMs], publish: cfg.publish !== false, ...(cfg.max ? { max: true } : {}) };
    this.epochOffset = Date.now() - clock();
  }

  /** `conn` is dialled: it joins the connects in flight until settle(). */
  dialled(conn: Conn): void {
    conn.connecting = true;
    this.connecting++;
  }

  /** `conn` leaves the connects in flight (connected, failed or dropped); once per connection. */
  settle(conn: Conn): void {
    if (!conn.connecting) return;
    conn.connecting = false;
    this.connecting--;
  }

  /** Monotonic ms to wall-clock ms (payload timestamps are wall clock). */
  wallClock(monotonic: number): number {
    return monotonic + this.epochOffset;
  }

  /** True while `dev` belongs in the swarm: not stopping, and within the active devices. */
  wanted(dev: Device): boolean {
    return !this.stopping && dev.index < this.active;
  }
}
