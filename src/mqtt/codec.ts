/**
 * MQTT 3.1.1 / 5 wire format for the swarm. Cold packets (CONNECT, SUBSCRIBE, DISCONNECT) are
 * made by mqtt-packet's generate(); PUBLISH is patched into a per-device template (header and
 * topic encoded once); inbound bytes are cut into whole packets here and decoded by one shared
 * mqtt-packet parser per protocol version, so no parser lives per connection.
 */
import * as mqtt from "mqtt-packet";

// mqtt-packet otherwise fills a cache of 65,536 two-byte Buffers (one per message id) on its
// first generate(): 3.3 MB of JS heap in every process, for packets cicada makes once a connect.
mqtt.writeToStream.cacheNumbers = false;

export type ProtocolVersion = 4 | 5;
export type QoS = 0 | 1 | 2;

/** Control packet types (MQTT 3.1.1 §2.2.1). */
export const CMD = { CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7, SUBACK: 9, PINGRESP: 13, DISCONNECT: 14, AUTH: 15 } as const;

/**
 * Length of the whole packet that starts at `off` in `buf`: > 0 when complete, 0 when more bytes
 * are needed, -1 when the Remaining Length is malformed (more than 4 bytes, §2.2.3).
 */
export function frameLength(buf: Uint8Array, off: number): number {
  let mult = 1;
  let len = 0;
  for (let i = 1; i <= 4; i++) {
    if (off + i >= buf.length) return 0;
    const b = buf[off + i]!;
    len += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) {
      const total = 1 + i + len;
      return off + total <= buf.length ? total : 0;
    }
    mult *= 128;
  }
  return -1;
}

/**
 * Length the packet at `off` claims to have, as far as its header has arrived: 0 until a
 * Remaining Length byte is there; a lower bound while that field is still incomplete.
 */
export function claimedLength(buf: Uint8Array, off: number): number {
  let mult = 1;
  let len = 0;
  for (let i = 1; i <= 4 && off + i < buf.length; i++) {
    const b = buf[off + i]!;
    len += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) return 1 + i + len;
    mult *= 128;
  }
  return 0;
}

let decoded: mqtt.Packet | null = null;
let decodeError: Error | null = null;
function sharedParser(version: ProtocolVersion): mqtt.Parser {
  const p = mqtt.parser({ protocolVersion: version });
  p.on("packet", (packet) => (decoded = packet));
  p.on("error", (err) => (decodeError = err));
  return p;
}
const parsers: Record<ProtocolVersion, mqtt.Parser> = { 4: sharedParser(4), 5: sharedParser(5) };

/** Decodes one whole packet (as cut by frameLength). Throws on malformed input. */
export function decode(frame: Uint8Array, version: ProtocolVersion): mqtt.Packet {
  decoded = null;
  decodeError = null;
  const parser = parsers[version];
  let left: number;
  try {
    left = parser.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
  } catch (err) {
    // Some malformed input makes mqtt-packet throw rather than emit "error".
    decodeError = err instanceof Error ? err : new Error(String(err));
    left = 0;
  }
  if (decodeError || !decoded || left > 0) {
    // The parser is shared by every connection: replace it, as mqtt-packet's own reset does not
    // always return it to a clean state after an error.
    parsers[version] = sharedParser(version);
    throw decodeError ?? new Error(decoded ? "packet shorter than its remaining length" : "incomplete packet");
  }
  return decoded;
}

/** Clean or persistent sessions: MQTT 3.1.1's Clean Session flag, MQTT 5's Clean Start with Session Expiry Interval. */
export interface MqttSession {
  clean: boolean;
  /** MQTT 5: seconds the broker keeps the session after the connection ends (0: it ends with it). */
  expiryS: number;
}

export const CLEAN_SESSION: MqttSession = { clean: true, expiryS: 0 };

/** CONNECT; MQTT 5 also tells the server the largest packet this client takes (§3.1.2.11.4). */
export function encodeConnect(clientId: string, keepalive: number, version: ProtocolVersion, maxPacketSize?: number, session: MqttSession = CLEAN_SESSION): Buffer {
  const props: mqtt.IConnectPacket["properties"] = {};
  if (version === 5 && maxPacketSize) props.maximumPacketSize = maxPacketSize;
  if (version === 5 && session.expiryS > 0) props.sessionExpiryInterval = session.expiryS;
  const properties = version === 5 && Object.keys(props).length ? { properties: props } : {};
  return mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: version, clientId, clean: session.clean, keepalive, ...properties }, { protocolVersion: version });
}

