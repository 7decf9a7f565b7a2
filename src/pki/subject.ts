/**
 * Names read out of a certificate without a full X.509 parse: a DER walk to the subject (or
 * issuer) and its CommonName. The swarm reads each device's identity this way at every dial
 * (a few microseconds, against ~1 ms for the TLS handshake), so the identity is always the one
 * the certificate carries — which is what a broker with use_identity_as_username sees.
 */
import { readTlv } from "./der.ts";
import { fromPem } from "./pem.ts";

/** DER of OID 2.5.4.3 (commonName) and 2.5.4.10 (organizationName). */
const CN_OID = [0x06, 0x03, 0x55, 0x04, 0x03];
const O_OID = [0x06, 0x03, 0x55, 0x04, 0x0a];

/** The tbsCertificate's issuer and subject Names, as [start, end) offsets into `der`. */
function names(der: Uint8Array): { issuer: [number, number]; subject: [number, number] } | null {
  try {
    const [, certStart] = readTlv(der, 0);
    let [, off] = readTlv(der, certStart); // tbsCertificate: step inside
    if (der[off] === 0xa0) off = readTlv(der, off)[2]; // [0] version
    off = readTlv(der, off)[2]; // serialNumber
    off = readTlv(der, off)[2]; // signature algorithm
    const [, , issuerEnd] = readTlv(der, off);
    const issuer: [number, number] = [off, issuerEnd];
    off = readTlv(der, issuerEnd)[2]; // validity
    const [, , subjectEnd] = readTlv(der, off);
    if (subjectEnd > der.length) return null;
    return { issuer, subject: [off, subjectEnd] };
  } catch {
    return null;
  }
}

/** The value of attribute `oid` in the Name at [start, end) (first one), or null. */
function attribute(der: Uint8Array, [start, end]: [number, number], oid: number[]): string | null {
  for (let off = readTlv(der, start)[1]; off < end; ) {
    const [, setStart, setEnd] = readTlv(der, off); // RelativeDistinguishedName (SET)
    const [, seqStart] = readTlv(der, setStart); // AttributeTypeAndValue (SEQUENCE)
    if (oid.every((b, i) => der[seqStart + i] === b)) {
      const [, vStart, vEnd] = readTlv(der, seqStart + oid.length);
      return Buffer.from(der.subarray(vStart, vEnd)).toString("utf8");
    }
    off = setEnd;
  }
  return null;
}

function derOf(certPem: string): Uint8Array | null {
  try {
    return fromPem("CERTIFICATE", certPem)[0] ?? null;
  } catch {
    return null;
  }
}

/** The subject's CommonName of a PEM certificate (its first certificate), or null when it has none or does not parse. */
export function commonNameOf(certPem: string): string | null {
  const der = derOf(certPem);
  const n = der && names(der);
  return n ? attribute(der, n.subject, CN_OID) : null;
}

/** A Name as people read it, e.g. `O=dojot IoT Platform, CN=X509 Identity CA`, for messages that compare two CAs. */
export function describeName(certPem: string, which: "subject" | "issuer" = "subject"): string {
  const der = derOf(certPem);
  const n = der && names(der);
  if (!n) return "(unreadable certificate)";
  const o = attribute(der, n[which], O_OID);
  const cn = attribute(der, n[which], CN_OID);
  return [o && `O=${o}`, cn && `CN=${cn}`].filter(Boolean).join(", ") || "(no CN or O)";
}
