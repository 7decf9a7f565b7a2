/**
 * Checks a run's identities before any connection: every key parses and matches its
 * certificate, the certificate chains to the broker CA the run trusts (unless --insecure), and
 * it names a CN, which is the identity the device connects as. Large sets are sampled.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { commonNameOf } from "./subject.ts";

export interface IdentityLoader {
  id(index: number): string;
  load(index: number): { cert: string; key: string };
}

/** Indices to check among [first, first + count): all of them up to `size`, else the first, the last and `size` at random. */
export function sampleIndices(first: number, count: number, size = 100, random: () => number = Math.random): { indices: number[]; sampled: boolean } {
  if (count <= size + 2) return { indices: Array.from({ length: count }, (_, i) => first + i), sampled: false };
  const picked = new Set<number>([first, first + count - 1]);
  while (picked.size < size + 2) picked.add(first + Math.floor(random() * count));
  return { indices: [...picked].sort((a, b) => a - b), sampled: true };
}

/**
 * Problems with the identities at `indices`, one line each (device id first). `caPem` is the
 * CA the devices' certificates must chain to (null: not checked, e.g. --insecure). `tenant`
 * only informs: a CN under another tenant is said, since the device connects as its CN.
 */
export function checkIdentities(ids: IdentityLoader, indices: number[], caPem: string | null, tenant: string): { problems: string[]; notes: string[] } {
  const problems: string[] = [];
  const notes: string[] = [];
  let ca: X509Certificate | null = null;
  if (caPem !== null) {
    try {
      ca = new X509Certificate(caPem);
    } catch {
      return { problems: ["the broker CA (ca.crt or --broker-ca) is not a PEM certificate"], notes };
    }
  }
  let otherTenant = 0;
  for (const i of indices) {
    const id = ids.id(i);
    let pem: { cert: string; key: string };
    try {
      pem = ids.load(i);
    } catch (err) {
      problems.push(`${id}: cannot read its certificate and key (${(err as Error).message})`);
      continue;
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem.cert);
    } catch {
      problems.push(`${id}: its certificate is not a PEM certificate`);
      continue;
    }
    try {
      if (!cert.checkPrivateKey(createPrivateKey(pem.key))) problems.push(`${id}: its key does not match its certificate`);
    } catch {
      problems.push(`${id}: its key is not a PEM private key`);
    }
    if (ca && !(cert.checkIssued(ca) && cert.verify(ca.publicKey))) problems.push(`${id}: its certificate was not issued by the broker CA (${ca.subject.replace(/\n/g, ", ")})`);
    const cn = commonNameOf(pem.cert);
    if (!cn) problems.push(`${id}: its certificate has no CN (the identity a device connects as)`);
    else if (!cn.startsWith(`${tenant}:`)) otherTenant++;
  }
  if (otherTenant) notes.push(`${otherTenant} of ${indices.length} certificates checked name another tenant than ${tenant} in their CN: those devices connect as their CN`);
  return { problems, notes };
}
