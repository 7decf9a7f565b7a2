/**
 * What every request to the control API must satisfy before a route sees it, so that a web
 * page elsewhere cannot drive a run through the operator's browser:
 * - `Host` names this server by address, `localhost`, or a name given with --ui-allow-host
 *   (a DNS-rebinding page arrives under its own name);
 * - a state-changing request (anything but GET/HEAD/OPTIONS) carries `Content-Type:
 *   application/json` — which a cross-site form cannot send without a preflight this server
 *   never grants — and, if the browser says where it comes from (`Origin`, `Sec-Fetch-Site`),
 *   comes from this server's own page;
 * - with a token, `Authorization: Bearer <token>` (scheme in any case), compared in constant time.
 */
import { timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";
import type { Context, MiddlewareHandler } from "hono";

export interface GuardOptions {
  token?: string;
  /** Host names (besides addresses and localhost) the server answers to, e.g. behind a reverse proxy. */
  allowHosts?: string[];
}

/** The host name of a `Host` header or URL authority, without port or IPv6 brackets. */
function hostName(authority: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(authority) ?? /^([^:]+)(?::\d+)?$/.exec(authority);
  return (m ? m[1]! : authority).toLowerCase();
}

const deny = (c: Context, status: 400 | 401 | 403, why: string) => c.json({ errors: [why] }, status);

export function guard(opts: GuardOptions): MiddlewareHandler {
  const allowed = new Set((opts.allowHosts ?? []).map((h) => h.toLowerCase()));
  const hostOk = (name: string) => isIP(name) !== 0 || name === "localhost" || allowed.has(name);
  const expected = opts.token ? Buffer.from(opts.token) : null;
  return async (c, next) => {
    const authority = c.req.header("host") ?? new URL(c.req.url).host;
    if (!hostOk(hostName(authority))) return deny(c, 403, `Host ${authority} is not this server: use its address, or start it with --ui-allow-host ${hostName(authority)}`);
    const method = c.req.method;
    if (method !== "GET" && method !== "HEAD" && method !== "OPTIONS") {
      const origin = c.req.header("origin");
      if (origin !== undefined) {
        let same = false;
        try {
          const o = new URL(origin);
          same = o.host === authority || allowed.has(o.hostname.toLowerCase());
        } catch {
          same = false;
        }
        if (!same) return deny(c, 403, `cross-site request refused (Origin ${origin})`);
      }
      if (c.req.header("sec-fetch-site") === "cross-site") return deny(c, 403, "cross-site request refused");
      const type = c.req.header("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) return deny(c, 400, "send Content-Type: application/json (with a JSON body, {} when there is nothing to say)");
    }
    if (expected && !(method === "GET" && (c.req.path === "/" || c.req.path.startsWith("/assets/")))) {
      // The page itself carries no data; it asks for the token and sends it with every call.
      const m = /^bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "");
      const given = Buffer.from(m ? m[1]!.trim() : "");
      const ok = given.length === expected.length && timingSafeEqual(given, expected);
      if (!ok) return deny(c, 401, "missing or wrong bearer token (Authorization: Bearer <token>)");
    }
    return next();
  };
}
