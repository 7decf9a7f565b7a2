/** Issues device (client) and broker (server) certificates from the local CA. */
import { buildCertificate, buildCsr, distinguishedName, type KeyKind } from "./build.ts";
import { CLOCK_SKEW_MS, type CertificateAuthority } from "./ca.ts";
import { generateKeyPair, privateKeyPem } from "./keys.ts";
import { toPem } from "./pem.ts";

const DAY_MS = 86_400_000;

export interface IssuedCert {
  keyPem: string;
  certPem: string;
  /** Serial number, lower-case hex without leading zeros. */
  serial: string;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex").replace(/^0+(?=.)/, "");
}

/** dojot's thing id, which is also the certificate CN, MQTT client id and username. */
export function thingId(tenant: string, id: string): string {
  return `${tenant}:${id}`;
}

/** A device key and a client certificate with CN = `tenant:id` and the clientAuth EKU. */
export function issueDevice(ca: CertificateAuthority, cn: string, kind: KeyKind, days: number, now = Date.now()): IssuedCert {
  const keys = generateKeyPair(kind);
  const { der, serial } = buildCertificate(
    { subject: distinguishedName(cn), spki: keys.spki, subjectKind: kind, profile: "client", notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + days * DAY_MS) },
    ca,
  );
  return { keyPem: privateKeyPem(keys.privateKey), certPem: toPem("CERTIFICATE", der), serial: hex(serial) };
}

/** A broker key and a server certificate whose SAN lists `hosts` (DNS names and IPs). */
export function issueServer(ca: CertificateAuthority, hosts: string[], kind: KeyKind, days: number, now = Date.now()): IssuedCert {
  const keys = generateKeyPair(kind);
  const { der, serial } = buildCertificate(
    { subject: distinguishedName(hosts[0] ?? "localhost"), spki: keys.spki, subjectKind: kind, profile: "server", hosts, notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + days * DAY_MS) },
    ca,
  );
  return { keyPem: privateKeyPem(keys.privateKey), certPem: toPem("CERTIFICATE", der), serial: hex(serial) };
}

/** A device key and a certificate request with CN = `cn`, for a signer elsewhere (dojot's x509 service). */
export function requestDevice(cn: string, kind: KeyKind): { keyPem: string; csrPem: string } {
  const keys = generateKeyPair(kind);
  const der = buildCsr(distinguishedName(cn), keys.spki, kind, keys.privateKey);
  return { keyPem: privateKeyPem(keys.privateKey), csrPem: toPem("CERTIFICATE REQUEST", der) };
}
