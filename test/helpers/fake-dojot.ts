/**
 * A stand-in for dojot's REST API (dojot cannot run here), written from dojot's own source
 * (x509-identity-mgmt: certificates-routes.js, certificates-service.js, dn-utils.js,
 * certificate-model.js, the request schema) and its documented device API: /auth, /template,
 * /device, /x509/v1. It signs CSRs with a real CA (so the certificates work against mosquitto)
 * the way dojot does — only CN in the CSR's subject, the CN checked against the configured
 * rule, the tenant of the token written in front of it, O set by dojot — and injects the faults
 * the real platform shows under load: 502s, 429, slow answers, answers that never come after
 * the work was done, a wrong password, expiring tokens.
 */
import { createHash } from "node:crypto";
import { buildCertificate, distinguishedName } from "../../src/pki/build.ts";
import type { CertificateAuthority } from "../../src/pki/ca.ts";
import { fromPem, toPem } from "../../src/pki/pem.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { x509 } from "../../src/pki/x509.ts";
import { ensureCertDir } from "../../src/store/dir.ts";

export interface Faults {
  /** The next N requests (after auth) answer 502. */
  fail502: number;
  /** Requests whose path, or "METHOD path", starts with this answer 429. */
  rateLimit: string | null;
  /** Every answer waits this long. */
  delayMs: number;
  /** Lifetime of issued JWTs. */
  jwtTtlS: number;
  /** The next N requests whose "METHOD /path" starts with `hangOn` are done, then answered only after `hangMs` (past the client's timeout). */
  hangAfterWork: number;
  hangOn: string;
  hangMs: number;
  /**
   * X509IDMGMT_CERTIFICATE_SUBJECT_ALLOWEDATTRSCONSTRAINTS for CN: dojot's default
   * `^[0-9A-Za-z ]{1,255}$`; null where an operator relaxed it.
   */
  cnRule: RegExp | null;
  /** X509IDMGMT_CERTIFICATE_SUBJECT_CONSTANTATTRS_O. */
  organization: string;
  /** Whether GET /x509/v1/certificates exists (older versions have no listing). */
  listing: boolean;
}

export interface FakeDojot {
  url: string;
  /** Directory of the CA that signs (its .ca/ holds the key: a test broker can use it). */
  caDir: string;
  ca: CertificateAuthority;
  faults: Faults;
  devices: string[];
  templates: string[];
  /** Every certificate issued, by fingerprint; `cn` is the CN dojot issued (tenant:csr-cn). */
  certs: Map<string, { pem: string; cn: string; tenant: string; device?: string; revoked: boolean }>;
  /** Every request as "METHOD /path", in order, with the time it arrived. */
  log: { at: number; line: string }[];
  auths: number;
  stop(): void;
  [Symbol.dispose](): void;
}

const USER = "admin";
export const FAKE_PASSWORD = "s3cret";

function b64url(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString("base64url");
}

