/** Per-device and per-connection state: small fixed-shape objects, no closures or emitters. */
import type { Socket } from "bun";
import { CMD, encodeAck, type ProtocolVersion, type PublishTemplate, type QoS } from "./codec.ts";
import type { PinSet } from "../transport/pins.ts";
import type { WsState } from "../transport/ws.ts";
import type { Tls13Client } from "../transport/tls13.ts";

export const State = {
  IDLE: 0,
  DIALING: 1,
  CONNECTING: 2,
  CONNECTED: 3,
  WAITING: 4,
  STOPPING: 5,
} as const;
export type StateValue = (typeof State)[keyof typeof State];

/** Where a device is in a renew or revoke (at most one per device per run). */
export const Lifecycle = {
  NONE: 0,
  /** Asked the signer; keeps publishing meanwhile. */
  PENDING: 1,
  /** Revoked: reconnecting with the revoked certificate, which the broker must refuse. */
  REVOKE_CHECK: 2,
  /** Renewed: reconnecting with the new certificate. */
  RENEW_CONNECT: 3,
  /** Renewed, or the signer failed or refused: nothing more this run. */
  DONE: 4,
  /** Revoked and checked: the device stays down. */
  REVOKED: 5,
} as const;
export type LifecycleValue = (typeof Lifecycle)[keyof typeof Lifecycle];

/** Default in-flight window (--inflight): a device publishes every ~30 s, so a few suffice. */
export const DEFAULT_INFLIGHT = 8;

/**
 * A device's QoS 1/2 publishes awaiting their ack: `size` slots found by packet id (open
 * addressing from id % size; packet ids are handed out in order, so the first probe nearly
 * always hits). Every publish that enters leaves exactly once: acked, refused, timed out,
 * lost with its connection, or unacked at stop.
 */
export class InflightWindow {
  private readonly id: Uint16Array;
  /** Scheduled send time of each in-flight publish (NaN when the slot is free). */
  private readonly at: Float64Array;
  /** When each was handed to the socket. */
  private readonly sentAt: Float64Array;
  /** QoS 2 publishes whose PUBREC came (PUBREL sent). */
  private readonly released: Uint8Array;
  /** Persistent sessions: each in-flight publish's bytes, to send again on a resumed session (null otherwise). */
  private readonly packets: (Uint8Array | null)[] | null;
  count = 0;
  /** Scheduled and send times of the publish settle() last took out. */
  settledScheduled = 0;
  settledSent = 0;
  /** Earliest send time still in flight after expire() (Infinity when none). */
  oldestSent = Infinity;

  /** @param keep hold each publish's bytes until it is acknowledged (persistent sessions resend them, §4.4) */
  constructor(
    readonly size: number,
    keep = false,
  ) {
    this.id = new Uint16Array(size);
    this.at = new Float64Array(size).fill(NaN);
    this.sentAt = new Float64Array(size);
    this.released = new Uint8Array(size);
    this.packets = keep ? new Array<Uint8Array | null>(size).fill(null) : null;
  }

  /** Takes a slot for packet `id` (with its bytes, when the window keeps them); -1 when the window is full. */
  add(id: number, scheduled: number, sent: number, packet?: Uint8Array): number {
    if (this.count >= this.size) return -1;
    for (let k = 0; k < this.size; k++) {
      const s = (id + k) % this.size;
      if (!Number.isNaN(this.at[s]!)) continue;
      this.id[s] = id;
      this.at[s] = scheduled;
      this.sentAt[s] = sent;
      this.released[s] = 0;
      if (this.packets) this.packets[s] = packet ?? null;
      this.count++;
      return s;
    }
    return -1;
  }

  /** The slot of in-flight packet `id`, or -1 (never sent, or already settled). */
  find(id: number): number {
    for (let k = 0; k < this.size; k++) {
      const s = (id + k) % this.size;
      if (this.id[s] === id && !Number.isNaN(this.at[s]!)) return s;
    }
    return -1;
  }

  release(slot: number): void {
    this.at[slot] = NaN;
    this.released[slot] = 0;
    if (this.packets) this.packets[slot] = null;
    this.count--;
  }

  /**
   * A persistent session resumed (§4.4): hands `send` each in-flight publish again, with its
   * DUP flag set and its packet id, or its PUBREL when the PUBREC had come (QoS 2). Each counts
   * as sent at `now`; returns how many went.
   */
  resend(now: number, send: (bytes: Uint8Array) => void): number {
    let n = 0;
    for (let s = 0; s < this.size; s++) {
      if (Number.isNaN(this.at[s]!)) continue;
      const packet = this.packets?.[s];
      if (this.released[s]) send(encodeAck(CMD.PUBREL, this.id[s]!));
      else if (packet) {
        const again = packet.slice();
        again[0]! |= 0x08;
        send(again);
      } else continue;
      this.sentAt[s] = now;
      n++;
    }
    return n;
  }

  /** PUBREC came for QoS 2 publish `id` (PUBREL sent): it now waits for its PUBCOMP. */
  received(id: number): void {
    const s = this.find(id);
    if (s >= 0) this.released[s] = 1;
  }

  /**
   * Takes publish `id` out of the window (its ack came); false when it is not in it (acked
   * already, timed out, or never sent). Its times are then in settledScheduled/settledSent.
   */
  settle(id: number): boolean {
    const s = this.find(id);
    if (s < 0) return false;
    this.settledScheduled = this.at[s]!;
    this.settledSent = this.sentAt[s]!;
    this.release(s);
    return true;
  }

