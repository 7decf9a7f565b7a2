/**
 * What transport needs of a connection's state, whoever owns it (the swarm's devices, see
 * mqtt/device.ts): the socket, the write queue and the broker-certificate pins. Transport
 * knows nothing of devices or MQTT.
 */
import type { Socket } from "bun";
import type { PinSet } from "./pins.ts";
import type { WsState } from "./ws.ts";
import type { Tls13Client } from "./tls13.ts";

export interface Link {
  socket: Socket<Link> | null;
  /** Queued outbound packets, written in one call per flush. */
  queue: Uint8Array[];
  /** Bytes the socket did not take yet (waiting for drain). */
  pending: Uint8Array | null;
  dirty: boolean;
  lastTx: number;
  /** Why we are closing it ourselves (timeout, protocol error, CONNACK refusal). */
  failReason: string | null;
  closed: boolean;
  /** Broker certificates verified for this target (null: no verification). */
  pins: PinSet | null;
  /** Dialled without a CA store: the broker must present a pinned certificate. */
  pinned: boolean;
  /** MQTT over WebSocket: the upgrade and framing state (null: MQTT straight on the socket). */
  ws: WsState | null;
  /** TLS by cicada's own client (--tls-stack cicada) over a plain socket; null: Bun's TLS, or none. */
  tls13: Tls13Client | null;
}
