/**
 * MQTT 3.1.1 / 5 wire format for the swarm. Cold packets (CONNECT, SUBSCRIBE, DISCONNECT) are
 * made by mqtt-packet's generate(); PUBLISH is patched into a per-device template (header and
 * topic encoded once); inbound bytes are cut into whole packets here and decoded by one shared
 * mqtt-packet parser per protocol version, so no parser lives per connection.
 */
import * as mqtt from "mqtt-packet";

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

/** CONNECT; MQTT 5 also tells the server the largest packet this client takes (§3.1.2.11.4). */
export function encodeConnect(clientId: string, keepalive: number, version: ProtocolVersion, maxPacketSize?: number): Buffer {
  const properties = version === 5 && maxPacketSize ? { properties: { maximumPacketSize: maxPacketSize } } : {};
  return mqtt.generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: version, clientId, clean: true, keepalive, ...properties }, { protocolVersion: version });
}

export function encodeSubscribe(messageId: number, topic: string, qos: QoS, version: ProtocolVersion): Buffer {
  return mqtt.generate({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] }, { protocolVersion: version });
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

/**
 * A device's telemetry PUBLISH, encoded once: `{"timestamp":<ms>,"seq":<n>}` padded to
 * `payloadSize`. `seq` numbers the device's messages from 1, so a consumer can count loss,
 * duplicates and order (dojot ignores attributes it does not know). `fill()` writes the packet
 * id, timestamp and seq into a fresh copy; nothing else is encoded per message.
 */
export class PublishTemplate {
  private readonly bytes: Uint8Array;
  private readonly idAt: number;
  private readonly tsAt: number;
  private readonly seqAt: number;

  constructor(topic: string, qos: QoS, version: ProtocolVersion, payloadSize: number) {
    const head = `${PAYLOAD_HEAD}${"0".repeat(TIMESTAMP_DIGITS)}${SEQ_HEAD}${"0".padEnd(SEQ_WIDTH)}`;
    const padding = Math.max(0, payloadSize - (head.length + 1));
    // The padding is a JSON string field so the payload stays valid JSON.
    const tail = padding > 0 ? `,"pad":"${"x".repeat(Math.max(0, padding - 9))}"}` : "}";
    const payload = Buffer.from(`${head}${tail}`);
    const packet = mqtt.generate(
      { cmd: "publish", topic, payload, qos, retain: false, dup: false, messageId: qos ? 1 : undefined, ...(version === 5 ? { properties: {} } : {}) },
      { protocolVersion: version },
    );
    this.bytes = new Uint8Array(packet);
    this.tsAt = this.bytes.length - payload.length + PAYLOAD_HEAD.length;
    this.seqAt = this.tsAt + TIMESTAMP_DIGITS + SEQ_HEAD.length;
    this.idAt = qos ? this.tsAt - PAYLOAD_HEAD.length - (version === 5 ? 1 : 0) - 2 : -1;
  }

  get length(): number {
    return this.bytes.length;
  }

  /** Copies the packet into `out` at `at` with this id, timestamp and seq; returns bytes written. */
  fill(out: Uint8Array, at: number, messageId: number, timestampMs: number, seq = 0): number {
    out.set(this.bytes, at);
    if (this.idAt >= 0) {
      out[at + this.idAt] = messageId >> 8;
      out[at + this.idAt + 1] = messageId & 0xff;
    }
    let ts = timestampMs;
    for (let i = TIMESTAMP_DIGITS - 1; i >= 0; i--) {
      out[at + this.tsAt + i] = 48 + (ts % 10);
      ts = Math.floor(ts / 10);
    }
    // seq, left-aligned: its digits, then the template's spaces.
    let digits = 1;
    for (let n = seq; n >= 10; n = Math.floor(n / 10)) digits++;
    for (let i = digits - 1, n = seq; i >= 0; i--, n = Math.floor(n / 10)) out[at + this.seqAt + i] = 48 + (n % 10);
    for (let i = digits; i < SEQ_WIDTH; i++) out[at + this.seqAt + i] = 32;
    return this.bytes.length;
  }
}

/** The `"timestamp": <ms>` and `"seq": <n>` of a JSON payload, found without JSON.parse in one pass over its text (NaN where absent). */
export function payloadStamp(payload: Uint8Array): { timestamp: number; seq: number } {
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString("latin1");
  const ts = /"timestamp"\s*:\s*(\d{1,16})/.exec(text);
  const seq = /"seq"\s*:\s*(\d{1,15})/.exec(text);
  return { timestamp: ts ? Number(ts[1]) : NaN, seq: seq ? Number(seq[1]) : NaN };
}
