/** @peculiar/x509, set up once for Bun: it needs the reflect-metadata polyfill and a WebCrypto provider. */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };

/** Parses one PEM or DER certificate. */
export function parseCertificate(input: string | Uint8Array): x509.X509Certificate {
  return new x509.X509Certificate(typeof input === "string" ? input : new Uint8Array(input));
}

/** Serial number of a certificate as lower-case hex, the form cicada keys revocations by. */
export function serialHex(cert: x509.X509Certificate): string {
  return cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, "");
}

/** The key kind of a certificate's public key (a renewal keeps it). */
export function keyKindOf(certPem: string): "ec" | "rsa" {
  return parseCertificate(certPem).publicKey.algorithm.name === "ECDSA" ? "ec" : "rsa";
}
