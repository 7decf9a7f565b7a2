/**
 * Device certificates signed by dojot's x509 service (signer.ts), in parallel lanes and paced
 * in batches so the platform is not flooded. dojot allows only `^[0-9A-Za-z ]{1,255}$` in the
 * CN by default and writes the tenant in front itself; the identity each device gets is read
 * from its certificate. A signing request retried after it may have
 * reached dojot can leave a certificate no device holds: those are looked for afterwards in
 * dojot's certificate listing and revoked.
 */
import type { KeyKind } from "../pki/build.ts";
import { thingId } from "../pki/issue.ts";
import { commonNameOf } from "../pki/subject.ts";
import type { DojotClient } from "./client.ts";
import { DojotSigner } from "./signer.ts";

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

/** Where signed certificates go, with the identity their CN gives; resolves false when the device already had one (left alone). */
export type Sink = (id: string, keyPem: string, certPem: string, identity: string) => Promise<boolean>;

export interface DojotIssueResult {
  created: number;
  skipped: number;
  /** Devices whose certificate's CN is not `tenant:id` (e.g. `admin:admin:id` where dojot's CN rule was relaxed): a few examples. */
  unexpected: { id: string; cn: string }[];
  unexpectedCount: number;
  /** Signing requests retried after an attempt that may have reached dojot. */
  ambiguous: number;
  /** Certificates found in dojot with a device's CN that no device holds, and revoked. */
  orphansRevoked: number;
  /** False when dojot's listing could not be read: `ambiguous` requests may each have left an orphan. */
  orphansChecked: boolean;
}

export async function issueViaDojot(job: DojotIssueJob, client: DojotClient, sink: Sink, onProgress: (done: number, created: number) => void): Promise<DojotIssueResult> {
  const signer = new DojotSigner(client);
  const r: DojotIssueResult = { created: 0, skipped: 0, unexpected: [], unexpectedCount: 0, ambiguous: 0, orphansRevoked: 0, orphansChecked: true };
  /** For each device whose signing was retried ambiguously: the CN and the fingerprint it keeps. */
  const suspects = new Map<string, string>();
  let done = 0;
  const signOne = async (id: string) => {
    const signed = await signer.issue(id, job.kind);
    const cn = signed.identity;
    if (cn !== thingId(job.tenant, id)) {
      r.unexpectedCount++;
      if (r.unexpected.length < 3) r.unexpected.push({ id, cn });
    }
    if (signed.ambiguous) {
      r.ambiguous += signed.ambiguous;
      suspects.set(cn, signed.fingerprint);
    }
    if (job.associate) await client.associate(signed.fingerprint, id);
    if (await sink(id, signed.key, signed.cert, cn)) r.created++;
    else r.skipped++;
    onProgress(++done, r.created);
  };
  for (let start = 0; start < job.ids.length; start += job.batch) {
    if (start > 0 && job.waitMs > 0) await Bun.sleep(job.waitMs);
    const batch = job.ids.slice(start, start + job.batch);
    let next = 0;
    const failed: unknown[] = [];
    const lane = async () => {
      // The first failure stops every lane (and their progress) before it is reported.
      while (next < batch.length && !failed.length) {
        const id = batch[next++]!;
        await signOne(id).catch((err: unknown) => void failed.push(err));
      }
    };
    await Promise.all(Array.from({ length: Math.min(job.lanes, batch.length) }, lane));
    if (failed.length) throw failed[0];
  }
  if (suspects.size) await revokeOrphans(client, suspects, r);
  return r;
}

/** Revokes the certificates dojot lists with a suspect's CN other than the one the device kept. */
async function revokeOrphans(client: DojotClient, suspects: Map<string, string>, r: DojotIssueResult): Promise<void> {
  const listed = await client.certificates().catch(() => null);
  if (!listed) {
    r.orphansChecked = false;
    return;
  }
  for (const c of listed) {
    const cn = c.pem ? commonNameOf(c.pem) : null;
    if (!cn || !suspects.has(cn) || suspects.get(cn) === c.fingerprint || c.belongsTo?.device) continue;
    await client.revoke(c.fingerprint);
    r.orphansRevoked++;
  }
}
