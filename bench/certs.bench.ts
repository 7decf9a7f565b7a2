#!/usr/bin/env bun
/**
 * Certificates per second: key + signed certificate + both files on disk, as `cicada certs create`
 * does. One JSON line per figure: one core (in this process) and all cores (worker processes),
 * EC P-256 and RSA-2048; plus @peculiar/x509's generator for comparison with the DER writer.
 *   bun bench/certs.bench.ts [--ec N] [--rsa N]
 */
import "reflect-metadata";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { issueAll, issueParallel, type IssueJob } from "../src/pki/batch.ts";
import type { KeyKind } from "../src/pki/build.ts";
import { openLocalCa } from "../src/pki/signers/local.ts";
import { ensureCertDir } from "../src/store/dir.ts";
import { x509 } from "../src/pki/x509.ts";

const { values } = parseArgs({ options: { ec: { type: "string", default: "4000" }, rsa: { type: "string", default: "150" } } });
const cores = availableParallelism();

function emit(o: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: "certs", ...o }));
}

async function run(kind: KeyKind, n: number, workers: number): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "cicada-bench-"));
  try {
    const dir = ensureCertDir(root);
    const { ca } = openLocalCa(dir, { kind });
    const ids = Array.from({ length: n }, (_, i) => i.toString(16).padStart(8, "0"));
    const job: IssueJob = { root, tenant: "admin", kind, days: 365, caCert: dir.caCert, caKey: dir.caKey, ids };
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const tally = workers === 1 ? await issueAll(job, ca, () => {}) : await issueParallel(job, ca, workers, () => {});
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    if (tally.created !== n) throw new Error(`created ${tally.created} of ${n}`);
    emit({
      key: kind === "ec" ? "P-256" : "RSA-2048",
      processes: workers,
      certs: n,
      seconds: +secs.toFixed(3),
      certs_per_s: Math.round(n / secs),
      certs_per_s_per_core: Math.round(n / secs / workers),
      ...(workers === 1 ? { cpu_us_per_cert: Math.round((cpu.user + cpu.system) / n) } : {}),
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** The same certificate made with @peculiar/x509 on WebCrypto (no files), for comparison. */
async function peculiar(n: number): Promise<void> {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const caKeys = await crypto.subtle.generateKey(alg, false, ["sign", "verify"]);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: "01", name: "CN=bench CA", keys: caKeys, signingAlgorithm: alg });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
    await crypto.subtle.exportKey("pkcs8", keys.privateKey);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: (1000 + i).toString(16),
      subject: `CN=admin:${i.toString(16)}`,
      issuer: ca.subject,
      signingAlgorithm: alg,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
    });
    cert.toString("pem");
  }
  const secs = (performance.now() - t0) / 1000;
  emit({ key: "P-256", processes: 1, certs: n, impl: "@peculiar/x509 (no files)", certs_per_s: Math.round(n / secs) });
}

const ec = Number(values.ec);
const rsa = Number(values.rsa);
await run("ec", ec, 1);
await run("ec", ec * cores, cores);
await peculiar(Math.min(ec, 500));
await run("rsa", rsa, 1);
await run("rsa", rsa * cores, cores);
