// mqtt/ — the MQTT protocol: packets (codec.ts), what each inbound one means (here), per-device state (device.ts).
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The MQTT side of one device connection: what each inbound packet means and what goes back.
 * The engine owns sockets and timers; this file sees a connection only through SessionHost.
 */
import type { IConnackPacket, IPublishPacket, ISubackPacket, Packet } from "mqtt-packet";
import { Conn, State } from "./device.ts";
import type { Stats } from "../metrics/stats.ts";
import { claimedLength, CMD, decode, encodeAck, encodeSubscribe, frameLength, payloadStamp } from "./codec.ts";
import { connackReason, isFailure, NO_MATCHING_SUBSCRIBERS, reasonName } from "./reasons.ts";

export interface SessionHost {
  readonly stats: Stats;
  /** Largest inbound packet accepted, bytes (whole packet, header included). */
  readonly maxPacketSize: number;
  send(conn: Conn, bytes: Uint8Array): void;
  /** CONNACK accepted: start publishing and keepalive. */
  connected(conn: Conn, now: number): void;
  /** Ends the connection, counting `reason` against the row of the phase it is in. */
  drop(conn: Conn, reason: string): void;
  /** Monotonic ms to wall-clock ms (payload timestamps are wall clock). */
  wallClock(monotonic: number): number;
  /** A PUBLISH came for the device, after it was counted (a scenario's onMessage). */
  received?(conn: Conn, packet: IPublishPacket, now: number): void;
}

/**
 * Handles every whole packet in `bytes` (plus any partial packet kept from before).
 *
 * A partial packet is kept in `conn.rx`, sized once its Remaining Length is known, and later
 * reads are appended to it: every inbound byte is copied at most once more, however many reads
 * a large packet takes. A packet whose Remaining Length says it is over `host.maxPacketSize` ends
 * the connection as soon as its header arrives (MQTT 5 §3.1.2.11.4 lets a client refuse it).
 */
export function onData(host: SessionHost, conn: Conn, bytes: Uint8Array, now: number): void {
  conn.lastRx = now;
  let buf = bytes;
  if (conn.rx) {
    buf = appendRx(conn, bytes);
  }
  let off = 0;
  while (off < buf.length && !conn.closed) {
    // A plain PUBACK (most inbound traffic at QoS 1) is read in place, without a view on it.
    if (buf[off] === 0x40 && buf[off + 1] === 2 && off + 4 <= buf.length) {
      settle(host, conn, (buf[off + 2]! << 8) | buf[off + 3]!, now, undefined);
      off += 4;
      continue;
    }
    const len = frameLength(buf, off);
    if (len < 0) return protocolError(host, conn, "malformed_remaining_length");
    const need = len > 0 ? len : claimedLength(buf, off);
    if (need > host.maxPacketSize) return tooLarge(host, conn);
    if (len === 0) break;
    onFrame(host, conn, buf.subarray(off, off + len), now);
    off += len;
  }
  if (conn.closed) return;
  keepRx(conn, buf, off);
}

/** Appends `bytes` to the partial packet in `conn.rx`; returns the bytes held so far. */
function appendRx(conn: Conn, bytes: Uint8Array): Uint8Array {
  const held = conn.rxLen;
  const total = held + bytes.length;
  if (total > conn.rx!.length) {
    // Grow geometrically, so a packet of unknown length still costs linear time to gather.
    const grown = new Uint8Array(Math.max(total, conn.rx!.length * 2));
    grown.set(conn.rx!.subarray(0, held));
    conn.rx = grown;
  }
  conn.rx!.set(bytes, held);
  conn.rxLen = total;
  return conn.rx!.subarray(0, total);
}

