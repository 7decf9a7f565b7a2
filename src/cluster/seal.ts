/**
 * Authenticated control messages between a controller and its machines. With a cluster key,
 * each message travels as `{"mac":…,"msg":"<json>"}`, the MAC an HMAC-SHA256 over the channel
 * name and the message text, so a message can neither be forged nor moved to another channel;
 * a signed message older (or newer) than MAX_SKEW_MS by the sender's clock is dropped, and the
 * receivers drop what repeats a sequence number they have seen (controller.ts, machine.ts).
 * Without a key (Redis on loopback only) messages are plain JSON and only the schema guards them.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { isLoopbackUrl } from "../store/connection.ts";
import { redactUrl } from "../sys/redact.ts";

/** Signed messages whose sender's clock differs from ours by more than this are dropped: clocks must agree within it (NTP). */
export const MAX_SKEW_MS = 60_000;
/** Anything longer is dropped unread: a machine's state with full histograms stays far below. */
export const MAX_MESSAGE_CHARS = 8 * 1024 * 1024;
/** Shortest cluster key accepted, in characters (`openssl rand -hex 32` makes 64). */
export const MIN_KEY_CHARS = 16;

const KEY_ENV = "CICADA_CLUSTER_KEY";

export type DropReason = "too_large" | "malformed" | "unsigned" | "bad_mac" | "signed_no_key" | "stale" | "invalid" | "replayed";

export type Opened = { ok: true; value: unknown } | { ok: false; reason: DropReason };

export class Seal {
  private readonly key: Buffer | null;

  constructor(key: string | null) {
    this.key = key ? Buffer.from(key, "utf8") : null;
  }

  /** The text to publish on `channel`. */
  wrap(channel: string, message: object): string {
    const msg = JSON.stringify(message);
    if (!this.key) return msg;
    return JSON.stringify({ mac: this.mac(channel, msg).toString("base64"), msg });
  }

  /** The message carried by `text`, if it is authentic (and fresh, when signed); else why not. */
  open(channel: string, text: string, now = Date.now()): Opened {
    if (text.length > MAX_MESSAGE_CHARS) return { ok: false, reason: "too_large" };
    let outer: unknown;
    try {
      outer = JSON.parse(text);
    } catch {
      return { ok: false, reason: "malformed" };
    }
    const env = outer as { mac?: unknown; msg?: unknown } | null;
    const enveloped = !!env && typeof env === "object" && typeof env.mac === "string" && typeof env.msg === "string";
    if (!this.key) return enveloped ? { ok: false, reason: "signed_no_key" } : { ok: true, value: outer };
    if (!enveloped) return { ok: false, reason: "unsigned" };
    const given = Buffer.from(env.mac as string, "base64");
    const want = this.mac(channel, env.msg as string);
    if (given.length !== want.length || !timingSafeEqual(given, want)) return { ok: false, reason: "bad_mac" };
    let value: unknown;
    try {
      value = JSON.parse(env.msg as string);
    } catch {
      return { ok: false, reason: "malformed" };
    }
    const at = (value as { at?: unknown } | null)?.at;
    if (typeof at !== "number" || Math.abs(now - at) > MAX_SKEW_MS) return { ok: false, reason: "stale" };
    return { ok: true, value };
  }

  private mac(channel: string, msg: string): Buffer {
    return createHmac("sha256", this.key!).update(channel).update("\n").update(msg).digest();
  }
}

/** `--cluster-key FILE`, or the key itself in CICADA_CLUSTER_KEY. */
export const CLUSTER_KEY_OPTION = {
  type: "string",
  arg: "FILE",
  env: KEY_ENV,
  help: `Shared secret that signs every control message over Redis: a file holding it, or the key itself in ${KEY_ENV}; required unless Redis is on loopback`,
} as const;

/**
 * The cluster key from `--cluster-key FILE`, else CICADA_CLUSTER_KEY (the key itself); null
 * when neither is set. Problems go to `o.issues` (the caller lists them all); a file others
 * can read is a warning.
 */
export function readClusterKey(o: { str(name: string): string | undefined; source(name: string): string; readonly issues: string[] }, warn: (line: string) => void): string | null {
  const fromEnv = o.source("cluster-key") === KEY_ENV;
  const file = fromEnv ? undefined : o.str("cluster-key");
  const issues = o.issues;
  let key: string | undefined;
  let from = KEY_ENV;
  if (file !== undefined) {
    from = `--cluster-key ${file}`;
    try {
      key = readFileSync(file, "utf8").trim();
      if (statSync(file).mode & 0o077) warn(`${file} can be read by other users: chmod 600 it`);
    } catch (err) {
      issues.push(`--cluster-key: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
      return null;
    }
  } else key = fromEnv ? o.str("cluster-key")?.trim() : undefined;
  if (key === undefined || key === "") {
    if (file !== undefined) issues.push(`${from} is empty`);
    return null;
  }
  if (key.length < MIN_KEY_CHARS) {
    issues.push(`${from} must hold at least ${MIN_KEY_CHARS} characters (got ${key.length}); make one with: openssl rand -hex 32 > cluster.key`);
    return null;
  }
  return key;
}

/** The problem, if any, with federating over `url` with or without a key: beyond loopback one is required. */
export function keyIssue(url: string, key: string | null, redisFlag: string): string | undefined {
  if (key || isLoopbackUrl(url)) return undefined;
  return `${redisFlag} ${redactUrl(url)} is reachable beyond this machine: give every machine the same --cluster-key FILE (or CICADA_CLUSTER_KEY), e.g. openssl rand -hex 32 > cluster.key, so that no one else on that Redis can steer them`;
}

/** Counts dropped messages by reason and says so: the first of each reason at once, then a summary at most every 30 s. */
export class Drops {
  readonly byReason: Partial<Record<DropReason, number>> = {};
  private lastSaid = 0;
  private unsaid = 0;

  constructor(
    private readonly what: string,
    private readonly say: (line: string) => void,
  ) {}

  get total(): number {
    let n = 0;
    for (const v of Object.values(this.byReason)) n += v;
    return n;
  }

  count(reason: DropReason): void {
    const first = !this.byReason[reason];
    this.byReason[reason] = (this.byReason[reason] ?? 0) + 1;
    const now = performance.now();
    if (first || now - this.lastSaid > 30_000) {
      const hint = reason === "signed_no_key" ? " (they carry a MAC: give this process the cluster key too)" : reason === "unsigned" ? " (give the sender the same cluster key)" : "";
      this.say(`dropped ${this.what}: ${reason}${hint}${this.unsaid ? `; ${this.unsaid} more dropped since the last note` : ""} (${this.total} in all)`);
      this.lastSaid = now;
      this.unsaid = 0;
    } else this.unsaid++;
  }
}