export function encodeSubscribe(messageId: number, topic: string, qos: QoS, version: ProtocolVersion): Buffer {
  return mqtt.generate({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] }, { protocolVersion: version });
}

/** MQTT 5 properties of one publish (a scenario's request/response and metadata). */
export interface OnePublishProperties extends PublishProperties {
  responseTopic?: string;
  correlationData?: Uint8Array;
}

const utf8 = new TextEncoder();

/**
 * One PUBLISH with its payload (a scenario's publish). Without properties it is written here in
 * one allocation; with MQTT 5 properties mqtt-packet encodes it.
 */
export function encodePublish(topic: string, payload: Uint8Array, qos: QoS, retain: boolean, messageId: number, version: ProtocolVersion, properties?: OnePublishProperties): Uint8Array {
  if (properties && version === 5) {
    const { correlationData, ...rest } = properties;
    const props = { ...rest, ...(correlationData ? { correlationData: Buffer.from(correlationData) } : {}) };
    return mqtt.generate({ cmd: "publish", topic, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), qos, retain, dup: false, ...(qos ? { messageId } : {}), properties: props }, { protocolVersion: version });
  }
  const topicLen = Buffer.byteLength(topic);
  if (topicLen > 65535) throw new Error("topic longer than 65535 bytes");
  const remaining = 2 + topicLen + (qos > 0 ? 2 : 0) + (version === 5 ? 1 : 0) + payload.length;
  if (remaining > 268_435_455) throw new Error("packet over MQTT's 256 MiB limit");
  let lenBytes = 1;
  for (let r = remaining; r >= 128; r = Math.floor(r / 128)) lenBytes++;
  const out = new Uint8Array(1 + lenBytes + remaining);
  out[0] = 0x30 | (qos << 1) | (retain ? 1 : 0);
  let at = 1;
  for (let r = remaining; ; ) {
    const b = r % 128;
    r = Math.floor(r / 128);
    out[at++] = r > 0 ? b | 0x80 : b;
    if (r === 0) break;
  }
  out[at++] = topicLen >> 8;
  out[at++] = topicLen & 0xff;
  at += utf8.encodeInto(topic, out.subarray(at)).written;
  if (qos > 0) {
    out[at++] = messageId >> 8;
    out[at++] = messageId & 0xff;
  }
  if (version === 5) out[at++] = 0; // no properties
  out.set(payload, at);
  return out;
}

export function encodeDisconnect(version: ProtocolVersion): Buffer {
  return mqtt.generate({ cmd: "disconnect" }, { protocolVersion: version });
}

export const PINGREQ = new Uint8Array([0xc0, 0x00]);

/** PUBACK/PUBREC/PUBREL/PUBCOMP with success: 4 bytes in both versions (v5 §3.4.2.1 omits reason 0). */
export function encodeAck(cmd: 4 | 5 | 6 | 7, messageId: number): Uint8Array {
  return new Uint8Array([(cmd << 4) | (cmd === CMD.PUBREL ? 0x02 : 0), 2, messageId >> 8, messageId & 0xff]);
}

const TIMESTAMP_DIGITS = 13;
const PAYLOAD_HEAD = '{"timestamp":';
const SEQ_HEAD = ',"seq":';
/** The seq field's width: its digits, then spaces (JSON allows whitespace after a number; leading zeros it does not). */
const SEQ_WIDTH = 10;
/** {seq} in a topic: zero-padded to this many digits (a topic cannot hold padding spaces). */
const TOPIC_SEQ_WIDTH = 10;
const ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789";

/** A part of the PUBLISH written afresh for every message, at a fixed offset and width. */
interface Field {
  at: number;
  width: number;
  kind: 0 | 1 | 2 | 3 | 4 | 5;
  lo: number;
  hi: number;
}
const F = { TIMESTAMP: 0, SEQ: 1, SEQ_ZEROS: 2, RAND: 3, RAND_ZEROS: 4, STRING: 5 } as const;

/** The per-message placeholders a topic or payload template may hold. */
const PLACEHOLDER = /\{(timestamp|seq|rand:(-?\d+)\.\.(-?\d+)|rand:(\d+)|string:(\d+))\}/g;

/**
 * Parses a template's per-message placeholders: in a payload {timestamp}, {seq},
 * {rand:a..b} (an integer, padded with spaces) and {string:N} (N random letters and digits);
 * in a topic {seq} and {rand:N} (0..N-1), zero-padded. Returns the text with each placeholder
 * replaced by filler of its width, and the fields (offsets in bytes from the text's start), or
 * the problem with it.
 */
