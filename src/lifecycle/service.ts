/**
 * The lifecycle service: grants renewals and revocations under the run's global caps and
 * performs them with a signer. One per machine (the supervisor, or the process itself with
 * --workers 1); its workers ask it over IPC.
 *
 * Caps are counted here when the run is one machine, and in Redis when machines federate
 * (an atomic check-and-increment, so machines racing for the last one cannot overshoot).
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type Redis from "ioredis";
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { DojotClient } from "../dojot/client.ts";
import type { KeyKind } from "../pki/build.ts";
import type { CertificateAuthority } from "../pki/ca.ts";
import { writeCrl } from "../pki/crl.ts";
import { issueDevice, requestDevice, thingId } from "../pki/issue.ts";
import { fromPem } from "../pki/pem.ts";
import { openLocalCa } from "../pki/signers/local.ts";
import { parseCertificate, serialHex } from "../pki/x509.ts";
import { certDir, writeDevice, type CertDir } from "../store/dir.ts";
import { DIR_MODE, exists, makeDir, writeFileAtomic } from "../sys/fs.ts";
import type { LifecycleAnswer, LifecycleConfig, LifecycleHooks, LifecycleKind } from "./types.ts";

/** Counts grants against the caps. */
export interface Caps {
  /** True when one more `kind` fits under its cap (and counts it). */
  claim(kind: LifecycleKind): Promise<boolean>;
}

export class LocalCaps implements Caps {
  readonly granted = { renew: 0, revoke: 0 };
  constructor(private readonly max: Record<LifecycleKind, number>) {}
  async claim(kind: LifecycleKind): Promise<boolean> {
    if (this.granted[kind] >= this.max[kind]) return false;
    this.granted[kind]++;
    return true;
  }
}

/** Increment only while below the cap; answers the new count, or 0 when the cap is reached. */
const CLAIM_LUA = `
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n`;
const CAP_TTL_S = 7 * 86_400;

/** Caps shared by every machine of a federated run: keys `<prefix>renew` and `<prefix>revoke`. */
export class RedisCaps implements Caps {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly max: Record<LifecycleKind, number>,
  ) {}
  async claim(kind: LifecycleKind): Promise<boolean> {
    const n = (await this.redis.eval(CLAIM_LUA, 1, `${this.prefix}${kind}`, this.max[kind], CAP_TTL_S)) as number;
    return n > 0;
  }
}

/** Revokes certificates and issues new ones. */
export interface Signer {
  /** Resolves once the revocation is in force (for the local CA: CRL rewritten, broker told, given time to reload). */
  revoke(id: string, certPem: string): Promise<void>;
  /** A new key and certificate for `id`; the old certificate is revoked. */
  renew(id: string, certPem: string): Promise<{ cert: string; key: string }>;
}

function keyKindOf(certPem: string): KeyKind {
  return parseCertificate(certPem).publicKey.algorithm.name === "ECDSA" ? "ec" : "rsa";
}

/**
 * The local CA: revoked certificates are filed under the revoke directory and the CRL is
 * rewritten from it, once for all revocations that arrive within COALESCE_MS; then the hook
 * runs (the broker reloads the CRL) and, after `crlWaitMs`, every one of them resolves.
 */
export class LocalSigner implements Signer {
  static readonly COALESCE_MS = 50;
  private readonly dir: CertDir;
  private readonly ca: CertificateAuthority;
  private waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** CRL rewrites run one at a time. */
  private chain = Promise.resolve();

  constructor(
    private readonly cfg: LifecycleConfig,
    private readonly tenant: string,
  ) {
    this.dir = { ...certDir(cfg.caDir), renew: cfg.renewDir, revoke: cfg.revokeDir };
    if (!exists(this.dir.caCert) || !exists(this.dir.caKey)) throw new LoadError(`renew/revoke with the local CA need ${this.dir.caCert} and ${this.dir.caKey}`, EXIT.BAD_INPUT);
    this.ca = openLocalCa(this.dir, { kind: "ec" }).ca;
    makeDir(this.dir.renew, DIR_MODE);
    makeDir(this.dir.revoke, DIR_MODE);
  }

  /** Files `certPem` under the revoke directory (as `<id>.crt`, or `<id>-<serial>.crt` when that name is taken). */
  private file(id: string, certPem: string): void {
    const serial = serialHex(parseCertificate(certPem));
    let path = join(this.dir.revoke, `${id}.crt`);
    if (exists(path)) path = join(this.dir.revoke, `${id}-${serial}.crt`);
    writeFileAtomic(path, certPem, 0o644);
  }

