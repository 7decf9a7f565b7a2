/** dojot connection settings: flags and the environment variables dojot's tool read. */
import type { OptionSpecs, Options } from "./options.ts";
import { redactUrl } from "../sys/redact.ts";
import { DOJOT_DEFAULTS, type DojotSettings } from "../dojot/client.ts";

export const DOJOT_OPTIONS: OptionSpecs = {
  "dojot-url": { type: "string", arg: "URL", env: "DOJOT_URL", default: DOJOT_DEFAULTS.url, help: "dojot's API gateway" },
  "dojot-user": { type: "string", arg: "NAME", env: "DOJOT_USER", default: DOJOT_DEFAULTS.user, help: "dojot user" },
  "dojot-passwd": { type: "string", arg: "PASS", env: "DOJOT_PASSWD", default: DOJOT_DEFAULTS.passwd, help: "its password (prefer the env var)" },
  "api-retries": { type: "string", arg: "N", env: "DOJOT_API_RETRIES", default: String(DOJOT_DEFAULTS.retries), help: "Retries of a request that got a 5xx or no answer" },
  "api-retry-time": { type: "string", arg: "MS", env: "DOJOT_API_RETRY_TIME", default: String(DOJOT_DEFAULTS.retryMs), help: "First wait before a retry, doubled each time (ms)" },
  "api-timeout": { type: "string", arg: "MS", default: String(DOJOT_DEFAULTS.timeoutMs), help: "Give up on an answer after this long (ms)" },
};

export function readDojotSettings(o: Options): DojotSettings {
  const url = o.str("dojot-url")!;
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") o.fail("dojot-url", "must be an http:// or https:// URL", redactUrl(url));
  } catch {
    o.fail("dojot-url", "is not a URL", redactUrl(url));
  }
  return {
    url,
    user: o.str("dojot-user")!,
    passwd: o.str("dojot-passwd")!,
    retries: o.int("api-retries", DOJOT_DEFAULTS.retries, 0, 100),
    retryMs: o.int("api-retry-time", DOJOT_DEFAULTS.retryMs, 0, 600_000),
    timeoutMs: o.int("api-timeout", DOJOT_DEFAULTS.timeoutMs, 1, 600_000),
  };
}
