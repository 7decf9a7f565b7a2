/** WebSocket framing, client side: the upgrade, frames split anywhere, control frames and refusals. */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { WsState, wsFrame } from "../../src/transport/ws.ts";

/** The server's 101 for `ws`'s request (its key read back from the request it wrote). */
function accept(ws: WsState, extra = ""): Uint8Array {
  const key = /Sec-WebSocket-Key: (\S+)/.exec(Buffer.from(ws.request).toString())![1]!;
  const value = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  return Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${value}\r\n${extra}\r\n`);
}

/** An unmasked server frame. */
function serverFrame(payload: Uint8Array, op = 2): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? [0x80 | op, n] : n < 65536 ? [0x80 | op, 126, n >> 8, n & 0xff] : [0x80 | op, 127, 0, 0, 0, 0, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from(head), payload]);
}

function unmask(frame: Uint8Array): { op: number; payload: Uint8Array } {
  let len = frame[1]! & 0x7f;
  let at = 2;
  if (len === 126) {
    len = (frame[2]! << 8) | frame[3]!;
    at = 4;
  } else if (len === 127) {
    len = (frame[6]! << 24) | (frame[7]! << 16) | (frame[8]! << 8) | frame[9]!;
    at = 10;
  }
  expect(frame[1]! & 0x80).toBe(0x80);
  const key = frame.subarray(at, at + 4);
  const payload = frame.subarray(at + 4).map((b, i) => b ^ key[i & 3]!);
  expect(payload.length).toBe(len);
  return { op: frame[0]! & 0x0f, payload };
}

describe("WebSocket framing", () => {
  test("the upgrade request offers the subprotocol, and a 101 with the right accept opens it; frames after it in the same read are kept", () => {
    const ws = new WsState({ path: "/mqtt", host: "127.0.0.1:9001", protocol: "mqtt" });
    const req = Buffer.from(ws.request).toString();
    expect(req).toStartWith("GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n");
    expect(req).toContain("Sec-WebSocket-Protocol: mqtt\r\n");
    const rest = ws.upgrade(Buffer.concat([accept(ws, "Sec-WebSocket-Protocol: mqtt\r\n"), serverFrame(Buffer.from([0x20, 2, 0, 0]))]));
    expect(ws.open).toBe(true);
    const got: number[] = [];
    ws.unwrap(rest!, (p) => got.push(...p), () => {});
    expect(got).toEqual([0x20, 2, 0, 0]);
  });

  test("a response split over reads is gathered; a refusal, a wrong accept or an unoffered subprotocol fails with its reason", () => {
    const ws = new WsState({ path: "/", host: "h" });
    const full = accept(ws);
    expect(ws.upgrade(full.subarray(0, 20))).toBeNull();
    expect(ws.upgrade(full.subarray(20))!.length).toBe(0);
    expect(ws.open).toBe(true);
    expect(() => new WsState({ path: "/", host: "h" }).upgrade(Buffer.from("HTTP/1.1 404 Not Found\r\n\r\n"))).toThrow("ws_upgrade_refused_404");
    expect(() => new WsState({ path: "/", host: "h" }).upgrade(accept(ws))).toThrow("ws_bad_accept");
    const other = new WsState({ path: "/", host: "h", protocol: "mqtt" });
    expect(() => other.upgrade(accept(other, "Sec-WebSocket-Protocol: chat\r\n"))).toThrow("ws_bad_subprotocol");
    // A 101 that does not say it switched to websocket is not one.
    const plain = new WsState({ path: "/", host: "h" });
    const noUpgrade = Buffer.from(Buffer.from(accept(plain)).toString().replace("Upgrade: websocket\r\n", ""));
    expect(() => plain.upgrade(noUpgrade)).toThrow("ws_not_upgraded");
  });

  test("payload is passed on as it arrives, however frames and reads are cut (16- and 64-bit lengths too)", () => {
    const ws = new WsState({ path: "/", host: "h" });
    ws.upgrade(accept(ws));
    const a = Buffer.alloc(300, 7);
    const b = Buffer.alloc(70_000, 9);
    const stream = Buffer.concat([serverFrame(a), serverFrame(b, 0), serverFrame(Buffer.from([1, 2, 3]))]);
    const got: Uint8Array[] = [];
    // Cut every 97 bytes: headers and payloads split across reads.
    for (let i = 0; i < stream.length; i += 97) ws.unwrap(stream.subarray(i, i + 97), (p) => got.push(Buffer.from(p)), () => {});
    expect(Buffer.concat(got)).toEqual(Buffer.concat([a, b, Buffer.from([1, 2, 3])]));
  });

  test("a ping is answered with a masked pong of the same payload; a close frame ends it with its code", () => {
    const ws = new WsState({ path: "/", host: "h" });
    ws.upgrade(accept(ws));
    const replies: Uint8Array[] = [];
    ws.unwrap(serverFrame(Buffer.from("hi"), 9), () => {}, (f) => replies.push(f));
    expect(replies.length).toBe(1);
    const pong = unmask(replies[0]!);
    expect(pong.op).toBe(10);
    expect(Buffer.from(pong.payload).toString()).toBe("hi");
    expect(() => ws.unwrap(serverFrame(Buffer.from([0x03, 0xe9]), 8), () => {}, () => {})).toThrow("ws_closed_1001");
    expect(() => ws.unwrap(Buffer.from([0x82, 0x81, 0, 0, 0, 0, 1]), () => {}, () => {})).toThrow("ws_masked_server_frame");
    expect(() => new WsState({ path: "/", host: "h" }).unwrap(Buffer.from([0xc2, 0x01, 7]), () => {}, () => {})).toThrow("ws_reserved_bits");
  });

  test("client frames are masked binary frames that unmask to the payload, at every length encoding", () => {
    for (const n of [0, 5, 125, 126, 65_535, 65_536, 100_000]) {
      const payload = Buffer.alloc(n, 0xa5);
      const f = unmask(wsFrame(payload));
      expect(f.op).toBe(2);
      expect(Buffer.from(f.payload)).toEqual(payload);
    }
  });
});
