import { describe, expect, test } from "bun:test";
import * as mqtt from "mqtt-packet";
import { PublishTemplate, compileTemplate, decode, encodeAck, encodeConnect, encodeSubscribe, frameLength, payloadStamp } from "../../src/mqtt/codec.ts";
import { onData } from "../../src/mqtt/session.ts";
import { Conn, Device, State } from "../../src/mqtt/device.ts";
import { Stats } from "../../src/metrics/stats.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("PublishTemplate", () => {
  for (const version of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      test(`matches mqtt-packet's PUBLISH byte for byte (v${version}, QoS ${qos})`, () => {
        const t = new PublishTemplate("admin:abc/attrs", qos, version, 0);
        const out = new Uint8Array(t.length);
        t.fill(out, 0, 0x1234, 1_732_480_000_123, 4567);
        const expected = mqtt.generate(
          { cmd: "publish", topic: "admin:abc/attrs", payload: Buffer.from('{"timestamp":1732480000123,"seq":4567      }'), qos, retain: false, dup: false, messageId: qos ? 0x1234 : undefined, ...(version === 5 ? { properties: {} } : {}) },
          { protocolVersion: version },
        );
        expect(hex(out)).toBe(hex(expected));
      });
    }
  }

  test("--payload-size pads the JSON to the exact size and keeps it valid", () => {
    const t = new PublishTemplate("t/attrs", 1, 4, 256);
    const out = new Uint8Array(t.length);
    t.fill(out, 0, 7, 1_700_000_000_000, 9_876_543_210);
    const p = decode(out, 4) as mqtt.IPublishPacket;
    expect(p.payload.length).toBe(256);
    expect(JSON.parse(p.payload.toString()).timestamp).toBe(1_700_000_000_000);
    expect(JSON.parse(p.payload.toString()).seq).toBe(9_876_543_210);
    expect(payloadStamp(p.payload as Uint8Array).seq).toBe(9_876_543_210);
    expect(p.messageId).toBe(7);
  });
});

describe("frames and decoding", () => {
  test("frameLength: complete, partial and malformed remaining lengths (§2.2.3)", () => {
    expect(frameLength(new Uint8Array([0x40, 0x02, 0, 1]), 0)).toBe(4);
    expect(frameLength(new Uint8Array([0x40, 0x02, 0]), 0)).toBe(0);
    expect(frameLength(new Uint8Array([0x30]), 0)).toBe(0);
    expect(frameLength(new Uint8Array([0x30, 0x80, 0x01, ...new Uint8Array(128)]), 0)).toBe(131);
    expect(frameLength(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), 0)).toBe(-1);
  });

  test("acks are the 4-byte forms", () => {
    expect(hex(encodeAck(4, 0x0102))).toBe("40020102");
    expect(hex(encodeAck(6, 9))).toBe("62020009"); // PUBREL has flags 0010 [MQTT-3.6.1-1]
  });

  test("payloadStamp reads the fields without JSON.parse", () => {
    expect(payloadStamp(Buffer.from('{"timestamp": 1732480000123, "x": 1}')).timestamp).toBe(1732480000123);
    expect(payloadStamp(Buffer.from('{"ts":1}')).timestamp).toBeNaN();
  });

  test("fuzz: random frames never escape the codec, and the shared parser recovers", () => {
    const good = mqtt.generate({ cmd: "connack", sessionPresent: false, returnCode: 0 });
    const random = seeded("codec");
    let errors = 0;
    for (let i = 0; i < 5000; i++) {
      const len = 1 + Math.floor(random() * 40);
      const bytes = new Uint8Array(len + 2).map(() => Math.floor(random() * 256));
      bytes[1] = len & 0x7f;
      try {
        decode(bytes.subarray(0, 2 + (len & 0x7f)), i % 2 ? 4 : 5);
      } catch {
        errors++;
      }
      // Whatever came before, a valid packet still decodes.
      expect(decode(good, 4).cmd).toBe("connack");
    }
    expect(errors).toBeGreaterThan(0);
  });

  test("fuzz: onData gathers valid packets across any split, and garbage costs one connection, never the process", () => {
    const random = seeded("onData");
    // Valid: 200 PUBLISH (QoS 0, timestamped) in one stream, cut at random points.
    const packets = Array.from({ length: 200 }, (_, i) => mqtt.generate({ cmd: "publish", topic: "admin:x/config", payload: JSON.stringify({ timestamp: Date.now(), n: i }), qos: 0, retain: false, dup: false }));
    const stream = Buffer.concat(packets);
    for (let round = 0; round < 50; round++) {
      const { host, conn } = session();
      for (let off = 0; off < stream.length; ) {
        const n = 1 + Math.floor(random() * 300);
        onData(host, conn, stream.subarray(off, off + n), 0);
        off += n;
      }
      expect(host.dropped).toEqual([]);
      expect(host.stats.rows.recv_message.count).toBe(200);
    }
    // Garbage, also split: each connection either waits for more, or is dropped with a reason. Nothing throws.
    let dropped = 0;
    for (let round = 0; round < 2000; round++) {
      const { host, conn } = session();
      const bytes = new Uint8Array(1 + Math.floor(random() * 200)).map(() => Math.floor(random() * 256));
      for (let off = 0; off < bytes.length && !conn.closed; ) {
        const n = 1 + Math.floor(random() * 20);
        onData(host, conn, bytes.subarray(off, off + n), 0);
        off += n;
      }
      dropped += host.dropped.length;
      for (const r of host.dropped) expect(r).toMatch(/^protocol_error:|^packet_too_large$|^server_disconnect:/);
    }
    expect(dropped).toBeGreaterThan(100);
  });
});

