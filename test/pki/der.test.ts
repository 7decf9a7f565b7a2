import { describe, expect, test } from "bun:test";
import { oid, readTlv, seq, smallInt, time, tlv, uint } from "../../src/pki/der.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("DER writer (X.690)", () => {
  test("object identifiers", () => {
    // ecdsa-with-SHA256 and id-ce-extKeyUsage as OpenSSL encodes them.
    expect(hex(oid("1.2.840.10045.4.3.2"))).toBe("06082a8648ce3d040302");
    expect(hex(oid("2.5.29.37"))).toBe("0603551d25");
  });

  test("integers are minimal and non-negative", () => {
    expect(hex(smallInt(0))).toBe("020100");
    expect(hex(smallInt(2))).toBe("020102");
    expect(hex(uint(new Uint8Array([0x80])))).toBe("02020080");
    expect(hex(uint(new Uint8Array([0, 0, 0x7f])))).toBe("02017f");
  });

  test("long-form lengths round-trip through readTlv", () => {
    for (const n of [0, 127, 128, 255, 256, 65_535, 70_000]) {
      const der = tlv(0x04, new Uint8Array(n));
      const [tag, start, end] = readTlv(der, 0);
      expect(tag).toBe(0x04);
      expect(end - start).toBe(n);
      expect(end).toBe(der.length);
    }
  });

  test("UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280 4.1.2.5)", () => {
    expect(Buffer.from(time(new Date("2026-11-24T21:05:09Z")).subarray(2)).toString()).toBe("261124210509Z");
    expect(Buffer.from(time(new Date("2051-01-02T03:04:05Z")).subarray(2)).toString()).toBe("20510102030405Z");
    expect(time(new Date("2051-01-02T03:04:05Z"))[0]).toBe(0x18);
  });

  test("nested sequences", () => {
    expect(hex(seq(seq(), smallInt(1)))).toBe("3005300002" + "0101");
  });
});
