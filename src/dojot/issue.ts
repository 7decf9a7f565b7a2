/**
 * Device certificates signed by dojot's x509 service: keys and CSRs made here, signed there,
 * in parallel lanes and paced in batches so the platform is not flooded.
 */
import type { KeyKind } from "../pki/build.ts";
import { requestDevice, thingId } from "../pki/issue.ts";
import type { DojotClient } from "./client.ts";

export interface DojotIssueJob {
  ids: string[];
  tenant: string;
  kind: KeyKind;
  /** Requests in flight at once. */
  lanes: number;
  /** After every `batch` certificates, wait `waitMs`. */
  batch: number;
  waitMs: number;
  /** Tie each certificate to its device in dojot (the devices exist there). */
  associate: boolean;
}

/** Where signed certificates go; resolves false when the device already had one (left alone). */
export type Sink = (id: string, keyPem: string, certPem: string) => Promise<boolean>;

export async function issueViaDojot(job: DojotIssueJob, client: DojotClient, sink: Sink, onProgress: (done: number, created: number) => void): Promise<{ created: number; skipped: number }> {
  let created = 0, skipped = 0, done = 0;
  for (let start = 0; start < job.ids.length; start += job.batch) {
    if (start > 0 && job.waitMs > 0) await Bun.sleep(job.waitMs);
    const batch = job.ids.slice(start, start + job.batch);
    let next = 0;
    const lane = async () => {
      while (next < batch.length) {
        const id = batch[next++]!;
        const { keyPem, csrPem } = requestDevice(thingId(job.tenant, id), job.kind);
        const signed = await client.sign(csrPem);
        if (job.associate) await client.associate(signed.fingerprint, id);
        if (await sink(id, keyPem, signed.certificatePem)) created++;
        else skipped++;
        onProgress(++done, created);
      }
    };
    await Promise.all(Array.from({ length: Math.min(job.lanes, batch.length) }, lane));
  }
  return { created, skipped };
}