/** A seeded xorshift32 in [0, 1); the seed is printed, and FUZZ_SEED replays a run. */
function seeded(name: string): () => number {
  let x = Number(process.env.FUZZ_SEED ?? (Date.now() % 2 ** 31)) >>> 0 || 1;
  console.log(`fuzz ${name}: seed ${x} (FUZZ_SEED=${x} replays it)`);
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** One connection of a device, with a host that records what it drops. */
function session() {
  const stats = new Stats();
  const dropped: string[] = [];
  const host = {
    stats,
    dropped,
    maxPacketSize: 64 * 1024,
    send() {},
    connected() {},
    drop(c: Conn, reason: string) {
      c.closed = true;
      dropped.push(reason);
    },
    wallClock: (t: number) => t,
  };
  const conn = new Conn(new Device(0, "x", "admin:x", new PublishTemplate("admin:x/attrs", 0, 4, 0)), 4, 0);
  conn.device.state = State.CONNECTED;
  return { host, conn };
}

test("numbered commands: a device counts the numbers it never saw as gaps", () => {
  const { host, conn } = session();
  for (const seq of [1, 2, 5, 6, 6, 9]) {
    const p = mqtt.generate({ cmd: "publish", topic: "admin:x/config", payload: JSON.stringify({ timestamp: Date.now(), seq }), qos: 0, retain: false, dup: false });
    onData(host, conn, p, 0);
  }
  // 3, 4, 7 and 8 never came.
  expect(host.stats.health.command_gaps).toBe(4);
  expect(host.stats.rows.recv_message.count).toBe(6);
});

describe("topic and payload templates", () => {
  test("per-message fields are written at fixed widths; the packet is what mqtt-packet reads", () => {
    const t = new PublishTemplate("bench/{rand:100}/{seq}", 1, 5, 0, { payload: '{"t":{timestamp},"n":{seq},"v":{rand:-5..250},"s":"{string:8}"}', retain: true });
    const out = new Uint8Array(t.length);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      t.fill(out, 0, 42, 1_732_480_000_123, 77);
      const p = decode(out, 5) as mqtt.IPublishPacket;
      expect(p.topic).toMatch(/^bench\/\d{2}\/0000000077$/);
      expect(p.retain).toBe(true);
      expect(p.messageId).toBe(42);
      const body = JSON.parse(p.payload.toString());
      expect(body.t).toBe(1_732_480_000_123);
      expect(body.n).toBe(77);
      expect(body.v).toBeGreaterThanOrEqual(-5);
      expect(body.v).toBeLessThanOrEqual(250);
      expect(body.s).toMatch(/^[a-z0-9]{8}$/);
      seen.add(`${p.topic} ${body.v} ${body.s}`);
      expect(payloadStamp(p.payload as Uint8Array)).toEqual({ timestamp: NaN, seq: NaN });
    }
    // Random parts differ message to message.
    expect(seen.size).toBeGreaterThan(150);
  });

  test("bad templates are refused with the reason", () => {
    expect(compileTemplate("a/{nope}", "topic")).toBe("unknown placeholder {nope}");
    expect(compileTemplate("{timestamp}/x", "topic")).toBe("{timestamp} is for payloads; a topic takes {seq} and {rand:N}");
    expect(compileTemplate('{"v":{rand:9..3}}', "payload")).toBe("{rand:9..3}: needs integers a <= b");
    expect(compileTemplate('{"a": {"b": 1}}', "payload")).toEqual({ text: '{"a": {"b": 1}}', fields: [] });
  });
});

test("packets made by mqtt-packet are right without its message-id cache, which stays empty", () => {
  const connect = encodeConnect("admin:d1", 60, 4);
  const subscribe = encodeSubscribe(513, "admin:d1/config", 1, 5);
  const parsed: mqtt.Packet[] = [];
  for (const [bytes, version] of [[connect, 4], [subscribe, 5]] as const) {
    const p = mqtt.parser({ protocolVersion: version });
    p.on("packet", (x) => parsed.push(x));
    p.parse(bytes);
  }
  expect(parsed[0]).toMatchObject({ cmd: "connect", clientId: "admin:d1", keepalive: 60 });
  expect(parsed[1]).toMatchObject({ cmd: "subscribe", messageId: 513, subscriptions: [{ topic: "admin:d1/config", qos: 1 }] });
  // The cache would be 65,536 Buffers (3.3 MB of JS heap) in every process (README, "Sizing").
  const { cache } = require("mqtt-packet/numbers") as { cache: Record<number, Buffer> };
  expect(Object.keys(cache).length).toBe(0);
});
