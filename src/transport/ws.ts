/**
 * MQTT over WebSocket (MQTT 5 §6, RFC 6455), client side, on the same Bun.connect sockets as
 * TCP and TLS: an HTTP Upgrade once the socket is ready, then every outbound write is one
 * masked binary frame and inbound frames are unwrapped into the MQTT byte stream.
 *
 * Written here rather than taken from Bun's WebSocket client, which does take client
 * certificates, because that client cannot bind a source address (--source-address, needed
 * past ~28,000 connections to one broker address), shows no broker certificate for the pin
 * check (pins.ts), and is an object with its own listeners per connection; the client half of
 * the framing is small. The inbound side is a stream: a frame's payload is handed on as its
 * bytes arrive, whatever the frame boundaries, since MQTT packets may span frames anyway.
 */
import { createHash, randomBytes } from "node:crypto";

/** Where the WebSocket endpoint is: the request path and the Host header. */
export interface WsEndpoint {
  path: string;
  host: string;
  /** The subprotocol offered (MQTT's is "mqtt", §6); none when absent. */
  protocol?: string;
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HEAD_END = 0x0d0a0d0a; // \r\n\r\n
/** The upgrade response may not run past this (a server that answers with a page is not a WebSocket). */
const MAX_RESPONSE_HEAD = 8192;

const OP = { CONTINUATION: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const;

/** Per-connection WebSocket state: upgrade, then the header of the frame being read. */
export class WsState {
  /** false until the server's 101 came and checked out. */
  open = false;
  /** Sec-WebSocket-Key sent, and the accept value it requires back. */
  private readonly accept: string;
  private readonly protocol: string | undefined;
  readonly request: Uint8Array;
  /** Upgrade response bytes so far, or a partial frame header (at most 14 bytes). */
  private held: Uint8Array | null = null;
  /** Payload bytes of the current frame still to come. */
  private left = 0;
  /** The current frame is control (ping/close) or text: its payload is gathered, not passed on. */
  private control = -1;
  private controlBuf: Uint8Array | null = null;
  private controlAt = 0;

  constructor(endpoint: WsEndpoint) {
    const key = randomBytes(16).toString("base64");
    this.accept = createHash("sha1").update(key + GUID).digest("base64");
    this.protocol = endpoint.protocol;
    const offer = endpoint.protocol ? `Sec-WebSocket-Protocol: ${endpoint.protocol}\r\n` : "";
    this.request = Buffer.from(
      `GET ${endpoint.path} HTTP/1.1\r\nHost: ${endpoint.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${offer}\r\n`,
    );
  }

  /**
   * Reads the upgrade response from `bytes`. Returns the bytes after it (frames that came in the
   * same read), null while it is incomplete; throws with the reason when the server refused.
   */
  upgrade(bytes: Uint8Array): Uint8Array | null {
    const buf = this.held ? Buffer.concat([this.held, bytes]) : bytes;
    let end = -1;
    for (let i = 3; i < buf.length; i++) {
      if (((buf[i - 3]! << 24) | (buf[i - 2]! << 16) | (buf[i - 1]! << 8) | buf[i]!) >>> 0 === HEAD_END) {
        end = i + 1;
        break;
      }
    }
    if (end < 0) {
      if (buf.length > MAX_RESPONSE_HEAD) throw new Error("ws_bad_upgrade_response");
      this.held = buf.slice();
      return null;
    }
    this.held = null;
    const head = Buffer.from(buf.buffer, buf.byteOffset, end).toString("latin1").split("\r\n");
    const status = /^HTTP\/1\.1 (\d{3})/.exec(head[0] ?? "");
    if (!status) throw new Error("ws_bad_upgrade_response");
    if (status[1] !== "101") throw new Error(`ws_upgrade_refused_${status[1]}`);
    const fields = new Map<string, string>();
    for (const line of head.slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    // RFC 6455 §4.1: without these the server did not switch to WebSocket, whatever its status line says.
    if (fields.get("upgrade")?.toLowerCase() !== "websocket" || !/\bupgrade\b/i.test(fields.get("connection") ?? "")) throw new Error("ws_not_upgraded");
    if (fields.get("sec-websocket-accept") !== this.accept) throw new Error("ws_bad_accept");
    // RFC 6455 §4.1: a subprotocol the client did not offer fails the connection.
    const proto = fields.get("sec-websocket-protocol");
    if (proto !== undefined && proto !== this.protocol) throw new Error("ws_bad_subprotocol");
    this.open = true;
    return buf.subarray(end);
  }

  /**
   * Unwraps frames from `bytes`: calls `data` with each run of binary payload, `reply` with a
   * frame to send back (pong to a ping). Throws with the reason on a close frame or a protocol
   * error (a masked or oversized server frame).
   */
  unwrap(bytes: Uint8Array, data: (payload: Uint8Array) => void, reply: (frame: Uint8Array) => void): void {
    let buf = bytes;
    if (this.held) {
      buf = Buffer.concat([this.held, bytes]);
      this.held = null;
    }
    let off = 0;
    while (off < buf.length) {
      if (this.left > 0) {
        const n = Math.min(this.left, buf.length - off);
        const part = buf.subarray(off, off + n);
        if (this.control < 0) data(part);
        else this.gather(part);
        this.left -= n;
        off += n;
        if (this.left === 0 && this.control >= 0) this.controlDone(reply);
        continue;
      }
      // A frame header: 2 bytes, then 0, 2 or 8 of length (server frames are never masked, §5.1).
      if (buf.length - off < 2) break;
      const b0 = buf[off]!;
      const b1 = buf[off + 1]!;
      if (b1 & 0x80) throw new Error("ws_masked_server_frame");
      // No extension was negotiated, so the reserved bits must be clear (§5.2).
      if (b0 & 0x70) throw new Error("ws_reserved_bits");
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) head = 4;
      else if (len === 127) head = 10;
      if (buf.length - off < head) break;
      if (len === 126) len = (buf[off + 2]! << 8) | buf[off + 3]!;
      else if (len === 127) {
        const hi = (buf[off + 2]! << 24) | (buf[off + 3]! << 16) | (buf[off + 4]! << 8) | buf[off + 5]!;
        if (hi !== 0) throw new Error("ws_frame_too_large");
        len = ((buf[off + 6]! << 24) >>> 0) + ((buf[off + 7]! << 16) | (buf[off + 8]! << 8) | buf[off + 9]!);
      }
      off += head;
      const op = b0 & 0x0f;
      if (op === OP.BINARY || op === OP.CONTINUATION) this.control = -1;
      else if (op === OP.CLOSE || op === OP.PING || op === OP.PONG) {
        if (len > 125) throw new Error("ws_bad_control_frame");
        this.control = op;
        this.controlBuf = new Uint8Array(len);
        this.controlAt = 0;
      } else throw new Error(op === OP.TEXT ? "ws_text_frame" : "ws_bad_opcode");
      this.left = len;
      if (len === 0 && this.control >= 0) this.controlDone(reply);
    }
    if (off < buf.length) this.held = buf.slice(off);
  }

  private gather(part: Uint8Array): void {
    this.controlBuf!.set(part, this.controlAt);
    this.controlAt += part.length;
  }

  private controlDone(reply: (frame: Uint8Array) => void): void {
    const op = this.control;
    const payload = this.controlBuf!;
    this.control = -1;
    this.controlBuf = null;
    if (op === OP.PING) reply(wsFrame(payload, OP.PONG));
    else if (op === OP.CLOSE) throw new Error(payload.length >= 2 ? `ws_closed_${(payload[0]! << 8) | payload[1]!}` : "ws_closed");
  }
}

/** One masked client frame (§5.3) holding `payload` (a binary frame by default). */
export function wsFrame(payload: Uint8Array, op: number = OP.BINARY): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = new Uint8Array(head + 4 + n);
  out[0] = 0x80 | op;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) {
    out[1] = 0x80 | 126;
    out[2] = n >> 8;
    out[3] = n & 0xff;
  } else {
    out[1] = 0x80 | 127;
    // Lengths past 2^32 are not written by this client (a packet is at most 256 MiB).
    out[6] = (n >>> 24) & 0xff;
    out[7] = (n >> 16) & 0xff;
    out[8] = (n >> 8) & 0xff;
    out[9] = n & 0xff;
  }
  // The mask keeps a browser script's chosen bytes off the wire for proxies' sake (§10.3); it
  // need not be secret here, so Math.random serves.
  const key = (Math.random() * 0x100000000) >>> 0;
  const k0 = key >>> 24;
  const k1 = (key >> 16) & 0xff;
  const k2 = (key >> 8) & 0xff;
  const k3 = key & 0xff;
  out[head] = k0;
  out[head + 1] = k1;
  out[head + 2] = k2;
  out[head + 3] = k3;
  const at = head + 4;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    out[at + i] = payload[i]! ^ k0;
    out[at + i + 1] = payload[i + 1]! ^ k1;
    out[at + i + 2] = payload[i + 2]! ^ k2;
    out[at + i + 3] = payload[i + 3]! ^ k3;
  }
  const ks = [k0, k1, k2, k3];
  for (; i < n; i++) out[at + i] = payload[i]! ^ ks[i & 3]!;
  return out;
}
