import { describe, expect, test } from "bun:test";
import * as mqtt from "mqtt-packet";
import { PublishTemplate, decode, encodeAck, frameLength, payloadTimestamp } from "../../src/mqtt/codec.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("PublishTemplate", () => {
  for (const version of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      test(`matches mqtt-packet's PUBLISH byte for byte (v${version}, QoS ${qos})`, () => {
        const t = new PublishTemplate("admin:abc/attrs", qos, version, 0);
        const out = new Uint8Array(t.length);
        t.fill(out, 0, 0x1234, 1_732_480_000_123);
        const expected = mqtt.generate(
          { cmd: "publish", topic: "admin:abc/attrs", payload: Buffer.from('{"timestamp":1732480000123}'), qos, retain: false, dup: false, messageId: qos ? 0x1234 : undefined, ...(version === 5 ? { properties: {} } : {}) },
          { protocolVersion: version },
        );
        expect(hex(out)).toBe(hex(expected));
      });
    }
  }

  test("--payload-size pads the JSON to the exact size and keeps it valid", () => {
    const t = new PublishTemplate("t/attrs", 1, 4, 256);
    const out = new Uint8Array(t.length);
    t.fill(out, 0, 7, 1_700_000_000_000);
    const p = decode(out, 4) as mqtt.IPublishPacket;
    expect(p.payload.length).toBe(256);
    expect(JSON.parse(p.payload.toString()).timestamp).toBe(1_700_000_000_000);
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

  test("payloadTimestamp reads the field without JSON.parse", () => {
    expect(payloadTimestamp(Buffer.from('{"timestamp": 1732480000123, "x": 1}'))).toBe(1732480000123);
    expect(payloadTimestamp(Buffer.from('{"ts":1}'))).toBeNaN();
  });

  test("fuzz: random frames never escape the codec, and the shared parser recovers", () => {
    const good = mqtt.generate({ cmd: "connack", sessionPresent: false, returnCode: 0 });
    let errors = 0;
    for (let i = 0; i < 5000; i++) {
      const len = 1 + Math.floor(Math.random() * 40);
      const bytes = crypto.getRandomValues(new Uint8Array(len + 2));
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
});