export function startFakeDojot(caDir: string, faults: Partial<Faults> = {}): FakeDojot {
  const { ca } = openLocalCa(ensureCertDir(caDir), { kind: "ec" });
  const state: FakeDojot = {
    url: "",
    caDir,
    ca,
    faults: { fail502: 0, rateLimit: null, delayMs: 0, jwtTtlS: 3600, hangAfterWork: 0, hangOn: "", hangMs: 3000, cnRule: /^[0-9A-Za-z ]{1,255}$/, organization: "dojot IoT Platform", listing: true, ...faults },
    devices: [],
    templates: [],
    certs: new Map(),
    log: [],
    auths: 0,
    stop: () => server.stop(true),
    [Symbol.dispose]: () => server.stop(true),
  };
  /** JWT → its expiry and tenant (dojot reads the tenant from the token's `service` claim). */
  const tokens = new Map<string, { exp: number; tenant: string }>();
  const json = (body: unknown, status = 200) => Response.json(body, { status });

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const path = url.pathname;
      state.log.push({ at: performance.now(), line: `${req.method} ${path}${url.search}` });
      if (state.faults.delayMs) await Bun.sleep(state.faults.delayMs);
      if (req.method === "POST" && path === "/auth") {
        const body = (await req.json().catch(() => ({}))) as { username?: string; passwd?: string };
        if (body.username !== USER || body.passwd !== FAKE_PASSWORD) return json({ message: "Authentication failed" }, 401);
        state.auths++;
        const exp = Math.floor(Date.now() / 1000) + state.faults.jwtTtlS;
        const jwt = `${b64url({ alg: "none" })}.${b64url({ exp, service: "admin" })}.sig${state.auths}`;
        tokens.set(jwt, { exp, tenant: "admin" });
        return json({ jwt });
      }
      const bearer = req.headers.get("authorization")?.replace(/^Bearer /, "") ?? "";
      const token = tokens.get(bearer);
      if (!token || token.exp * 1000 < Date.now()) return json({ message: "invalid or expired token" }, 401);
      const tenant = token.tenant;
      // Work done, answer late: the client times out not knowing whether it happened.
      const hang = state.faults.hangAfterWork > 0 && `${req.method} ${path}${url.search}`.startsWith(state.faults.hangOn);
      if (hang) state.faults.hangAfterWork--;
      const answer = async (r: Response) => {
        if (hang) await Bun.sleep(state.faults.hangMs);
        return r;
      };
      if (state.faults.fail502 > 0) {
        state.faults.fail502--;
        return new Response("<html>502 Bad Gateway</html>", { status: 502 });
      }
      const rl = state.faults.rateLimit;
      if (rl && (path.startsWith(rl) || `${req.method} ${path}`.startsWith(rl))) return json({ message: "API rate limit exceeded" }, 429);

      if (path === "/template" && req.method === "POST") {
        const id = String(state.templates.length + 1);
        state.templates.push(id);
        return json({ template: { id, label: "cicada" }, result: "ok" });
      }
      if (path === "/template" && req.method === "DELETE") {
        state.templates = [];
        return json({ result: "ok" });
      }
      if (path === "/device" && req.method === "POST") {
        const count = Number(url.searchParams.get("count") ?? 1);
        const made: string[] = [];
        for (let i = 0; i < count; i++) {
          let id: string;
          do id = Math.floor(Math.random() * 0xffffff).toString(16).padStart(6, "0");
          while (state.devices.includes(id));
          state.devices.push(id);
          made.push(id);
        }
        return answer(json({ devices: made.map((id) => ({ id, label: "cicada" })), message: "devices created" }));
      }
      if (path === "/device" && req.method === "DELETE") {
        state.devices = [];
        return json({ result: "ok" });
      }
      if (path === "/device" && req.method === "GET") {
        const size = Number(url.searchParams.get("page_size") ?? 20);
        const total = Math.ceil(state.devices.length / size);
        if (url.searchParams.get("idsOnly") === "true") {
          const page = Number(url.searchParams.get("page_num") ?? 1);
          return json(state.devices.slice((page - 1) * size, page * size));
        }
        return json({ devices: [], pagination: { page: 1, total, has_next: total > 1 } });
      }
      if (path === "/x509/v1/ca" && req.method === "GET") return json({ caPem: ca.certPem });
      if (path === "/x509/v1/certificates" && req.method === "POST") {
        const body = (await req.json()) as { csr?: string; belongsTo?: { device?: string } };
        // register-or-generate-certificate.json: additionalProperties false.
        const extra = Object.keys(body).filter((k) => !["csr", "certificatePem", "belongsTo"].includes(k));
        if (extra.length) return json({ message: `Invalid body: unexpected ${extra.join(", ")}` }, 400);
        let csr: x509.Pkcs10CertificateRequest;
        try {
          csr = new x509.Pkcs10CertificateRequest(body.csr ?? "");
          if (!(await csr.verify())) throw new Error("bad signature");
        } catch (err) {
          return json({ message: `invalid CSR: ${(err as Error).message}` }, 400);
        }
        // dn-utils.js verify(): only allowed attributes (CN), CN mandatory, CN against its rule.
        const attrs = csr.subjectName.toJSON().flatMap((rdn) => Object.keys(rdn));
        if (!attrs.every((a) => a === "CN")) return json({ message: `Error checking SubjectDN allowed attributes in CSR. Allowed: [CN] Found: [${attrs.join(",")}]` }, 400);
        const csrCn = csr.subjectName.getField("CN")[0];
        if (csrCn === undefined) return json({ message: `Error checking SubjectDN mandatory attributes in CSR. Mandatory: [CN] Found: [${attrs.join(",")}]` }, 400);
        const rule = state.faults.cnRule;
        if (rule && !rule.test(csrCn)) {
          return json({ message: `Error checking SubjectDN 'CN' attribute in CSR. The value does not match the regular expression: ${rule.toString()}. Found: ${csrCn}` }, 400);
        }
        // cnamePrefix(tenant): the issued CN is tenant:<CSR's CN>; O is dojot's constant attribute.
        const cn = `${tenant}:${csrCn}`;
        const spki = new Uint8Array(csr.publicKey.rawData);
        const kind = csr.publicKey.algorithm.name === "ECDSA" ? "ec" : "rsa";
        const now = Date.now();
        const { der } = buildCertificate(
          { subject: distinguishedName(cn, state.faults.organization), spki, subjectKind: kind, profile: "client", notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) },
          ca,
        );
        const fp = createHash("sha256").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
        const pem = toPem("CERTIFICATE", der);
        state.certs.set(fp, { pem, cn, tenant, revoked: false, ...(body.belongsTo?.device ? { device: body.belongsTo.device } : {}) });
        return answer(json({ certificateFingerprint: fp, certificatePem: pem.trimEnd() }, 201));
      }
      if (path === "/x509/v1/certificates" && req.method === "GET") {
        if (!state.faults.listing) return json({ message: "not found" }, 404);
        // certificates-routes.js: express-paginate (page from 1, limit default 25, max 250), the tenant's records, projected fields.
        const limit = Math.min(250, Math.max(1, Number(url.searchParams.get("limit") ?? 25)));
        const page = Math.max(1, Number(url.searchParams.get("page") ?? 1));
        const fields = (url.searchParams.get("fields") ?? "fingerprint,pem,belongsTo").split(",");
        const mine = [...state.certs.entries()].filter(([, c]) => !c.revoked && c.tenant === tenant);
        const rows = mine.slice((page - 1) * limit, page * limit).map(([fingerprint, c]) => {
          const all: Record<string, unknown> = { fingerprint, pem: c.pem, belongsTo: c.device ? { device: c.device } : {}, tenant: c.tenant };
          return Object.fromEntries(fields.filter((f) => f in all).map((f) => [f, all[f]]));
        });
        const totalPages = Math.ceil(mine.length / limit);
        return json({ paging: { previous: null, current: { number: page }, next: page < totalPages ? { number: page + 1 } : null, totalItems: mine.length, totalPages, limitPerPage: limit }, certificates: rows });
      }
      const m = /^\/x509\/v1\/certificates\/(.+)$/.exec(path);
      if (m) {
        const fp = decodeURIComponent(m[1]!);
        const c = state.certs.get(fp);
        if (!c || c.revoked) return json({ message: "certificate not found" }, 404);
        if (req.method === "GET") return json({ fingerprint: fp, pem: c.pem, belongsTo: { device: c.device ?? null } });
        if (req.method === "PATCH") {
          const body = (await req.json()) as { belongsTo?: { device?: string } };
          if (!body.belongsTo?.device || !state.devices.includes(body.belongsTo.device)) return json({ message: "no such device" }, 400);
          c.device = body.belongsTo.device;
          return new Response(null, { status: 204 });
        }
        if (req.method === "DELETE") {
          c.revoked = true;
          return new Response(null, { status: 204 });
        }
      }
      return json({ message: "not found" }, 404);
    },
  });
  state.url = `http://127.0.0.1:${server.port}`;
  return state;
}

/** The certificate PEM's DER, for tests that check what dojot signed. */
export function certDer(pem: string): Uint8Array {
  return fromPem("CERTIFICATE", pem)[0]!;
}
