// dojot/ — dojot's REST API and signing through its x509 service.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * dojot's REST API, as its load-test tool used it: auth (JWT), templates, devices, and the
 * x509 service (sign a CSR, associate, revoke, CA). Every failure names the URL and the status.
 * 5xx answers, timeouts and network errors are retried with exponential backoff and jitter,
 * each retry said in a line; 429 stops at once (the platform asks us to slow down: pace with
 * --batch/--wait instead). A retried request that creates something (devices, certificates)
 * may have been done already by the attempt that timed out: callers are told (`ambiguous`) and
 * make it good (count before creating again, revoke orphans).
 */
import { EXIT, LoadError, messageOf } from "../errors.ts";
import { redactText, redactUrl } from "../sys/redact.ts";

export interface DojotSettings {
  url: string;
  user: string;
  passwd: string;
  /** Retries after the first attempt (DOJOT_API_RETRIES). */
  retries: number;
  /** First backoff, doubled per retry (DOJOT_API_RETRY_TIME, ms). */
  retryMs: number;
  timeoutMs: number;
}

export const DOJOT_DEFAULTS = { url: "http://127.0.0.1:8000", user: "admin", passwd: "admin", retries: 3, retryMs: 5000, timeoutMs: 30_000 };

/** An HTTP answer dojot should not have given, or none at all. */
export class DojotError extends LoadError {
  /** The URL asked, its password redacted. */
  readonly url: string;
  /** The request failed in a way that may have reached dojot (no answer, 5xx): it may have been done. */
  readonly ambiguous: boolean;
  /** What went wrong, without the URL. */
  readonly reason: string;
  constructor(
    readonly method: string,
    url: string,
    readonly status: number | null,
    detail: string,
    ambiguous = false,
  ) {
    const shown = redactUrl(url);
    // The detail may quote the URL too (a network error's text). Refused credentials are the
    // user's to fix; anything else is the remote service failing.
    super(redactText(`dojot ${method} ${shown}: ${status === null ? detail : `HTTP ${status}${detail ? ` ${detail}` : ""}`}`), status === 401 || status === 403 ? EXIT.BAD_INPUT : EXIT.REMOTE);
    this.name = "DojotError";
    this.url = shown;
    this.ambiguous = ambiguous;
    this.reason = redactText(status === null ? detail : `HTTP ${status}`);
  }
}

/** Seconds since the epoch at which a JWT expires (its `exp` claim), or null. */
export function jwtExpiry(jwt: string): number | null {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as { exp?: unknown };
    return typeof payload.exp === "number" ? payload.exp : null;
  } catch {
    return null;
  }
}

/** A JWT without `exp` is trusted for this long. */
const JWT_DEFAULT_TTL_S = 3600;
/** Renew a JWT this long before it expires. */
const JWT_MARGIN_S = 60;

export interface SignedCert {
  fingerprint: string;
  certificatePem: string;
  /** Earlier attempts of this request that failed after it may have reached dojot (each may have left a certificate no one holds). */
  ambiguous: number;
}

/** One certificate as dojot's listing shows it. */
export interface ListedCert {
  fingerprint: string;
  pem?: string;
  belongsTo?: { device?: string | null } | null;
}

export class DojotClient {
  private jwt: string | null = null;
  private jwtUntil = 0;
  /** Requests retried, for the caller's summary. */
  retried = 0;
  /** Told of each retry, as a line for the operator. */
  onRetry: ((line: string) => void) | null = null;
  /** Told every 2 s while an answer is awaited (what, seconds so far): for a progress line. */
  onWaiting: ((what: string, seconds: number) => void) | null = null;
  /** Told of every fresh JWT and its remaining life, to share it (dojot's tool kept it in Redis). */
  onToken: ((jwt: string, ttlS: number) => void) | null = null;

