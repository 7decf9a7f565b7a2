/**
 * Signing through dojot's x509 service: keys and CSRs made here, signed there (POST
 * /x509/v1/certificates), revoked by fingerprint (DELETE /x509/v1/certificates/<fp>).
 */
import { createHash } from "node:crypto";
import type { KeyKind } from "../pki/build.ts";
import { requestDevice } from "../pki/issue.ts";
import { fromPem } from "../pki/pem.ts";
import type { Issued, Signer, SignerFiling } from "../pki/signer.ts";
import { commonNameOf } from "../pki/subject.ts";
import { keyKindOf, parseCertificate, serialHex } from "../pki/x509.ts";
import { fileRevoked, writeDevice } from "../store/dir.ts";
import { DIR_MODE, makeDir } from "../sys/fs.ts";
import type { DojotClient } from "./client.ts";

/** dojot's certificate fingerprint: SHA-256 of the DER, upper-case hex pairs joined by colons. */
export function fingerprint(certPem: string): string {
  const der = fromPem("CERTIFICATE", certPem)[0];
  if (!der) throw new Error("not a PEM certificate");
  return createHash("sha256").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
}

export interface DojotIssued extends Issued {
  fingerprint: string;
  /** Earlier attempts that may have reached dojot, each perhaps leaving a certificate no one holds. */
  ambiguous: number;
}

export class DojotSigner implements Signer {
  /** @param filing where revoked and renewed certificates go (only issue() works without it) */
  constructor(
    readonly client: DojotClient,
    private readonly filing: SignerFiling | null = null,
  ) {}

  private filed(): SignerFiling {
    if (!this.filing) throw new Error("dojot signer without revoke and renew directories");
    return this.filing;
  }

  /**
   * The CSR carries only `CN=<device id>`, as dojot's own tools send it: dojot accepts no other
   * subject attribute and writes the tenant in front itself. The identity is then read from the
   * certificate dojot returns (normally `tenant:id`), never assumed.
   */
  async issue(id: string, kind: KeyKind): Promise<DojotIssued> {
    const { keyPem, csrPem } = requestDevice(id, kind);
    const signed = await this.client.sign(csrPem);
    return { cert: signed.certificatePem, key: keyPem, identity: commonNameOf(signed.certificatePem) ?? "", fingerprint: signed.fingerprint, ambiguous: signed.ambiguous };
  }

  async revoke(id: string, certPem: string): Promise<string> {
    const f = this.filed();
    await this.client.revoke(fingerprint(certPem));
    makeDir(f.revokeDir, DIR_MODE);
    const path = fileRevoked(f.revokeDir, id, serialHex(parseCertificate(certPem)), certPem);
    if (f.crlWaitMs) await Bun.sleep(f.crlWaitMs);
    return path;
  }

  async renew(id: string, certPem: string): Promise<Issued> {
    const f = this.filed();
    await this.client.revoke(fingerprint(certPem));
    makeDir(f.revokeDir, DIR_MODE);
    fileRevoked(f.revokeDir, id, serialHex(parseCertificate(certPem)), certPem);
    const made = await this.issue(id, keyKindOf(certPem));
    makeDir(f.renewDir, DIR_MODE);
    writeDevice(f.renewDir, id, made.key, made.cert, { replace: true });
    if (f.crlWaitMs) await Bun.sleep(f.crlWaitMs);
    return made;
  }
}