export function compileTemplate(text: string, where: "topic" | "payload"): { text: string; fields: Field[] } | string {
  const fields: Field[] = [];
  let out = "";
  let last = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    out += text.slice(last, m.index);
    last = m.index! + m[0].length;
    let f: Omit<Field, "at">;
    if (m[1] === "timestamp") f = { kind: F.TIMESTAMP, width: TIMESTAMP_DIGITS, lo: 0, hi: 0 };
    else if (m[1] === "seq") f = where === "topic" ? { kind: F.SEQ_ZEROS, width: TOPIC_SEQ_WIDTH, lo: 0, hi: 0 } : { kind: F.SEQ, width: SEQ_WIDTH, lo: 0, hi: 0 };
    else if (m[2] !== undefined) {
      const lo = Number(m[2]);
      const hi = Number(m[3]);
      if (!(hi >= lo) || !Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) return `${m[0]}: needs integers a <= b`;
      f = { kind: F.RAND, width: Math.max(String(lo).length, String(hi).length), lo, hi };
    } else if (m[4] !== undefined) {
      const n = Number(m[4]);
      if (!(n >= 1 && n <= 1e9)) return `${m[0]}: N must be from 1 to 1000000000`;
      f = { kind: F.RAND_ZEROS, width: String(n - 1).length, lo: 0, hi: n - 1 };
    } else {
      const n = Number(m[5]);
      if (!(n >= 1 && n <= 1024 * 1024)) return `${m[0]}: N must be from 1 to 1048576`;
      f = { kind: F.STRING, width: n, lo: 0, hi: 0 };
    }
    if (where === "topic" && (f.kind === F.TIMESTAMP || f.kind === F.RAND || f.kind === F.STRING)) return `${m[0]} is for payloads; a topic takes {seq} and {rand:N}`;
    if (where === "payload" && f.kind === F.RAND_ZEROS) return `${m[0]} is for topics; a payload takes {rand:a..b}`;
    fields.push({ ...f, at: Buffer.byteLength(out) });
    out += "0".repeat(f.width);
  }
  out += text.slice(last);
  // A JSON object's braces hold quotes or spaces; a placeholder is a bare word.
  const stray = /\{[a-z_]+(?::[^}"]*)?\}/i.exec(out);
  if (stray) return `unknown placeholder ${stray[0]}`;
  return { text: out, fields };
}

/** MQTT 5 properties every publish carries (--user-property, --message-expiry, --content-type). */
export interface PublishProperties {
  userProperties?: Record<string, string[]>;
  messageExpiryInterval?: number;
  contentType?: string;
}

export interface PublishOptions {
  /** A payload template (compileTemplate); default `{"timestamp":…,"seq":…}` padded to payloadSize. */
  payload?: string;
  retain?: boolean;
  /** MQTT 5 only. */
  properties?: PublishProperties;
  /** MQTT 5: the Topic Alias property (§3.3.2.3.4); with an empty topic, the alias alone names it. */
  topicAlias?: number;
}

/**
 * A device's telemetry PUBLISH, encoded once: by default `{"timestamp":<ms>,"seq":<n>}` padded
 * to `payloadSize`, or the payload template given. `seq` numbers the device's messages from 1,
 * so a consumer can count loss, duplicates and order (dojot ignores attributes it does not
 * know). `fill()` writes the packet id and each per-message field (timestamp, seq, random
 * parts) into a fresh copy; nothing else is encoded per message.
 */
export class PublishTemplate {
  private readonly bytes: Uint8Array;
  private readonly idAt: number;
  private readonly fields: Field[];
  /** The topic holds per-message parts ({seq}, {rand:N}): no alias can stand for it. */
  readonly topicVaries: boolean;
  readonly retain: boolean;

  /** @param topic the device's topic, which may still hold {seq} and {rand:N} (see compileTemplate; a bad one throws) */
  constructor(topic: string, qos: QoS, version: ProtocolVersion, payloadSize: number, opts: PublishOptions = {}) {
    let payloadText: string;
    let payloadFields: Field[];
    if (opts.payload === undefined) {
      const head = `${PAYLOAD_HEAD}${"0".repeat(TIMESTAMP_DIGITS)}${SEQ_HEAD}${"0".padEnd(SEQ_WIDTH)}`;
      const padding = Math.max(0, payloadSize - (head.length + 1));
      // The padding is a JSON string field so the payload stays valid JSON.
      payloadText = `${head}${padding > 0 ? `,"pad":"${"x".repeat(Math.max(0, padding - 9))}"}` : "}"}`;
      payloadFields = [
        { kind: F.TIMESTAMP, at: PAYLOAD_HEAD.length, width: TIMESTAMP_DIGITS, lo: 0, hi: 0 },
        { kind: F.SEQ, at: PAYLOAD_HEAD.length + TIMESTAMP_DIGITS + SEQ_HEAD.length, width: SEQ_WIDTH, lo: 0, hi: 0 },
      ];
    } else {
      const c = compileTemplate(opts.payload, "payload");
      if (typeof c === "string") throw new Error(`payload template: ${c}`);
      payloadText = c.text;
      payloadFields = c.fields;
    }
    const t = compileTemplate(topic, "topic");
    if (typeof t === "string") throw new Error(`topic template: ${t}`);
    const payload = Buffer.from(payloadText);
    const properties = version === 5 ? { properties: { ...opts.properties, ...(opts.topicAlias ? { topicAlias: opts.topicAlias } : {}) } } : {};
    const packet = mqtt.generate({ cmd: "publish", topic: t.text, payload, qos, retain: opts.retain ?? false, dup: false, messageId: qos ? 1 : undefined, ...properties }, { protocolVersion: version });
    this.bytes = new Uint8Array(packet);
    let header = 1;
    while (this.bytes[header]! & 0x80) header++;
    const topicAt = header + 1 + 2;
    const payloadAt = this.bytes.length - payload.length;
    this.fields = [...t.fields.map((f) => ({ ...f, at: topicAt + f.at })), ...payloadFields.map((f) => ({ ...f, at: payloadAt + f.at }))];
    this.idAt = qos ? topicAt + Buffer.byteLength(t.text) : -1;
    this.topicVaries = t.fields.length > 0;
    this.retain = opts.retain ?? false;
  }

  get length(): number {
    return this.bytes.length;
  }

  /** Copies the packet into `out` at `at` with this id, timestamp and seq, and fresh random parts; returns bytes written. */
  fill(out: Uint8Array, at: number, messageId: number, timestampMs: number, seq = 0): number {
    out.set(this.bytes, at);
    if (this.idAt >= 0) {
      out[at + this.idAt] = messageId >> 8;
      out[at + this.idAt + 1] = messageId & 0xff;
    }
    const fields = this.fields;
    for (let k = 0; k < fields.length; k++) {
      const f = fields[k]!;
      const p = at + f.at;
      switch (f.kind) {
        case F.TIMESTAMP:
          writeDigits(out, p, f.width, timestampMs, 48);
          break;
        case F.SEQ:
          writeLeft(out, p, f.width, seq);
          break;
        case F.SEQ_ZEROS:
          writeDigits(out, p, f.width, seq, 48);
          break;
        case F.RAND:
          writeLeft(out, p, f.width, f.lo + Math.floor(Math.random() * (f.hi - f.lo + 1)));
          break;
        case F.RAND_ZEROS:
          writeDigits(out, p, f.width, Math.floor(Math.random() * (f.hi + 1)), 48);
          break;
        case F.STRING:
          for (let i = 0; i < f.width; i++) out[p + i] = ALNUM.charCodeAt(Math.floor(Math.random() * ALNUM.length));
          break;
      }
    }
    return this.bytes.length;
  }
}

