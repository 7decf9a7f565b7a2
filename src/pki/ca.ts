/** The local certificate authority: the embedded default signer for device and broker certificates. */
import { EXIT, LoadError } from "../errors.ts";
import { buildCertificate, distinguishedName, keyIdentifier, type Issuer, type KeyKind } from "./build.ts";
import { generateKeyPair, parsePrivateKey, privateKeyPem } from "./keys.ts";
import { toPem } from "./pem.ts";
import { parseCertificate } from "./x509.ts";

const DAY_MS = 86_400_000;
/** Certificates start an hour in the past so a broker with a slightly slow clock accepts them. */
export const CLOCK_SKEW_MS = 3_600_000;

export interface CertificateAuthority extends Issuer {
  certPem: string;
  certDer: Uint8Array;
}

/** A new self-signed CA with a fresh key. Returns the CA and its private key PEM. */
export function createCa(kind: KeyKind, commonName = "cicada local CA", days = 3650): { ca: CertificateAuthority; keyPem: string } {
  const keys = generateKeyPair(kind);
  const name = distinguishedName(commonName, "cicada");
  const keyId = keyIdentifier(keys.spki);
  const now = Date.now();
  const { der } = buildCertificate(
    { subject: name, spki: keys.spki, subjectKind: kind, profile: "ca", notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + days * DAY_MS) },
    { name, key: keys.privateKey, kind, keyId },
  );
  const ca: CertificateAuthority = { name, key: keys.privateKey, kind, keyId, certDer: der, certPem: toPem("CERTIFICATE", der) };
  return { ca, keyPem: privateKeyPem(keys.privateKey) };
}

/**
 * Loads a CA from its certificate and key PEM. Fails with a bad-input error when either does
 * not parse, the certificate is not a CA, or the key does not belong to the certificate.
 * `where` names the files for the message.
 */
export function loadCa(certPem: string, keyPem: string, where: { cert: string; key: string }): CertificateAuthority {
  let cert;
  try {
    cert = parseCertificate(certPem);
  } catch (err) {
    throw new LoadError(`${where.cert} is not a PEM certificate`, EXIT.BAD_INPUT, { cause: err });
  }
  let keys;
  try {
    keys = parsePrivateKey(keyPem);
  } catch (err) {
    throw new LoadError(`${where.key} is not a PEM private key`, EXIT.BAD_INPUT, { cause: err });
  }
  const certSpki = new Uint8Array(cert.publicKey.rawData);
  if (Buffer.compare(Buffer.from(certSpki), Buffer.from(keys.spki)) !== 0) {
    throw new LoadError(`CA key ${where.key} does not match CA certificate ${where.cert}`, EXIT.BAD_INPUT);
  }
  const der = new Uint8Array(cert.rawData);
  return {
    name: new Uint8Array(cert.subjectName.toArrayBuffer()),
    key: keys.privateKey,
    kind: keys.kind,
    keyId: keyIdentifier(keys.spki),
    certDer: der,
    certPem: toPem("CERTIFICATE", der),
  };
}
