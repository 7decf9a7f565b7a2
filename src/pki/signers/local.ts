/**
 * The local CA: opening (or creating) the CA that signs a certificate directory's devices, and
 * the Signer that issues, renews and revokes with it (revocations listed in its CRL).
 */
import { readFileSync } from "node:fs";
import { EXIT, LoadError, messageOf } from "../../errors.ts";
import { fileRevoked, writeDevice, type CertDir } from "../../store/dir.ts";
import { DIR_MODE, exists, makeDir, writeFileAtomic } from "../../sys/fs.ts";
import type { KeyKind } from "../build.ts";
import { createCa, loadCa, type CertificateAuthority } from "../ca.ts";
import { writeCrl } from "../crl.ts";
import { issueDevice, thingId } from "../issue.ts";
import type { Issued, Signer, SignerFiling } from "../signer.ts";
import { keyKindOf, parseCertificate, serialHex } from "../x509.ts";

export interface OpenCaOptions {
  /** An existing CA to sign with, instead of the directory's own. */
  caCert?: string;
  caKey?: string;
  /** Key kind for a CA created here. */
  kind: KeyKind;
}

function read(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new LoadError(`cannot read ${what} ${path}: ${messageOf(err)}`, EXIT.BAD_INPUT, { cause: err });
  }
}

/**
 * The CA for `dir`: the one named by `caCert`/`caKey`, else the directory's own
 * (`ca.crt` + `.ca/ca.key`), else a new one written there. Keeps `dir/ca.crt` equal to the
 * signing CA so every device in a directory chains to its `ca.crt`. Returns whether it was created.
 */
export function openLocalCa(dir: CertDir, opts: OpenCaOptions): { ca: CertificateAuthority; created: boolean } {
  let ca: CertificateAuthority;
  let created = false;
  if (opts.caCert || opts.caKey) {
    if (!opts.caCert || !opts.caKey) throw new LoadError("--signing-ca-cert and --signing-ca-key go together", EXIT.BAD_INPUT);
    ca = loadCa(read(opts.caCert, "CA certificate"), read(opts.caKey, "CA key"), { cert: opts.caCert, key: opts.caKey });
    if (exists(dir.caCert)) {
      const current = loadCaCertOnly(dir.caCert);
      if (current !== ca.certPem.trim()) {
        throw new LoadError(`${dir.caCert} holds a different CA than ${opts.caCert}; use another --certs`, EXIT.BAD_INPUT);
      }
    } else {
      writeFileAtomic(dir.caCert, ca.certPem, 0o644);
    }
  } else if (exists(dir.caCert)) {
    if (!exists(dir.caKey)) {
      throw new LoadError(`${dir.caCert} exists but its key ${dir.caKey} does not: pass --signing-ca-cert and --signing-ca-key`, EXIT.BAD_INPUT);
    }
    ca = loadCa(read(dir.caCert, "CA certificate"), read(dir.caKey, "CA key"), { cert: dir.caCert, key: dir.caKey });
  } else {
    const made = createCa(opts.kind);
    writeFileAtomic(dir.caKey, made.keyPem, 0o600);
    writeFileAtomic(dir.caCert, made.ca.certPem, 0o644);
    ca = made.ca;
    created = true;
  }
  // A broker with crlfile set refuses every client until a CRL for the issuer exists.
  if (!exists(dir.crl)) writeCrl(dir, ca);
  return { ca, created };
}

function loadCaCertOnly(path: string): string {
  return read(path, "CA certificate").trim();
}

export interface LocalSignerOptions extends Partial<SignerFiling> {
  /** Certificates are issued to `tenant:id`. */
  tenant: string;
  /** Validity of issued certificates (default 365 days). */
  days?: number;
  /** Shell command run after the CRL is rewritten, to make the broker reload it (e.g. `kill -HUP <pid>`). */
  crlHook?: string;
}

/**
 * Signs with the local CA of `dir`. Revoked certificates are filed under the revoke directory
 * (default `dir/revoke/`) and the CRL is rewritten from it, once for every revocation that
 * arrives within COALESCE_MS; then the hook runs (the broker reloads the CRL) and, after
 * `crlWaitMs`, every one of them resolves.
 */
export class LocalSigner implements Signer {
  static readonly COALESCE_MS = 50;
  private readonly dir: CertDir;
  private waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** CRL rewrites run one at a time. */
  private chain = Promise.resolve();

  constructor(
    private readonly ca: CertificateAuthority,
    dir: CertDir,
    private readonly opts: LocalSignerOptions,
  ) {
    this.dir = { ...dir, renew: opts.renewDir ?? dir.renew, revoke: opts.revokeDir ?? dir.revoke };
  }

  async issue(id: string, kind: KeyKind): Promise<Issued> {
    return this.issueNow(id, kind);
  }

  /** issue(), synchronously: the certificate batch workers issue thousands in a loop. */
  issueNow(id: string, kind: KeyKind): Issued {
    const identity = thingId(this.opts.tenant, id);
    const made = issueDevice(this.ca, identity, kind, this.opts.days ?? 365);
    return { cert: made.certPem, key: made.keyPem, identity };
  }

  revoke(id: string, certPem: string): Promise<string> {
    makeDir(this.dir.revoke, DIR_MODE);
    const filed = fileRevoked(this.dir.revoke, id, serialHex(parseCertificate(certPem)), certPem);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.waiting.push({ resolve, reject });
    this.timer ??= setTimeout(() => this.publish(), LocalSigner.COALESCE_MS);
    return promise.then(() => filed);
  }

  private publish(): void {
    this.timer = null;
    const batch = this.waiting;
    this.waiting = [];
    this.chain = this.chain.then(async () => {
      try {
        writeCrl(this.dir, this.ca);
        if (this.opts.crlHook) {
          const hook = Bun.spawn(["sh", "-c", this.opts.crlHook], { stdio: ["ignore", "ignore", "pipe"] });
          const [code, err] = await Promise.all([hook.exited, new Response(hook.stderr).text()]);
          if (code !== 0) throw new Error(`CRL hook exited ${code}${err.trim() ? `: ${err.trim().split("\n")[0]}` : ""}`);
        }
        if (this.opts.crlWaitMs) await Bun.sleep(this.opts.crlWaitMs);
        for (const w of batch) w.resolve();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const w of batch) w.reject(e);
      }
    });
  }

  async renew(id: string, certPem: string): Promise<Issued> {
    await this.revoke(id, certPem);
    const made = this.issueNow(id, keyKindOf(certPem));
    makeDir(this.dir.renew, DIR_MODE);
    writeDevice(this.dir.renew, id, made.key, made.cert, { replace: true });
    return made;
  }
}