  constructor(
    readonly s: DojotSettings,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  /** A valid JWT, from the cache or a fresh POST /auth. */
  async token(): Promise<string> {
    const now = Date.now() / 1000;
    if (this.jwt && now < this.jwtUntil - JWT_MARGIN_S) return this.jwt;
    const body = await this.call<{ jwt?: string }>("POST", "/auth", { username: this.s.user, passwd: this.s.passwd }, false);
    if (!body?.jwt) throw new DojotError("POST", this.url("/auth"), 200, "answered without a jwt");
    this.jwt = body.jwt;
    this.jwtUntil = jwtExpiry(body.jwt) ?? now + JWT_DEFAULT_TTL_S;
    const ttl = Math.floor(this.jwtUntil - now - JWT_MARGIN_S);
    if (ttl > 0) this.onToken?.(body.jwt, ttl);
    return this.jwt;
  }

  /** Uses a JWT obtained elsewhere (e.g. cached in Redis); `exp` decides how long. */
  useToken(jwt: string): void {
    this.jwt = jwt;
    this.jwtUntil = jwtExpiry(jwt) ?? Date.now() / 1000 + JWT_DEFAULT_TTL_S;
  }

  async createTemplate(label = "cicada"): Promise<string> {
    const body = await this.call<{ template?: { id?: unknown } }>("POST", "/template", {
      label,
      attrs: [{ label: "timestamp", type: "dynamic", value_type: "integer" }],
    });
    const id = body?.template?.id;
    if (id === undefined || id === null) throw new DojotError("POST", this.url("/template"), 200, "answered without template.id");
    return String(id);
  }

  /**
   * Creates `count` devices from a template. POST /device is not idempotent: when an attempt
   * fails after it may have reached dojot (no answer, 5xx), the devices are counted before
   * asking again, and only the missing ones are created. Returns how many were created.
   */
  async createDevices(count: number, templateId: string, label = "cicada"): Promise<number> {
    const before = await this.deviceCount();
    let left = count;
    for (let attempt = 0; left > 0; attempt++) {
      try {
        await this.request("POST", `/device?count=${left}&verbose=false`, { templates: [templateId], attrs: {}, label }, true, [], false);
        return count;
      } catch (err) {
        if (!(err instanceof DojotError) || !err.ambiguous || attempt >= this.s.retries) throw err;
        await this.backoff(attempt, `POST /device?count=${left}`, err.reason);
        const now = await this.deviceCount();
        left = count - (now - before);
        if (left < count) this.onRetry?.(`dojot: ${count - left} of those ${count} devices were created after all; creating the other ${Math.max(0, left)}`);
      }
    }
    return count;
  }

  /** Devices in dojot: with one per page, the number of pages. */
  async deviceCount(): Promise<number> {
    const first = await this.call<{ pagination?: { total?: unknown } }>("GET", "/device?page_size=1");
    const n = Number(first?.pagination?.total ?? NaN);
    if (!Number.isInteger(n) || n < 0) throw new DojotError("GET", this.url("/device?page_size=1"), 200, "answered without pagination.total");
    return n;
  }

  /**
   * Every certificate of the tenant, page by page (GET /x509/v1/certificates, newer dojot
   * versions), with the fields asked; null when this dojot has no listing (404/405).
   */
  async certificates(fields = "fingerprint,pem,belongsTo", limit = 250): Promise<ListedCert[] | null> {
    const out: ListedCert[] = [];
    for (let page = 1; ; page++) {
      const path = `/x509/v1/certificates?fields=${fields}&limit=${limit}&page=${page}`;
      const { status, body } = await this.request("GET", path, undefined, true, [404, 405]);
      if (status === 404 || status === 405) return null;
      const b = body as { certificates?: ListedCert[]; paging?: { totalPages?: number } } | null;
      if (!Array.isArray(b?.certificates)) throw new DojotError("GET", this.url(path), status, "answered without a list of certificates");
      out.push(...b.certificates);
      if (!b.paging?.totalPages || page >= b.paging.totalPages || b.certificates.length === 0) return out;
    }
  }

  /** Every device id, page by page. */
  async deviceIds(pageSize = 1000): Promise<string[]> {
    const first = await this.call<{ pagination?: { total?: unknown } }>("GET", `/device?page_size=${pageSize}`);
    const pages = Number(first?.pagination?.total ?? 0);
    if (!Number.isInteger(pages) || pages < 0) throw new DojotError("GET", this.url(`/device?page_size=${pageSize}`), 200, "answered without pagination.total");
    const ids: string[] = [];
    for (let page = 1; page <= pages; page++) {
      const list = await this.call<unknown>("GET", `/device?idsOnly=true&page_size=${pageSize}&page_num=${page}`);
      if (!Array.isArray(list)) throw new DojotError("GET", this.url(`/device?idsOnly=true&page_num=${page}`), 200, "answered without a list of ids");
      for (const id of list) ids.push(String(id));
    }
    return ids;
  }

  async deleteDevices(): Promise<void> {
    await this.call("DELETE", "/device");
  }

  async deleteTemplates(): Promise<void> {
    await this.call("DELETE", "/template");
  }

  /** Signs a CSR. A retried attempt may leave a certificate behind: `ambiguous` counts them. */
  async sign(csrPem: string): Promise<SignedCert> {
    const seen = { ambiguous: 0 };
    const { body: raw } = await this.request("POST", "/x509/v1/certificates", { csr: csrPem }, true, [], true, seen);
    const body = raw as { certificateFingerprint?: string; certificatePem?: string } | null;
    if (!body?.certificateFingerprint || !body.certificatePem) throw new DojotError("POST", this.url("/x509/v1/certificates"), 200, "answered without certificateFingerprint/certificatePem");
    return { fingerprint: body.certificateFingerprint, certificatePem: body.certificatePem.endsWith("\n") ? body.certificatePem : `${body.certificatePem}\n`, ambiguous: seen.ambiguous };
  }

  /** Ties a certificate to its device (newer dojot versions). */
  async associate(fingerprint: string, deviceId: string): Promise<void> {
    await this.call("PATCH", `/x509/v1/certificates/${encodeURIComponent(fingerprint)}`, { belongsTo: { device: deviceId } });
  }

  async revoke(fingerprint: string): Promise<void> {
    await this.call("DELETE", `/x509/v1/certificates/${encodeURIComponent(fingerprint)}`);
  }

  /** True once dojot answers 404 for the certificate (revoked). */
  async isRevoked(fingerprint: string): Promise<boolean> {
    const { status } = await this.request("GET", `/x509/v1/certificates/${encodeURIComponent(fingerprint)}`, undefined, true, [404]);
    return status === 404;
  }

  async caPem(): Promise<string> {
    const body = await this.call<{ caPem?: string }>("GET", "/x509/v1/ca");
    if (!body?.caPem) throw new DojotError("GET", this.url("/x509/v1/ca"), 200, "answered without caPem");
    return body.caPem.endsWith("\n") ? body.caPem : `${body.caPem}\n`;
  }

  private url(path: string): string {
    return `${this.s.url.replace(/\/+$/, "")}${path}`;
  }

  private async call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T | null> {
    return (await this.request(method, path, body, auth)).body as T | null;
  }

  /**
   * One request with retries; the parsed JSON body (null when empty). `expected` lists error
   * statuses returned rather than thrown. A 401 with a cached JWT renews it once. With `retry`
   * false, a failure that may have reached dojot throws at once with `ambiguous` set; with it,
   * `seen.ambiguous` counts such failures that were retried.
   */
  private async request(
    method: string,
    path: string,
    body?: unknown,
    auth = true,
    expected: number[] = [],
    retry = true,
    seen: { ambiguous: number } = { ambiguous: 0 },
  ): Promise<{ status: number; body: unknown }> {
    const url = this.url(path);
    const what = `${method} ${path}`;
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      const started = performance.now();
      const waiting = this.onWaiting ? setInterval(() => this.onWaiting?.(what, Math.round((performance.now() - started) / 1000)), 2000) : null;
      try {
        const headers: Record<string, string> = { accept: "application/json" };
        if (body !== undefined) headers["content-type"] = "application/json";
        if (auth) headers.authorization = `Bearer ${await this.token()}`;
        res = await this.fetchImpl(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(this.s.timeoutMs) });
      } catch (err) {
        if (err instanceof DojotError) throw err;
        const reason = err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError") ? `no answer within ${this.s.timeoutMs / 1000} s` : messageOf(err);
        // Refused before it was sent (nothing listens) cannot have done anything; the rest may have.
        const mayHaveReached = !/ECONNREFUSED|refused/i.test(reason);
        if (!retry && mayHaveReached) throw new DojotError(method, url, null, reason, true);
        if (attempt < this.s.retries) {
          if (mayHaveReached) seen.ambiguous++;
          await this.backoff(attempt, what, reason);
          continue;
        }
        throw new DojotError(method, url, null, `${reason} (after ${attempt + 1} attempts)`);
      } finally {
        if (waiting) clearInterval(waiting);
      }
      if (res.ok) {
        const text = await res.text();
        if (!text) return { status: res.status, body: null };
        try {
          return { status: res.status, body: JSON.parse(text) };
        } catch {
          throw new DojotError(method, url, res.status, "answered with something that is not JSON");
        }
      }
      const detail = (await res.text().catch(() => "")).slice(0, 200).replace(/\s+/g, " ").trim();
      if (expected.includes(res.status)) return { status: res.status, body: null };
      if (res.status === 429) throw new DojotError(method, url, 429, "the platform is rate limiting: slow down (smaller --batch, longer --wait) and run again");
      if (res.status === 401 && auth && !renewed) {
        renewed = true;
        this.jwt = null;
        continue;
      }
      if (res.status === 401 || res.status === 403) throw new DojotError(method, url, res.status, `${detail} (check DOJOT_USER/DOJOT_PASSWD)`.trim());
      if (res.status >= 500 && !retry) throw new DojotError(method, url, res.status, detail, true);
      if (res.status >= 500 && attempt < this.s.retries) {
        seen.ambiguous++;
        await this.backoff(attempt, what, `HTTP ${res.status}`);
        continue;
      }
      throw new DojotError(method, url, res.status, res.status >= 500 ? `${detail} (after ${attempt + 1} attempts)`.trim() : detail);
    }
  }

  private async backoff(attempt: number, what: string, reason: string): Promise<void> {
    this.retried++;
    const ms = Math.min(60_000, this.s.retryMs * 2 ** attempt);
    const wait = ms / 2 + Math.random() * (ms / 2);
    this.onRetry?.(`dojot: ${what}: ${reason}; retry ${attempt + 1} of ${this.s.retries} in ${(wait / 1000).toFixed(1)} s`);
    await Bun.sleep(wait);
  }
}
