/** Builds and signs X.509 v3 certificates (RFC 5280 4.1) with the DER writer: CA, device and broker certificates. */
import { createHash, randomBytes, sign, type KeyObject } from "node:crypto";
import { NULL, TRUE, bits, explicit, octets, oid, readTlv, seq, set, smallInt, time, tlv, uint, utf8, type Der } from "./der.ts";

export type KeyKind = "ec" | "rsa";

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  subjectAltName: "2.5.29.17",
  crlNumber: "2.5.29.20",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  ecdsaSha256: "1.2.840.10045.4.3.2",
  rsaSha256: "1.2.840.113549.1.1.11",
} as const;

/** Key usage bits (RFC 5280 4.2.1.3), numbered from the most significant bit. */
export const KeyUsage = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** AlgorithmIdentifier for signatures made by a key of this kind. */
export function signatureAlgorithm(kind: KeyKind): Der {
  return kind === "ec" ? seq(oid(OID.ecdsaSha256)) : seq(oid(OID.rsaSha256), NULL);
}

/** Name with one CN (and optionally O) RDN. */
export function distinguishedName(cn: string, org?: string): Der {
  const rdns = [];
  if (org) rdns.push(set(seq(oid(OID.organization), utf8(org))));
  rdns.push(set(seq(oid(OID.commonName), utf8(cn))));
  return seq(...rdns);
}

/** RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING value. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const [, start] = readTlv(spki, 0);
  const [, , algEnd] = readTlv(spki, start);
  const [, bitStart, bitEnd] = readTlv(spki, algEnd);
  return new Uint8Array(createHash("sha1").update(spki.subarray(bitStart + 1, bitEnd)).digest());
}

function extension(id: string, critical: boolean, value: Der): Der {
  return critical ? seq(oid(id), TRUE, octets(value)) : seq(oid(id), octets(value));
}

function keyUsageBits(usages: number[]): Der {
  let v = 0;
  for (const u of usages) v |= 0x80 >> u;
  let unused = 0;
  while (unused < 7 && !(v & (1 << unused))) unused++;
  return tlv(0x03, new Uint8Array([unused, v]));
}

function subjectAltNames(hosts: string[]): Der {
  const names = hosts.map((h) => {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(h)) return tlv(0x87, new Uint8Array(h.split(".").map(Number)));
    if (h.includes(":")) return tlv(0x87, ipv6Bytes(h));
    return tlv(0x82, new TextEncoder().encode(h));
  });
  return seq(...names);
}

function ipv6Bytes(ip: string): Uint8Array {
  const [head, tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/** The issuing side of a signature: who signs, with which key, and its key id. */
export interface Issuer {
  name: Der;
  key: KeyObject;
  kind: KeyKind;
  keyId: Uint8Array;
}

export type Profile = "ca" | "client" | "server";

export interface CertRequest {
  subject: Der;
  spki: Uint8Array;
  /** Kind of the subject's key: RSA end-entity certificates also get keyEncipherment. */
  subjectKind: KeyKind;
  profile: Profile;
  notBefore: Date;
  notAfter: Date;
  /** DNS names and IP addresses, for broker certificates. */
  hosts?: string[];
  /** Serial number magnitude; 16 random bytes when absent. */
  serial?: Uint8Array;
}

/** A fresh positive 128-bit serial (RFC 5280 4.1.2.2: at most 20 octets, non-negative). */
export function randomSerial(): Uint8Array {
  const s = randomBytes(16);
  s[0] = (s[0]! & 0x7f) | 0x01;
  return new Uint8Array(s);
}

/** Builds the TBSCertificate, signs it with the issuer key and returns the certificate DER. */
export function buildCertificate(req: CertRequest, issuer: Issuer): { der: Uint8Array; serial: Uint8Array } {
  const serial = req.serial ?? randomSerial();
  const exts: Der[] = [];
  if (req.profile === "ca") {
    exts.push(extension(OID.basicConstraints, true, seq(TRUE)));
    exts.push(extension(OID.keyUsage, true, keyUsageBits([KeyUsage.keyCertSign, KeyUsage.cRLSign, KeyUsage.digitalSignature])));
  } else {
    exts.push(extension(OID.basicConstraints, true, seq()));
    const usages: number[] = [KeyUsage.digitalSignature];
    if (req.subjectKind === "rsa") usages.push(KeyUsage.keyEncipherment);
    exts.push(extension(OID.keyUsage, true, keyUsageBits(usages)));
    exts.push(extension(OID.extKeyUsage, false, seq(oid(req.profile === "client" ? OID.clientAuth : OID.serverAuth))));
  }
  exts.push(extension(OID.subjectKeyId, false, octets(keyIdentifier(req.spki))));
  exts.push(extension(OID.authorityKeyId, false, seq(tlv(0x80, issuer.keyId))));
  if (req.hosts?.length) exts.push(extension(OID.subjectAltName, false, subjectAltNames(req.hosts)));

  const algorithm = signatureAlgorithm(issuer.kind);
  const tbs = seq(
    explicit(0, smallInt(2)),
    uint(serial),
    algorithm,
    issuer.name,
    seq(time(req.notBefore), time(req.notAfter)),
    req.subject,
    req.spki,
    explicit(3, seq(...exts)),
  );
  const signature = sign("sha256", tbs, issuer.key);
  return { der: seq(tbs, algorithm, bits(new Uint8Array(signature))), serial };
}

export interface RevokedEntry {
  serial: Uint8Array;
  revokedAt: Date;
}

/**
 * Builds a v2 CRL (RFC 5280 5.1). @peculiar/x509's X509CrlGenerator checks each entry against
 * all earlier ones (quadratic), too slow for tens of thousands of revoked devices.
 */
export function buildCrl(issuer: Issuer, entries: RevokedEntry[], crlNumber: number, thisUpdate: Date, nextUpdate: Date): Uint8Array {
  const algorithm = signatureAlgorithm(issuer.kind);
  const revoked = entries.map((e) => seq(uint(e.serial), time(e.revokedAt)));
  const exts = seq(
    extension(OID.authorityKeyId, false, seq(tlv(0x80, issuer.keyId))),
    extension(OID.crlNumber, false, smallInt(crlNumber)),
  );
  const fields: Der[] = [smallInt(1), algorithm, issuer.name, time(thisUpdate), time(nextUpdate)];
  if (revoked.length) fields.push(seq(...revoked));
  fields.push(explicit(0, exts));
  const tbs = seq(...fields);
  const signature = sign("sha256", tbs, issuer.key);
  return seq(tbs, algorithm, bits(new Uint8Array(signature)));
}

/** A PKCS#10 certification request (RFC 2986) for `subject`, signed with the subject's own key. */
export function buildCsr(subject: Der, spki: Uint8Array, kind: KeyKind, key: KeyObject): Uint8Array {
  const info = seq(smallInt(0), subject, spki, tlv(0xa0));
  const algorithm = signatureAlgorithm(kind);
  return seq(info, algorithm, bits(new Uint8Array(sign("sha256", info, key))));
}
