/**
 * A minimal DER writer for the few structures cicada signs on its hot path (device
 * certificates, CRLs). @peculiar/x509 builds the same structures through a generic ASN.1
 * schema serializer at ~2.3 ms per certificate; bench/certs.bench.ts shows this writer at a
 * small fraction of that. Everything here is X.690 DER: definite lengths, minimal integers.
 */

export type Der = Uint8Array;

/** Encodes a DER length (X.690 8.1.3). */
function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/** A TLV with the given tag byte and content. */
export function tlv(tag: number, ...content: Der[]): Der {
  let len = 0;
  for (const c of content) len += c.length;
  const head = lengthBytes(len);
  const out = new Uint8Array(1 + head.length + len);
  out[0] = tag;
  out.set(head, 1);
  let off = 1 + head.length;
  for (const c of content) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

export const seq = (...c: Der[]): Der => tlv(0x30, ...c);
export const set = (...c: Der[]): Der => tlv(0x31, ...c);
/** Context-specific constructed tag [n] EXPLICIT. */
export const explicit = (n: number, ...c: Der[]): Der => tlv(0xa0 | n, ...c);
export const octets = (b: Der): Der => tlv(0x04, b);
export const utf8 = (s: string): Der => tlv(0x0c, new TextEncoder().encode(s));
export const NULL: Der = new Uint8Array([0x05, 0x00]);
export const TRUE: Der = new Uint8Array([0x01, 0x01, 0xff]);

/** BIT STRING with no unused bits. */
export const bits = (b: Der): Der => tlv(0x03, new Uint8Array([0]), b);

/** INTEGER from unsigned big-endian magnitude bytes (adds the 0x00 sign byte when needed). */
export function uint(bytes: Uint8Array): Der {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const mag = bytes.subarray(i);
  return mag[0]! & 0x80 ? tlv(0x02, new Uint8Array([0]), mag) : tlv(0x02, mag);
}

export function smallInt(n: number): Der {
  const b: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) b.unshift(v & 0xff);
  return uint(new Uint8Array(b.length ? b : [0]));
}

/** OBJECT IDENTIFIER from dotted form. */
export function oid(dotted: string): Der {
  const parts = dotted.split(".").map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const stack: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) stack.unshift(0x80 | (v & 0x7f));
    out.push(...stack);
  }
  return tlv(0x06, new Uint8Array(out));
}

/** UTCTime for years 1950-2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
export function time(d: Date): Der {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const body = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  const y = d.getUTCFullYear();
  if (y < 2050) return tlv(0x17, new TextEncoder().encode(`${p(y % 100)}${body}`));
  return tlv(0x18, new TextEncoder().encode(`${p(y, 4)}${body}`));
}

/** Reads one TLV at `off`: returns [tag, contentStart, end]. Used to pull raw fields out of parsed DER. */
export function readTlv(der: Uint8Array, off: number): [tag: number, start: number, end: number] {
  const tag = der[off]!;
  let len = der[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    start += n;
  }
  return [tag, start, start + len];
}