  revoke(id: string, certPem: string): Promise<void> {
    this.file(id, certPem);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.waiting.push({ resolve, reject });
    this.timer ??= setTimeout(() => this.publish(), LocalSigner.COALESCE_MS);
    return promise;
  }

  private publish(): void {
    this.timer = null;
    const batch = this.waiting;
    this.waiting = [];
    this.chain = this.chain.then(async () => {
      try {
        writeCrl(this.dir, this.ca);
        if (this.cfg.crlHook) {
          const hook = Bun.spawn(["sh", "-c", this.cfg.crlHook], { stdio: ["ignore", "ignore", "pipe"] });
          const [code, err] = await Promise.all([hook.exited, new Response(hook.stderr).text()]);
          if (code !== 0) throw new Error(`CRL hook exited ${code}${err.trim() ? `: ${err.trim().split("\n")[0]}` : ""}`);
        }
        if (this.cfg.crlWaitMs > 0) await Bun.sleep(this.cfg.crlWaitMs);
        for (const w of batch) w.resolve();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const w of batch) w.reject(e);
      }
    });
  }

  async renew(id: string, certPem: string): Promise<{ cert: string; key: string }> {
    await this.revoke(id, certPem);
    const made = issueDevice(this.ca, thingId(this.tenant, id), keyKindOf(certPem), 365);
    writeDevice(this.dir.renew, id, made.keyPem, made.certPem, { replace: true });
    return { cert: made.certPem, key: made.keyPem };
  }
}

/** dojot's certificate fingerprint: SHA-256 of the DER, upper-case hex pairs joined by colons. */
export function fingerprint(certPem: string): string {
  const der = fromPem("CERTIFICATE", certPem)[0];
  if (!der) throw new Error("not a PEM certificate");
  return createHash("sha256").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
}

/** dojot's x509 service: revoke by fingerprint (DELETE), renew with a CSR made here. */
export class DojotSigner implements Signer {
  private readonly client: DojotClient;
  constructor(private readonly cfg: LifecycleConfig) {
    this.client = new DojotClient(cfg.dojot!);
  }

  async revoke(_id: string, certPem: string): Promise<void> {
    await this.client.revoke(fingerprint(certPem));
    if (this.cfg.crlWaitMs > 0) await Bun.sleep(this.cfg.crlWaitMs);
  }

  async renew(id: string, certPem: string): Promise<{ cert: string; key: string }> {
    await this.client.revoke(fingerprint(certPem));
    // dojot takes only CN=<device id> and writes the tenant in front itself (dojot/issue.ts).
    const { keyPem, csrPem } = requestDevice(id, keyKindOf(certPem));
    const signed = await this.client.sign(csrPem);
    writeDevice(this.cfg.renewDir, id, keyPem, signed.certificatePem, { replace: true });
    if (this.cfg.crlWaitMs > 0) await Bun.sleep(this.cfg.crlWaitMs);
    return { cert: signed.certificatePem, key: keyPem };
  }
}

export class LifecycleService implements LifecycleHooks {
  /** Error messages already told (each is said once: a broken signer fails every request alike). */
  private readonly told = new Set<string>();

  constructor(
    private readonly caps: Caps,
    private readonly signer: Signer,
    private readonly say: (line: string) => void = () => {},
  ) {}

  async request(kind: LifecycleKind, id: string, certPem: string): Promise<LifecycleAnswer> {
    try {
      if (!(await this.caps.claim(kind))) return { granted: false };
    } catch (err) {
      this.tell(`${kind} cap unavailable: ${messageOf(err)}`);
      return { granted: true, failure: "cap_unavailable" };
    }
    try {
      if (kind === "revoke") {
        await this.signer.revoke(id, certPem);
        return { granted: true };
      }
      return { granted: true, ...(await this.signer.renew(id, certPem)) };
    } catch (err) {
      this.tell(`${kind} failed: ${messageOf(err)}`);
      return { granted: true, failure: "signer_error" };
    }
  }

  private tell(line: string): void {
    if (this.told.has(line)) return;
    this.told.add(line);
    this.say(line);
  }
}

/** The service for a run: local caps, or Redis caps under `redis` + `prefix` when federated. */
export function lifecycleService(cfg: LifecycleConfig, tenant: string, say: (line: string) => void, shared?: { redis: Redis; prefix: string }): LifecycleService {
  const max = { renew: cfg.renew?.max ?? 0, revoke: cfg.revoke?.max ?? 0 };
  const caps = shared ? new RedisCaps(shared.redis, shared.prefix, max) : new LocalCaps(max);
  const signer = cfg.signer === "dojot" ? new DojotSigner(cfg) : new LocalSigner(cfg, tenant);
  return new LifecycleService(caps, signer, say);
}