/** Keeps `buf[off..]` (the start of a packet) for the next read. */
function keepRx(conn: Conn, buf: Uint8Array, off: number): void {
  const left = buf.length - off;
  if (left === 0) {
    conn.rx = null;
    conn.rxLen = 0;
    return;
  }
  if (conn.rx && buf.buffer === conn.rx.buffer) {
    // Already held: move the partial packet to the front only when whole packets were taken.
    if (off > 0) conn.rx.copyWithin(0, off, buf.length);
  } else {
    // Sized by what arrived, not by what the header claims: a broker cannot make every
    // connection reserve its maximum packet size by announcing large packets.
    conn.rx = new Uint8Array(Math.max(left * 2, 256));
    conn.rx.set(buf.subarray(off));
  }
  conn.rxLen = left;
}

function tooLarge(host: SessionHost, conn: Conn): void {
  conn.rx = null;
  conn.rxLen = 0;
  host.drop(conn, "packet_too_large");
}

function protocolError(host: SessionHost, conn: Conn, why: string): void {
  host.stats.health.protocol_errors++;
  host.drop(conn, `protocol_error:${why}`);
}

function onFrame(host: SessionHost, conn: Conn, frame: Uint8Array, now: number): void {
  const type = frame[0]! >> 4;
  // PUBACK is most of the inbound traffic: read it in place.
  if (type === CMD.PUBACK && frame[0] === 0x40 && frame.length >= 4) {
    const id = (frame[2]! << 8) | frame[3]!;
    const code = frame.length > 4 ? frame[4] : undefined;
    return settle(host, conn, id, now, code);
  }
  let packet: Packet;
  try {
    packet = decode(frame, conn.version);
  } catch (err) {
    return protocolError(host, conn, (err as Error).message.toLowerCase().replace(/[^a-z0-9]+/g, "_").slice(0, 40));
  }
  const dev = conn.device;
  switch (packet.cmd) {
    case "connack":
      return onConnack(host, conn, packet, now);
    case "suback":
      return onSuback(host, conn, packet, now);
    case "pubrec": {
      if (isFailure(packet.reasonCode)) return settle(host, conn, packet.messageId!, now, packet.reasonCode);
      dev.inflight.received(packet.messageId!);
      host.send(conn, encodeAck(CMD.PUBREL, packet.messageId!));
      return;
    }
    case "pubcomp":
      return settle(host, conn, packet.messageId!, now, packet.reasonCode);
    case "publish":
      return onPublish(host, conn, packet, now);
    case "pubrel":
      host.send(conn, encodeAck(CMD.PUBCOMP, packet.messageId!));
      return;
    case "pingresp":
      conn.pingOutstanding = false;
      return;
    case "disconnect":
      // Only MQTT 5 servers send DISCONNECT, saying why they close (§3.14.2.1).
      if (conn.version !== 5) return protocolError(host, conn, "unexpected_disconnect");
      return host.drop(conn, `server_disconnect:${packet.reasonCode ? reasonName(packet.reasonCode) : "normal_disconnection"}`);
    default:
      return protocolError(host, conn, `unexpected_${packet.cmd}`);
  }
}

function onConnack(host: SessionHost, conn: Conn, p: IConnackPacket, now: number): void {
  const dev = conn.device;
  if (dev.state !== State.CONNECTING) return protocolError(host, conn, "unexpected_connack");
  const code = conn.version === 5 ? (p.reasonCode ?? 0) : (p.returnCode ?? 0);
  if (code !== 0) return host.drop(conn, connackReason(code, conn.version));
  if (p.sessionPresent) {
    conn.sessionPresent = true;
    host.stats.health.sessions_resumed++;
  }
  const limits = conn.version === 5 ? p.properties : undefined;
  if (limits) {
    // The server's limits on what this client sends (§3.2.2.3.3–.8, .14).
    if (limits.receiveMaximum) conn.sendMax = limits.receiveMaximum;
    conn.aliasMax = limits.topicAliasMaximum ?? 0;
    if (limits.serverKeepAlive !== undefined) conn.keepaliveS = limits.serverKeepAlive;
    if (limits.maximumPacketSize) conn.maxPacketOut = limits.maximumPacketSize;
    if (limits.maximumQoS !== undefined) conn.maxQoS = limits.maximumQoS;
    if (limits.retainAvailable === false) conn.retainAvailable = false;
    const dev = conn.device;
    const largest = dev.alias ? Math.max(dev.publish.length, dev.alias.first.length) : dev.publish.length;
    if (conn.maxPacketOut && largest > conn.maxPacketOut) conn.refusal = "over_server_maximum_packet_size";
    else if (conn.qos > conn.maxQoS) conn.refusal = "qos_over_server_maximum";
    else if (!conn.retainAvailable && dev.publish.retain) conn.refusal = "retain_unavailable";
  }
  host.stats.phases.connack.recordMs(now - conn.connectSentAt);
  host.stats.rows.connect.ok(now - conn.dialAt);
  host.connected(conn, now);
}