/** `n` (>= 0) in exactly `width` digits, the unused high ones filled with `pad` (48: zeros). */
function writeDigits(out: Uint8Array, p: number, width: number, n: number, pad: number): void {
  let v = n;
  for (let i = width - 1; i >= 0; i--) {
    out[p + i] = v > 0 || i === width - 1 ? 48 + (v % 10) : pad;
    v = Math.floor(v / 10);
  }
}

/** An integer left-aligned in `width` bytes: its digits (and sign), then spaces. */
function writeLeft(out: Uint8Array, p: number, width: number, n: number): void {
  let i = 0;
  let v = n;
  if (v < 0) {
    out[p + i++] = 45;
    v = -v;
  }
  let digits = 1;
  for (let x = v; x >= 10; x = Math.floor(x / 10)) digits++;
  for (let d = digits - 1, x = v; d >= 0; d--, x = Math.floor(x / 10)) out[p + i + d] = 48 + (x % 10);
  for (i += digits; i < width; i++) out[p + i] = 32;
}

/** The `"timestamp": <ms>` and `"seq": <n>` of a JSON payload, found without JSON.parse in one pass over its text (NaN where absent). */
export function payloadStamp(payload: Uint8Array): { timestamp: number; seq: number } {
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("latin1");
  const ts = /"timestamp"\s*:\s*(\d{1,16})/.exec(text);
  const seq = /"seq"\s*:\s*(\d{1,15})/.exec(text);
  return { timestamp: ts ? Number(ts[1]) : NaN, seq: seq ? Number(seq[1]) : NaN };
}