  /** Takes out every publish sent at or before `cutoff`; returns how many. Sets oldestSent. */
  expire(cutoff: number): number {
    let n = 0;
    let oldest = Infinity;
    for (let s = 0; s < this.size; s++) {
      if (Number.isNaN(this.at[s]!)) continue;
      const sent = this.sentAt[s]!;
      if (sent <= cutoff) {
        this.release(s);
        n++;
      } else if (sent < oldest) oldest = sent;
    }
    this.oldestSent = oldest;
    return n;
  }

  /** Empties the window; returns how many were in flight. */
  clear(): number {
    const n = this.count;
    this.at.fill(NaN);
    this.released.fill(0);
    this.packets?.fill(null);
    this.count = 0;
    return n;
  }
}

export class Device {
  state: StateValue = State.IDLE;
  conn: Conn | null = null;
  /** Consecutive failed attempts, for the reconnect backoff. */
  attempts = 0;
  nextPacketId = 1;
  /** Number of the device's next telemetry message (its payload's seq), from 1, across reconnects. */
  nextSeq = 1;
  /** Highest command number received on its config topic (commands carry a seq of their own). */
  lastCommandSeq = 0;
  /** Scheduled time (ms, monotonic) of the next publish. */
  nextPublishAt = 0;
  readonly inflight: InflightWindow;
  /** When the current connection's CONNACK came (ms, monotonic). */
  connectedAt = 0;
  lifecycle: LifecycleValue = Lifecycle.NONE;
  /** Disconnected by churn (--churn): it dials again as soon as its connection has closed. */
  churned = false;
  /** Gone offline on purpose (a scenario's d.offline): it dials again this many ms after its connection has closed. */
  offlineMs = 0;
  /** When the renew or revoke began (for its latency). */
  lifecycleAt = 0;
  /** A renewed identity, used instead of the source's from then on. */
  renewed: { cert: string; key: string } | null = null;
  /** --topic-alias: the publish that sets the alias (topic + alias) and the one that uses it (alias only). */
  alias: { first: PublishTemplate; next: PublishTemplate } | null = null;

  /**
   * @param clientId client id = username = topic prefix: `tenant:id` until the device's
   *   certificate says otherwise (its CN, read at each dial)
   */
  constructor(
    readonly index: number,
    readonly id: string,
    public clientId: string,
    public publish: PublishTemplate,
    window = DEFAULT_INFLIGHT,
    keepInflight = false,
  ) {
    this.inflight = new InflightWindow(window, keepInflight);
  }

  packetId(): number {
    const id = this.nextPacketId;
    this.nextPacketId = id === 65535 ? 1 : id + 1;
    return id;
  }
}

/** One connection attempt of a device. Events from a Conn that is no longer `device.conn` are ignored. */
export class Conn {
  socket: Socket<Conn> | null = null;
  /** Inbound bytes of an incomplete packet: the first `rxLen` bytes of `rx`. */
  rx: Uint8Array | null = null;
  rxLen = 0;
  /** Queued outbound packets, written in one call per flush. */
  queue: Uint8Array[] = [];
  /** Bytes the socket did not take yet (waiting for drain). */
  pending: Uint8Array | null = null;
  dirty = false;
  dialAt = 0;
  tcpAt = 0;
  /** Over WebSocket: when the upgrade request went out (TCP and TLS done). */
  upgradeAt = 0;
  connectSentAt = 0;
  /** The SUBSCRIBE awaiting its SUBACK (0: none), and when it went. */
  subscribeSentAt = 0;
  subscribeId = 0;
  /** Further SUBSCRIBEs awaiting theirs, as [id, sentAt, …] (a scenario may subscribe to several topics at once). */
  moreSubscribes: number[] | null = null;
  lastRx = 0;
  lastTx = 0;
  pingOutstanding = false;
  pingSentAt = 0;
  /** Why we are closing it ourselves (timeout, protocol error, CONNACK refusal). */
  failReason: string | null = null;
  closed = false;
  /** Counted among the process's connects in flight (SwarmState.connecting) until it connects or ends. */
  connecting = false;
  /** Broker certificates verified for this target (null: no verification, --insecure or TCP). */
  pins: PinSet | null = null;
  /** Dialled without a CA store: the broker must present a pinned certificate. */
  pinned = false;
  /** MQTT over WebSocket: upgrade and framing state (null for TCP and TLS). */
  ws: WsState | null = null;
  /** TLS by cicada's own client (--tls-stack cicada); null: Bun's TLS, or none. */
  tls13: Tls13Client | null = null;
  /** The server's Receive Maximum (MQTT 5 CONNACK): QoS 1/2 publishes it takes unacknowledged. */
  sendMax = 65535;
  /**
   * Why the server would refuse every publish of this device (MQTT 5 CONNACK: over its Maximum
   * Packet Size, a QoS over its Maximum QoS, retain where it has none); null when it would not.
   * Such publishes are counted with this reason and never sent.
   */
  refusal: string | null = null;
  /** Keepalive in seconds: the client's, or the server's Server Keep Alive (MQTT 5 §3.2.2.3.14), which the client must use. */
  keepaliveS = 0;
  /** The server's Maximum Packet Size, Maximum QoS and Retain Available (MQTT 5 CONNACK; 0: no maximum). */
  maxPacketOut = 0;
  maxQoS = 2;
  retainAvailable = true;
  /** The server's Topic Alias Maximum (MQTT 5 CONNACK; 0: no aliases). */
  aliasMax = 0;
  /** The CONNACK said Session Present: the broker kept this device's session. */
  sessionPresent = false;
  /** The device's topic alias on this connection: 0 not set, 1 set (its first publish carried topic and alias), 2 used since. */
  aliasState = 0;

  constructor(
    readonly device: Device,
    readonly version: ProtocolVersion,
    readonly qos: QoS,
  ) {}
}