/** Sends a SUBSCRIBE to `filter`; its SUBACK is counted in the subscribe row. */
export function subscribe(host: SessionHost, conn: Conn, filter: string, qos: 0 | 1 | 2, now: number): void {
  const id = conn.device.packetId();
  if (conn.subscribeId === 0) {
    conn.subscribeId = id;
    conn.subscribeSentAt = now;
  } else (conn.moreSubscribes ??= []).push(id, now);
  host.send(conn, encodeSubscribe(id, filter, qos, conn.version));
}

function onSuback(host: SessionHost, conn: Conn, p: ISubackPacket, now: number): void {
  let sentAt: number;
  if (p.messageId === conn.subscribeId && conn.subscribeId !== 0) {
    sentAt = conn.subscribeSentAt;
    conn.subscribeId = 0;
  } else {
    const more = conn.moreSubscribes;
    const k = more ? more.findIndex((v, i) => i % 2 === 0 && v === p.messageId) : -1;
    if (k < 0) return protocolError(host, conn, "unexpected_suback");
    sentAt = more![k + 1]!;
    more!.splice(k, 2);
  }
  const granted = p.granted[0];
  const code = typeof granted === "number" ? granted : 0x80;
  if (code >= 0x80) {
    host.stats.rows.subscribe.fail(conn.version === 5 ? reasonName(code) : "refused");
    return;
  }
  const ms = now - sentAt;
  host.stats.rows.subscribe.ok(ms);
  host.stats.phases.suback.recordMs(ms);
}

function onPublish(host: SessionHost, conn: Conn, p: IPublishPacket, now: number): void {
  const { timestamp: ts, seq } = payloadStamp(p.payload as Uint8Array);
  // Numbered commands (--actuate): a jump in a device's numbers is commands that never arrived.
  const dev = conn.device;
  if (Number.isFinite(seq)) {
    if (seq > dev.lastCommandSeq + 1) host.stats.health.command_gaps += seq - dev.lastCommandSeq - 1;
    if (seq > dev.lastCommandSeq) dev.lastCommandSeq = seq;
  }
  const row = host.stats.rows.recv_message;
  if (Number.isFinite(ts)) {
    const ms = Math.max(0, host.wallClock(now) - ts);
    row.ok(ms);
    host.stats.phases.e2e.recordMs(ms);
  } else row.ok();
  if (p.qos === 1) host.send(conn, encodeAck(CMD.PUBACK, p.messageId!));
  else if (p.qos === 2) host.send(conn, encodeAck(CMD.PUBREC, p.messageId!));
  host.received?.(conn, p, now);
}

/** A publish finished (PUBACK, PUBCOMP, or a refusal code): latency from its scheduled time. */
function settle(host: SessionHost, conn: Conn, id: number, now: number, code: number | undefined): void {
  const w = conn.device.inflight;
  if (!w.settle(id)) return; // late ack of a publish already counted (ack_timeout), or one never sent
  const scheduled = w.settledScheduled;
  const sent = w.settledSent;
  if (isFailure(code)) {
    host.stats.rows.publish.fail(reasonName(code!));
    return;
  }
  if (code === NO_MATCHING_SUBSCRIBERS) host.stats.health.no_matching_subscribers++;
  // The row measures from the scheduled time (coordinated omission); the phase from the write.
  host.stats.rows.publish.ok(now - scheduled);
  host.stats.phases.puback.recordMs(now - sent);
}
