/** The dojot REST client against a stand-in that follows dojot's contract and injects its faults. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DojotClient, DojotError, type DojotSettings } from "../../src/dojot/client.ts";
import { requestDevice } from "../../src/pki/issue.ts";
import { parseCertificate } from "../../src/pki/x509.ts";
import { commonNameOf } from "../../src/pki/subject.ts";
import { issueViaDojot } from "../../src/dojot/issue.ts";
import { EXIT } from "../../src/errors.ts";
import { FAKE_PASSWORD, startFakeDojot } from "../helpers/fake-dojot.ts";
import { tempDir } from "../helpers/tmp.ts";

function settings(url: string, o: Partial<DojotSettings> = {}): DojotSettings {
  return { url, user: "admin", passwd: FAKE_PASSWORD, retries: 3, retryMs: 20, timeoutMs: 2000, ...o };
}

describe("dojot client", () => {
  test("template, devices in batches, every id back through pagination, clear", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url));
    const template = await c.createTemplate();
    expect(dojot.templates).toEqual([template]);
    let made = 0;
    for (let i = 0; i < 3; i++) made += await c.createDevices(i < 2 ? 100 : 50, template);
    expect(made).toBe(250);
    expect(dojot.devices.length).toBe(250);
    const ids = await c.deviceIds(100);
    expect(ids.sort()).toEqual([...dojot.devices].sort());
    expect(dojot.log.filter((l) => l.line.startsWith("GET /device?idsOnly=true")).length).toBe(3);
    // One token for all of it.
    expect(dojot.auths).toBe(1);
    await c.deleteDevices();
    await c.deleteTemplates();
    expect(await c.deviceIds(100)).toEqual([]);
    expect(dojot.templates).toEqual([]);
  });

  test("sign a CSR, associate, revoke and see it revoked; the CA", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url));
    await c.createDevices(1, await c.createTemplate());
    const device = dojot.devices[0]!;
    // dojot takes CN=<device id> and writes the tenant in front itself.
    const { csrPem } = requestDevice(device, "ec");
    const signed = await c.sign(csrPem);
    const cert = parseCertificate(signed.certificatePem);
    expect(cert.subject).toBe(`O=dojot IoT Platform, CN=admin:${device}`);
    expect(await cert.verify({ publicKey: parseCertificate(await c.caPem()).publicKey, signatureOnly: true })).toBe(true);
    await c.associate(signed.fingerprint, device);
    expect(dojot.certs.get(signed.fingerprint)!.device).toBe(device);
    expect(await c.isRevoked(signed.fingerprint)).toBe(false);
    await c.revoke(signed.fingerprint);
    expect(await c.isRevoked(signed.fingerprint)).toBe(true);
  });

  test("502s are retried with backoff; past the retries the error names URL, status and attempts", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { fail502: 2 });
    const c = new DojotClient(settings(dojot.url));
    const id = await c.createTemplate();
    expect(id).toBe("1");
    expect(c.retried).toBe(2);
    expect(dojot.log.filter((l) => l.line === "POST /template").length).toBe(3);

    dojot.faults.fail502 = 10;
    const err = await c.createTemplate().catch((e) => e);
    expect(err).toBeInstanceOf(DojotError);
    expect(err.message).toBe(`dojot POST ${dojot.url}/template: HTTP 502 <html>502 Bad Gateway</html> (after 4 attempts)`);
    // The waits grew: 20, 40, 80 ms (halved to doubled by jitter) between the four attempts.
    const times = dojot.log.filter((l) => l.line === "POST /template").slice(-4).map((l) => l.at);
    expect(times[3]! - times[0]!).toBeGreaterThanOrEqual(70);
  });

  test("429 stops at once with a clear message", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { rateLimit: "POST /device" });
    const c = new DojotClient(settings(dojot.url));
    const err = await c.createDevices(10, "1").catch((e) => e);
    expect(err.status).toBe(429);
    expect(err.message).toContain(`dojot POST ${dojot.url}/device?count=10&verbose=false: HTTP 429`);
    expect(err.message).toContain("slow down");
    expect(dojot.log.filter((l) => l.line.startsWith("POST /device")).length).toBe(1);
  });

  test("slow answers: retried after the timeout, then a clear error", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url, { timeoutMs: 300, retries: 1 }));
    await c.token();
    dojot.faults.delayMs = 600;
    const err = await c.caPem().catch((e) => e);
    expect(err.message).toBe(`dojot GET ${dojot.url}/x509/v1/ca: no answer within 0.3 s (after 2 attempts)`);
    dojot.faults.delayMs = 100;
    expect(await c.caPem()).toContain("BEGIN CERTIFICATE");
  });

  test("a slow answer is said every 2 s while it is awaited", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url, { timeoutMs: 5000 }));
    await c.token();
    const waits: [string, number][] = [];
    c.onWaiting = (what, s) => waits.push([what, s]);
    dojot.faults.delayMs = 2300;
    await c.caPem();
    expect(waits).toEqual([["GET /x509/v1/ca", 2]]);
  });

  test("a wrong password: 401 named, no retries", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url, { passwd: "wrong" }));
    const err = await c.createTemplate().catch((e) => e);
    expect(err.message).toBe(`dojot POST ${dojot.url}/auth: HTTP 401 {"message":"Authentication failed"} (check DOJOT_USER/DOJOT_PASSWD)`);
    expect(dojot.log.length).toBe(1);
  });

  test("the JWT is cached until it nears expiry, then renewed", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { jwtTtlS: 61 });
    const c = new DojotClient(settings(dojot.url));
    await c.caPem();
    await c.caPem();
    // 61 s tokens are inside the 60 s renewal margin within a second.
    expect(dojot.auths).toBe(1);
    dojot.faults.jwtTtlS = 3600;
    await Bun.sleep(1100);
    await c.caPem();
    expect(dojot.auths).toBe(2);
    // The new token lasts an hour: no more logins.
    await c.caPem();
    await c.caPem();
    expect(dojot.auths).toBe(2);
  });
});

describe("dojot's x509 service as its source has it", () => {
  test("the CSR carries CN=<device id>; a tenant-prefixed CN breaks dojot's default rule, and doubles the prefix where the rule is relaxed", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url));
    const refused = await c.sign(requestDevice("admin:abc123", "ec").csrPem).catch((e) => e);
    expect(refused).toBeInstanceOf(DojotError);
    expect(refused.status).toBe(400);
    expect(refused.message).toContain("Error checking SubjectDN 'CN' attribute in CSR. The value does not match the regular expression: /^[0-9A-Za-z ]{1,255}$/. Found: admin:abc123");
    expect(refused.code).toBe(EXIT.REMOTE);
    dojot.faults.cnRule = null;
    const doubled = await c.sign(requestDevice("admin:abc123", "ec").csrPem);
    expect(commonNameOf(doubled.certificatePem)).toBe("admin:admin:abc123");
  });

  test("issueViaDojot: bare ids in the CSRs, the identity read from what dojot returns", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"));
    const c = new DojotClient(settings(dojot.url));
    const got: [string, string][] = [];
    const r = await issueViaDojot({ ids: ["a1", "b2"], tenant: "admin", kind: "ec", lanes: 2, batch: 10, waitMs: 0, associate: false }, c, async (id, _k, _c, identity) => {
      got.push([id, identity]);
      return true;
    }, () => {});
    expect(got.sort()).toEqual([["a1", "admin:a1"], ["b2", "admin:b2"]]);
    expect(r.unexpectedCount).toBe(0);
    // A tenant other than the token's: the certificates still say what dojot issued, and the mismatch is reported.
    const other = await issueViaDojot({ ids: ["c3"], tenant: "acme", kind: "ec", lanes: 1, batch: 10, waitMs: 0, associate: false }, c, async () => true, () => {});
    expect(other.unexpected).toEqual([{ id: "c3", cn: "admin:c3" }]);
  });

  test("a POST /device that times out after dojot made the devices is not repeated: only the missing ones are created", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { hangAfterWork: 1, hangOn: "POST /device", hangMs: 1500 });
    const c = new DojotClient(settings(dojot.url, { timeoutMs: 500 }));
    const lines: string[] = [];
    c.onRetry = (l) => lines.push(l);
    const template = await c.createTemplate();
    expect(await c.createDevices(50, template)).toBe(50);
    expect(dojot.devices.length).toBe(50);
    expect(await c.createDevices(20, template)).toBe(20);
    expect(dojot.devices.length).toBe(70);
    expect(lines[0]).toStartWith("dojot: POST /device?count=50: no answer within 0.5 s; retry 1 of 3 in ");
    expect(lines[1]).toBe("dojot: 50 of those 50 devices were created after all; creating the other 0");
  });

  test("signing requests that timed out and were sent again: the orphan certificates they left are found and revoked", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { hangAfterWork: 2, hangOn: "POST /x509/v1/certificates", hangMs: 1500 });
    const c = new DojotClient(settings(dojot.url, { timeoutMs: 500 }));
    const kept = new Map<string, string>();
    const r = await issueViaDojot({ ids: ["d1", "d2", "d3"], tenant: "admin", kind: "ec", lanes: 1, batch: 10, waitMs: 0, associate: false }, c, async (id, _k, cert) => {
      kept.set(id, cert);
      return true;
    }, () => {});
    expect(r.created).toBe(3);
    expect(r.ambiguous).toBe(2);
    expect(r.orphansRevoked).toBe(2);
    // In dojot: exactly one live certificate per device, the one it holds.
    const live = [...dojot.certs.values()].filter((x) => !x.revoked);
    expect(live.map((x) => x.cn).sort()).toEqual(["admin:d1", "admin:d2", "admin:d3"]);
    expect(live.map((x) => x.pem).sort()).toEqual([...kept.values()].sort());
  });

  test("without dojot's certificate listing, the orphans that may be left are counted instead", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "ca"), { hangAfterWork: 1, hangOn: "POST /x509/v1/certificates", hangMs: 1500, listing: false });
    const c = new DojotClient(settings(dojot.url, { timeoutMs: 500 }));
    const r = await issueViaDojot({ ids: ["e1"], tenant: "admin", kind: "ec", lanes: 1, batch: 10, waitMs: 0, associate: false }, c, async () => true, () => {});
    expect([r.ambiguous, r.orphansRevoked, r.orphansChecked]).toEqual([1, 0, false]);
    expect([...dojot.certs.values()].filter((x) => !x.revoked).length).toBe(2);
  });
});
