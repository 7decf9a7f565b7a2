/**
 * A stand-in for dojot's REST API (dojot cannot run here), following the contract cicada
 * relies on (README "dojot"): /auth, /template, /device, /x509/v1. It signs CSRs with a real
 * CA (so the certificates work against mosquitto) and injects the faults the real platform
 * shows under load: 502s, 429, slow answers, a wrong password, expiring tokens.
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
  /** Requests to paths starting with this answer 429. */
  rateLimit: string | null;
  /** Every answer waits this long. */
  delayMs: number;
  /** Lifetime of issued JWTs. */
  jwtTtlS: number;
}

export interface FakeDojot {
  url: string;
  /** Directory of the CA that signs (its .ca/ holds the key: a test broker can use it). */
  caDir: string;
  ca: CertificateAuthority;
  faults: Faults;
  devices: string[];
  templates: string[];
  certs: Map<string, { pem: string; cn: string; device?: string; revoked: boolean }>;
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
    faults: { fail502: 0, rateLimit: null, delayMs: 0, jwtTtlS: 3600, ...faults },
    devices: [],
    templates: [],
    certs: new Map(),
    log: [],
    auths: 0,
    stop: () => server.stop(true),
    [Symbol.dispose]: () => server.stop(true),
  };
  const tokens = new Map<string, number>();
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
        tokens.set(jwt, exp);
        return json({ jwt });
      }
      const bearer = req.headers.get("authorization")?.replace(/^Bearer /, "") ?? "";
      const exp = tokens.get(bearer);
      if (!exp || exp * 1000 < Date.now()) return json({ message: "invalid or expired token" }, 401);
      if (state.faults.fail502 > 0) {
        state.faults.fail502--;
        return new Response("<html>502 Bad Gateway</html>", { status: 502 });
      }
      if (state.faults.rateLimit && path.startsWith(state.faults.rateLimit)) return json({ message: "API rate limit exceeded" }, 429);

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
        return json({ devices: made.map((id) => ({ id, label: "cicada" })), message: "devices created" });
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
        const body = (await req.json()) as { csr?: string };
        let csr: x509.Pkcs10CertificateRequest;
        try {
          csr = new x509.Pkcs10CertificateRequest(body.csr ?? "");
          if (!(await csr.verify())) throw new Error("bad signature");
        } catch (err) {
          return json({ message: `invalid CSR: ${(err as Error).message}` }, 400);
        }
        const cn = csr.subjectName.getField("CN")[0] ?? "";
        const spki = new Uint8Array(csr.publicKey.rawData);
        const kind = csr.publicKey.algorithm.name === "ECDSA" ? "ec" : "rsa";
        const now = Date.now();
        const { der } = buildCertificate({ subject: distinguishedName(cn), spki, subjectKind: kind, profile: "client", notBefore: new Date(now - 3_600_000), notAfter: new Date(now + 86_400_000) }, ca);
        const fp = createHash("sha256").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
        const pem = toPem("CERTIFICATE", der);
        state.certs.set(fp, { pem, cn, revoked: false });
        return json({ certificateFingerprint: fp, certificatePem: pem.trimEnd() }, 201);
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
