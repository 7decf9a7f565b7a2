/** Issues certificates for a list of device ids into a directory, in this process or spread over worker processes. */
import { availableParallelism } from "node:os";
import { EXIT, LoadError } from "../errors.ts";
import { selfArgv } from "../sys/self.ts";
import { certDir, writeDevice } from "../store/dir.ts";
import { type DeviceRecord, RedisStore, type StoreSettings } from "../store/redis.ts";
import type { KeyKind } from "./build.ts";
import type { CertificateAuthority } from "./ca.ts";
import { LocalSigner } from "./signers/local.ts";
import { readFileSync } from "node:fs";
import { loadCa } from "./ca.ts";

export interface IssueJob {
  root: string;
  tenant: string;
  kind: KeyKind;
  days: number;
  /** The CA files, so worker processes can load the same CA. */
  caCert: string;
  caKey: string;
  ids: string[];
  /** Store in Redis (dojot's layout) instead of `root`. */
  store?: StoreSettings;
}

export interface IssueTally {
  created: number;
  /** Ids that already had a certificate: left as they were. */
  skipped: number;
}

/** Messages a certificate worker process sends its parent over IPC. */
export type WorkerReport = { type: "progress"; created: number; skipped: number } | { type: "error"; message: string };

const YIELD_EVERY = 64;
/** Certificates per Redis round trip when storing in Redis. */
const STORE_BATCH = 500;

/** Issues every id of `job` with `ca` in this process; `onProgress` sees running totals. */
export async function issueAll(job: IssueJob, ca: CertificateAuthority, onProgress: (t: IssueTally) => void): Promise<IssueTally> {
  const tally: IssueTally = { created: 0, skipped: 0 };
  const signer = new LocalSigner(ca, certDir(job.root), { tenant: job.tenant, days: job.days });
  const store = job.store ? await RedisStore.open(job.store) : null;
  let pending: DeviceRecord[] = [];
  const flush = async () => {
    const created = await store!.put(pending);
    tally.created += created;
    tally.skipped += pending.length - created;
    pending = [];
  };
  try {
    for (let i = 0; i < job.ids.length; i++) {
      const id = job.ids[i]!;
      const made = signer.issueNow(id, job.kind);
      if (store) {
        pending.push({ id, thingId: made.identity, keyPem: made.key, certPem: made.cert });
        if (pending.length >= STORE_BATCH) await flush();
      } else if (writeDevice(job.root, id, made.key, made.cert)) tally.created++;
      else tally.skipped++;
      if ((i + 1) % YIELD_EVERY === 0) {
        onProgress(tally);
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    if (store && pending.length) await flush();
  } finally {
    await store?.close();
  }
  onProgress(tally);
  return tally;
}

/** Below this many certificates per worker, starting processes costs more than it saves. */
const MIN_PER_WORKER = 250;

/** How many processes to use for `n` certificates with at most `jobs` of them. */
export function workersFor(n: number, jobs = availableParallelism()): number {
  return Math.max(1, Math.min(jobs, Math.floor(n / MIN_PER_WORKER)));
}

/**
 * Issues `job.ids` over `workers` processes of this binary (`cicada certs __worker`), each
 * loading the CA from `job.caCert`/`job.caKey`. With one worker it runs in this process.
 */
export async function issueParallel(job: IssueJob, ca: CertificateAuthority, workers: number, onProgress: (t: IssueTally) => void): Promise<IssueTally> {
  if (workers <= 1) return issueAll(job, ca, onProgress);
  const parts: IssueTally[] = Array.from({ length: workers }, () => ({ created: 0, skipped: 0 }));
  const sum = (): IssueTally => parts.reduce((a, p) => ({ created: a.created + p.created, skipped: a.skipped + p.skipped }), { created: 0, skipped: 0 });
  const errors: string[] = [];
  const children = parts.map((part, w) => {
    const ids = job.ids.filter((_, i) => i % workers === w);
    const child = Bun.spawn(selfArgv(["certs", "__worker"]), {
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      ipc(msg: WorkerReport) {
        if (msg.type === "progress") {
          part.created = msg.created;
          part.skipped = msg.skipped;
          onProgress(sum());
        } else errors.push(msg.message);
      },
    });
    child.send({ ...job, ids });
    return child;
  });
  const codes = await Promise.all(children.map((c) => c.exited));
  const failed = codes.filter((c) => c !== 0).length;
  if (failed > 0 || errors.length > 0) {
    throw new LoadError(`${failed} of ${workers} certificate workers failed${errors.length ? `: ${errors[0]}` : ""}`, EXIT.INTERNAL);
  }
  return sum();
}

/** Body of `cicada certs __worker`: takes one IssueJob over IPC, reports progress, exits. */
export function runIssueWorker(): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  process.once("message", async (job: IssueJob) => {
    try {
      const ca = loadCa(readFileSync(job.caCert, "utf8"), readFileSync(job.caKey, "utf8"), { cert: job.caCert, key: job.caKey });
      let last = 0;
      await issueAll(job, ca, (t) => {
        const now = performance.now();
        if (now - last < 100 && t.created + t.skipped < job.ids.length) return;
        last = now;
        process.send!({ type: "progress", created: t.created, skipped: t.skipped } satisfies WorkerReport);
      });
    } catch (err) {
      process.send!({ type: "error", message: err instanceof Error ? err.message : String(err) } satisfies WorkerReport);
      process.exitCode = 1;
    }
    process.disconnect?.();
    resolve();
  });
  return promise;
}
