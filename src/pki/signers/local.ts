/** Opens (or creates) the local CA that signs a certificate directory's devices. */
import { readFileSync } from "node:fs";
import { EXIT, LoadError, messageOf } from "../../errors.ts";
import { type CertDir } from "../../store/dir.ts";
import { exists, writeFileAtomic } from "../../sys/fs.ts";
import type { KeyKind } from "../build.ts";
import { createCa, loadCa, type CertificateAuthority } from "../ca.ts";
import { writeCrl } from "../crl.ts";

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
    if (!opts.caCert || !opts.caKey) throw new LoadError("--ca-cert and --ca-key go together", EXIT.BAD_INPUT);
    ca = loadCa(read(opts.caCert, "CA certificate"), read(opts.caKey, "CA key"), { cert: opts.caCert, key: opts.caKey });
    if (exists(dir.caCert)) {
      const current = loadCaCertOnly(dir.caCert);
      if (current !== ca.certPem.trim()) {
        throw new LoadError(`${dir.caCert} holds a different CA than ${opts.caCert}; use another --dir`, EXIT.BAD_INPUT);
      }
    } else {
      writeFileAtomic(dir.caCert, ca.certPem, 0o644);
    }
  } else if (exists(dir.caCert)) {
    if (!exists(dir.caKey)) {
      throw new LoadError(`${dir.caCert} exists but its key ${dir.caKey} does not: pass --ca-cert and --ca-key`, EXIT.BAD_INPUT);
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
