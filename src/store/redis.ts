/**
 * The Redis certificate store, in the layout of dojot's load-test tool, so dumps made by it
 * work unchanged:
 *   db REDIS_CERTIFICATES_DB (0): one hash per device id with `thing_id` (tenant:id),
 *     `private_key` (PEM) and `thing_certificate` (PEM);
 *   db REDIS_MAPPED_DB (1): `1..N` -> device id, `device_count`, `devices_to_revoke`,
 *     `devices_to_renew`, `jwt`, `template_id`; and cicada's own `ca_certificate` (the CA PEM,
 *     so `store export` can write ca.crt without asking anyone).
 */
import type Redis from "ioredis";
import { openRedis, type RedisSettings } from "./connection.ts";
import { DEVICE_ID } from "./dir.ts";

export interface StoreSettings {
  redis: RedisSettings;
  certDb: number;
  mappedDb: number;
}

export interface DeviceRecord {
  id: string;
  thingId: string;
  keyPem: string;
  certPem: string;
}

const BATCH = 1000;
export const CA_KEY = "ca_certificate";
export const COUNTERS = ["device_count", "devices_to_renew", "devices_to_revoke"] as const;

export class RedisStore {
  private constructor(
    readonly certs: Redis,
    readonly mapped: Redis,
  ) {}

  static async open(s: StoreSettings, say: (line: string) => void = () => {}): Promise<RedisStore> {
    // A db in the URL's path would win over the db option: select them explicitly.
    const server = { ...s.redis, url: s.redis.url.replace(/^(rediss?:\/\/[^/]*)(\/.*)?$/, "$1") };
    const certs = await openRedis(server, "cicada-store", say, 10_000, s.certDb);
    const mapped = s.mappedDb === s.certDb ? certs : await openRedis(server, "cicada-store-mapped", say, 10_000, s.mappedDb);
    return new RedisStore(certs, mapped);
  }

  async close(): Promise<void> {
    await this.certs.quit().catch(() => {});
    if (this.mapped !== this.certs) await this.mapped.quit().catch(() => {});
  }

  /** Stores devices that are not there yet (a hash that exists is left alone); returns how many were new. */
  async put(records: readonly DeviceRecord[]): Promise<number> {
    let created = 0;
    for (let i = 0; i < records.length; i += BATCH) {
      const part = records.slice(i, i + BATCH);
      const claim = this.certs.pipeline();
      for (const r of part) claim.hsetnx(r.id, "thing_id", r.thingId);
      const claimed = (await claim.exec()) ?? [];
      const fill = this.certs.pipeline();
      part.forEach((r, k) => {
        if (claimed[k]?.[1] === 1) {
          fill.hset(r.id, "private_key", r.keyPem, "thing_certificate", r.certPem);
          created++;
        }
      });
      await fill.exec();
    }
    return created;
  }

  /** Device ids in the store (keys of the certificates db that look like device ids), sorted. */
  async ids(): Promise<string[]> {
    const ids: string[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await this.certs.scan(cursor, "COUNT", 5000);
      cursor = next;
      for (const k of keys) if (DEVICE_ID.test(k)) ids.push(k);
    } while (cursor !== "0");
    return ids.sort();
  }

  /** Key and certificate of each id (null where the store has none). */
  async get(ids: readonly string[]): Promise<({ keyPem: string; certPem: string } | null)[]> {
    const out: ({ keyPem: string; certPem: string } | null)[] = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const p = this.certs.pipeline();
      for (const id of ids.slice(i, i + BATCH)) p.hmget(id, "private_key", "thing_certificate");
      for (const [err, v] of (await p.exec()) ?? []) {
        const [key, cert] = (err ? [null, null] : v) as [string | null, string | null];
        out.push(key && cert ? { keyPem: key, certPem: cert } : null);
      }
    }
    return out;
  }

  /** dojot's `--map`: `1..N` -> device id in the mapped db, in sorted id order; returns N. */
  async map(): Promise<number> {
    const ids = await this.ids();
    for (let i = 0; i < ids.length; i += BATCH) {
      const p = this.mapped.pipeline();
      ids.slice(i, i + BATCH).forEach((id, k) => p.set(String(i + k + 1), id));
      await p.exec();
    }
    return ids.length;
  }

  /** dojot's `--restore`: the claim counters back to 0, certificates kept. */
  async restore(): Promise<void> {
    const p = this.mapped.pipeline();
    for (const c of COUNTERS) p.set(c, 0);
    await p.exec();
  }

  /** dojot's `--clear`: empties both databases. */
  async clear(): Promise<void> {
    await this.certs.flushdb();
    if (this.mapped !== this.certs) await this.mapped.flushdb();
  }

  async caPem(): Promise<string | null> {
    return this.mapped.get(CA_KEY);
  }

  async setCaPem(pem: string): Promise<void> {
    await this.mapped.set(CA_KEY, pem);
  }

  /** The dojot JWT shared through the mapped db (`jwt`, expiring with the token). */
  async jwt(): Promise<string | null> {
    return this.mapped.get("jwt");
  }

  async setJwt(jwt: string, ttlS: number): Promise<void> {
    await this.mapped.set("jwt", jwt, "EX", ttlS);
  }
}

/** `redis://` and `rediss://` name a store; anything else is a directory. */
export function isStoreUrl(s: string): boolean {
  return /^rediss?:\/\//.test(s);
}

/** Store settings from a URL (its password included); a db in the URL's path wins over `dbs.certDb`. */
export function storeSettings(url: string, dbs: { certDb: number; mappedDb: number }, ca?: string): StoreSettings {
  const path = /^rediss?:\/\/[^/]*\/(\d+)/.exec(url);
  const certDb = path ? Number(path[1]) : dbs.certDb;
  const base = url.replace(/^(rediss?:\/\/[^/]*)(\/.*)?$/, "$1");
  return { redis: { url: `${base}/${certDb}`, ...(ca !== undefined ? { ca } : {}) }, certDb, mappedDb: dbs.mappedDb };
}
