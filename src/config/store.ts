/**
 * Where Redis is and how the certificate store is laid out, from flags and dojot's environment
 * (REDIS_HOST, REDIS_PORT, REDIS_PASSWD, REDIS_CERTIFICATES_DB, REDIS_MAPPED_DB): the only
 * place these variables are read.
 */
import { checkRedisUrl, redisUrl } from "../store/connection.ts";
import { storeSettings, type StoreSettings } from "../store/redis.ts";
import { redactUrl } from "../sys/redact.ts";
import type { Options, OptionSpecs } from "./options.ts";

/** Where Redis is when no URL is given, and the password a URL without one gets. */
export const REDIS_ENV_OPTIONS: OptionSpecs = {
  "redis-host": { type: "string", arg: "HOST", env: "REDIS_HOST", default: "127.0.0.1", help: "Redis host when no URL is given" },
  "redis-port": { type: "string", arg: "PORT", env: "REDIS_PORT", default: "6379", help: "Redis port when no URL is given" },
  "redis-passwd": { type: "string", arg: "PASS", env: "REDIS_PASSWD", help: "Redis password for a URL that has none (prefer the env var)" },
  "redis-ca": { type: "string", arg: "FILE", help: "CA certificate of a rediss:// server" },
};

/** The certificate store's databases, as dojot's tool numbered them. */
export const STORE_OPTIONS: OptionSpecs = {
  ...REDIS_ENV_OPTIONS,
  "certificates-db": { type: "string", arg: "N", env: "REDIS_CERTIFICATES_DB", default: "0", help: "Store: db of the device hashes (a db in the URL's path wins)" },
  "mapped-db": { type: "string", arg: "N", env: "REDIS_MAPPED_DB", default: "1", help: "Store: db of ca_certificate, the counters and the 1..N map" },
};

/**
 * The Redis URL of option `flag`, else redis://REDIS_HOST:REDIS_PORT; a URL without a password
 * gets REDIS_PASSWD. A bad one is recorded as an issue.
 */
export function readRedisUrl(o: Options, flag: string): string {
  const url = redisUrl(o.str(flag), { host: o.str("redis-host")!, port: o.str("redis-port")!, passwd: o.str("redis-passwd") });
  const bad = checkRedisUrl(url);
  if (bad) {
    const from = o.has(flag) ? o.source(flag) : `${o.source("redis-host")}/${o.source("redis-port")}`;
    o.issues.push(`${from} ${bad.replace(/ \(got .*\)$/, "")} (got ${JSON.stringify(redactUrl(o.str(flag) ?? url))})`);
  }
  return url;
}

/** The store at `url` (a redis:// URL given to `--certs` or `--store`, or from REDIS_HOST/REDIS_PORT when `url` is undefined). */
export function readStoreSettings(o: Options, flag: string): StoreSettings {
  const url = readRedisUrl(o, flag);
  const certDb = o.int("certificates-db", 0, 0, 99);
  const mappedDb = o.int("mapped-db", 1, 0, 99);
  return storeSettings(url, { certDb, mappedDb }, o.fileText("redis-ca"));
}
