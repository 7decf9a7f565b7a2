/** The CRL of the local CA: every certificate filed under `revoke/` is listed. */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type CertDir } from "../store/dir.ts";
import { exists, writeFileAtomic } from "../sys/fs.ts";
import { buildCrl, type Issuer, type RevokedEntry } from "./build.ts";
import { fromPem, toPem } from "./pem.ts";
import { parseCertificate } from "./x509.ts";

const DAY_MS = 86_400_000;

/** Revoked entries from `revoke/*.crt`; the revocation time is the file's modification time. */
export function revokedEntries(dir: CertDir): RevokedEntry[] {
  let names: string[] = [];
  try {
    names = readdirSync(dir.revoke).filter((n) => n.endsWith(".crt"));
  } catch {
    return [];
  }
  const seen = new Set<string>();
  const out: RevokedEntry[] = [];
  for (const n of names) {
    const path = join(dir.revoke, n);
    for (const der of fromPem("CERTIFICATE", readFileSync(path, "utf8"))) {
      const serialHex = parseCertificate(der).serialNumber.toLowerCase();
      if (seen.has(serialHex)) continue;
      seen.add(serialHex);
      out.push({ serial: new Uint8Array(Buffer.from(serialHex.length % 2 ? `0${serialHex}` : serialHex, "hex")), revokedAt: statSync(path).mtime });
    }
  }
  return out;
}

/**
 * Rewrites `.ca/crl.pem` atomically from `revoke/`, with the next CRL number.
 * Returns the number of revoked certificates listed.
 */
export function writeCrl(dir: CertDir, ca: Issuer, validDays = 30): number {
  const entries = revokedEntries(dir);
  const number = (exists(dir.crlNumber) ? Number(readFileSync(dir.crlNumber, "utf8")) || 0 : 0) + 1;
  const now = new Date();
  const der = buildCrl(ca, entries, number, now, new Date(now.getTime() + validDays * DAY_MS));
  writeFileAtomic(dir.crl, toPem("X509 CRL", der), 0o644);
  writeFileAtomic(dir.crlNumber, `${number}\n`, 0o600);
  return entries.length;
}
