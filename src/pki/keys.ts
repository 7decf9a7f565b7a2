/** Key pairs for devices, brokers and the CA: EC P-256 by default, RSA-2048 as dojot used. */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import type { KeyKind } from "./build.ts";

export interface KeyPair {
  kind: KeyKind;
  privateKey: KeyObject;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
}

/**
 * A fresh key pair. node:crypto's synchronous keygen is used rather than WebCrypto's: it is
 * the same BoringSSL code without a promise per call (bench/certs.bench.ts).
 */
export function generateKeyPair(kind: KeyKind): KeyPair {
  const { privateKey, publicKey } =
    kind === "ec" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { kind, privateKey, spki: new Uint8Array(publicKey.export({ type: "spki", format: "der" })) };
}

/** PKCS#8 PEM ("BEGIN PRIVATE KEY"), read by mosquitto, OpenSSL, Bun and paho alike. */
export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

/** Parses a PEM private key (PKCS#8, PKCS#1 or SEC1) into a KeyPair. Throws on bad input. */
export function parsePrivateKey(pem: string): KeyPair {
  const privateKey = createPrivateKey(pem);
  const t = privateKey.asymmetricKeyType;
  if (t !== "ec" && t !== "rsa") throw new Error(`unsupported key type ${t}: cicada signs with EC or RSA keys`);
  const spki = new Uint8Array(createPublicKey(privateKey).export({ type: "spki", format: "der" }));
  return { kind: t, privateKey, spki };
}
