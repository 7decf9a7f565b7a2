/**
 * Connections to Redis, for the certificate store and for federated machines alike:
 * `redis://` or `rediss://` (TLS) URLs (config/store.ts reads REDIS_HOST / REDIS_PORT /
 * REDIS_PASSWD as dojot's tools did), reconnection forever with a capped backoff, and one line on stderr when the link
 * goes down and when it is back.
 */
import Redis from "ioredis";
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { isLoopbackHost } from "../sys/net.ts";
import { redactUrl } from "../sys/redact.ts";

export interface RedisSettings {
  url: string;
  /** CA certificate (PEM) that signed a rediss:// server's certificate. */
  ca?: string;
}

/** The URL given, else redis://host:port; a bare host:port gets redis://, a URL without a password gets `passwd`. */
export function redisUrl(given: string | undefined, where: { host: string; port: string; passwd?: string | undefined }): string {
  let url = given ?? `redis://${where.host}:${where.port}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) url = `redis://${url}`;
  if (!where.passwd) return url;
  try {
    const u = new URL(url);
    if (!u.password) u.password = encodeURIComponent(where.passwd);
    return u.toString();
  } catch {
    return url; // checkRedisUrl says what is wrong with it
  }
}

/** Problems with a Redis URL, for the caller's list of bad input. */
export function checkRedisUrl(url: string): string | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== "redis:" && u.protocol !== "rediss:") return `must be a redis:// or rediss:// URL (got "${redactUrl(url)}")`;
    if (!u.hostname) return `names no host (got "${redactUrl(url)}")`;
  } catch {
    return `is not a URL (got "${redactUrl(url)}")`;
  }
  return undefined;
}

/** True when the URL's host is this machine (127.0.0.0/8, ::1, localhost): no one else can publish on it. */
export function isLoopbackUrl(url: string): boolean {
  try {
    return isLoopbackHost(new URL(url).hostname);
  } catch {
    return false;
  }
}



/**
 * Opens a connection and waits until it is ready. Commands fail at once while the link is
 * down (no offline queue: callers restate what matters every second); subscriptions are
 * restored on reconnect.
 */
export async function openRedis(s: RedisSettings, name: string, say: (line: string) => void, timeoutMs = 10_000, db?: number): Promise<Redis> {
  const tls = s.url.startsWith("rediss:") ? { ca: s.ca, rejectUnauthorized: true } : undefined;
  const redis = new Redis(s.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 5000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    connectionName: name,
    tls,
    ...(db === undefined ? {} : { db }),
  });
  let down = false;
  let lastError: unknown;
  redis.on("error", (err) => {
    lastError = err;
    if (!down && redis.status !== "connecting") say(`Redis ${redactUrl(s.url)} unreachable (${messageOf(err)}); retrying`);
    down = true;
  });
  redis.on("close", () => {
    down = true;
  });
  redis.on("ready", () => {
    if (down) say(`Redis ${redactUrl(s.url)} is back`);
    down = false;
  });
  const timer = setTimeout(() => redis.disconnect(), timeoutMs);
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    // connect() only says "Connection is closed"; the error event said why.
    throw new LoadError(`cannot reach Redis at ${redactUrl(s.url)}: ${messageOf(lastError ?? err)}`, EXIT.REMOTE);
  } finally {
    clearTimeout(timer);
  }
  down = false;
  return redis;
}
