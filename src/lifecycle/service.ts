// lifecycle/ — renew and revoke during a run: the caps and the service that grants and performs them.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * The lifecycle service: grants renewals and revocations under the run's global caps and
 * performs them with a signer. One per machine (the supervisor, or the process itself with
 * --workers 1); its workers ask it over IPC.
 *
 * Caps are counted here when the run is one machine, and in Redis when machines federate
 * (an atomic check-and-increment, so machines racing for the last one cannot overshoot).
 */
import type Redis from "ioredis";
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { DojotClient } from "../dojot/client.ts";
import { DojotSigner } from "../dojot/signer.ts";
import type { Signer } from "../pki/signer.ts";
import { LocalSigner, openLocalCa } from "../pki/signers/local.ts";
import { certDir } from "../store/dir.ts";
import { exists } from "../sys/fs.ts";
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
      const made = await this.signer.renew(id, certPem);
      return { granted: true, cert: made.cert, key: made.key };
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
  return new LifecycleService(caps, signerFor(cfg, tenant), say);
}

/** The run's signer: dojot's x509 service, or the local CA of `caDir` (which must exist). */
function signerFor(cfg: LifecycleConfig, tenant: string): Signer {
  const filing = { renewDir: cfg.renewDir, revokeDir: cfg.revokeDir, crlWaitMs: cfg.crlWaitMs };
  if (cfg.signer === "dojot") return new DojotSigner(new DojotClient(cfg.dojot!), filing);
  const dir = certDir(cfg.caDir);
  if (!exists(dir.caCert) || !exists(dir.caKey)) throw new LoadError(`renew/revoke with the local CA need ${dir.caCert} and ${dir.caKey}`, EXIT.BAD_INPUT);
  return new LocalSigner(openLocalCa(dir, { kind: "ec" }).ca, dir, { tenant, ...filing, ...(cfg.crlHook ? { crlHook: cfg.crlHook } : {}) });
}
