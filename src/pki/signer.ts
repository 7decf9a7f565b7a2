// pki/ — keys, CSRs, certificates, CRLs, the local CA and the Signer interface; names read from certificates.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * Who signs device certificates and revokes them: the local CA (signers/local.ts) or dojot's
 * x509 service (dojot/signer.ts). One interface serves `certs create`, `certs revoke` and a
 * run's renew/revoke, so each files the same things the same way.
 */
import type { KeyKind } from "./build.ts";

export interface Issued {
  cert: string;
  key: string;
  /** The certificate's CN: the device's MQTT client id and username. */
  identity: string;
}

export interface Signer {
  /** A new key and certificate for device `id` (nothing written). */
  issue(id: string, kind: KeyKind): Promise<Issued>;
  /**
   * Revokes `certPem`, device `id`'s certificate, and files it under the revoke directory.
   * Resolves with the path it was filed at once the revocation is in force: for the local CA,
   * once the CRL is rewritten, the hook has run and the CRL wait has passed.
   */
  revoke(id: string, certPem: string): Promise<string>;
  /** Revokes `certPem` and issues a new key and certificate of the same kind, written under the renew directory. */
  renew(id: string, certPem: string): Promise<Issued>;
}

/** What a signer files and waits for around a revocation. */
export interface SignerFiling {
  /** Revoked certificates are filed here (REVOKE_CERT_DIR); the local CA's CRL lists them. */
  revokeDir: string;
  /** Renewed keys and certificates go here (RENEW_CERT_DIR). */
  renewDir: string;
  /** Time given to the broker after a revocation before it resolves (ms). */
  crlWaitMs?: number;
}
