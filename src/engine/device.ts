/** Per-device and per-connection state: small fixed-shape objects, no closures or emitters. */
import type { Socket } from "bun";
import type { ProtocolVersion, PublishTemplate, QoS } from "../mqtt/codec.ts";
import type { PinSet } from "../transport/pins.ts";

export const State = {
  IDLE: 0,
  DIALING: 1,
  CONNECTING: 2,
  CONNECTED: 3,
  WAITING: 4,
  STOPPING: 5,
} as const;
export type StateValue = (typeof State)[keyof typeof State];

/** Timer kinds in the scheduler wheel. */
export const Timer = { PUBLISH: 0, KEEPALIVE: 1, TIMEOUT: 2, RECONNECT: 3 } as const;
export const TIMER_KINDS = 4;

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

/** In-flight publishes tracked per device; a device publishes every ~30 s, so a few suffice. */
export const INFLIGHT = 8;

export class Device {
  state: StateValue = State.IDLE;
  conn: Conn | null = null;
  /** Consecutive failed attempts, for the reconnect backoff. */
  attempts = 0;
  nextPacketId = 1;
  /** Scheduled time (ms, monotonic) of the next publish. */
  nextPublishAt = 0;
  readonly inflightId = new Uint16Array(INFLIGHT);
  /** Scheduled send time of each in-flight publish (NaN when the slot is free). */
  readonly inflightAt = new Float64Array(INFLIGHT).fill(NaN);
  /** When each in-flight publish was actually handed to the socket. */
  readonly inflightSentAt = new Float64Array(INFLIGHT);
  /** QoS 2 publishes whose PUBREC came (PUBREL sent). */
  readonly inflightReleased = new Uint8Array(INFLIGHT);
  /** When the current connection's CONNACK came (ms, monotonic). */
  connectedAt = 0;
  lifecycle: LifecycleValue = Lifecycle.NONE;
  /** When the renew or revoke began (for its latency). */
  lifecycleAt = 0;
  /** A renewed identity, used instead of the source's from then on. */
  renewed: { cert: string; key: string } | null = null;

  /**
   * @param clientId client id = username = topic prefix: `tenant:id` until the device's
   *   certificate says otherwise (its CN, read at each dial)
   */
  constructor(
    readonly index: number,
    readonly id: string,
    public clientId: string,
    public publish: PublishTemplate,
  ) {}

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
  connectSentAt = 0;
  subscribeSentAt = 0;
  subscribeId = 0;
  lastRx = 0;
  lastTx = 0;
  pingOutstanding = false;
  /** Why we are closing it ourselves (timeout, protocol error, CONNACK refusal). */
  failReason: string | null = null;
  closed = false;
  /** Broker certificates verified for this target (null: no verification, --insecure or TCP). */
  pins: PinSet | null = null;
  /** Dialled without a CA store: the broker must present a pinned certificate. */
  pinned = false;

  constructor(
    readonly device: Device,
    readonly version: ProtocolVersion,
    readonly qos: QoS,
  ) {}
}
