/** The dojot REST client against a stand-in that follows dojot's contract and injects its faults. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DojotClient, DojotError, type DojotSettings } from "../../src/dojot/client.ts";
import { requestDevice } from "../../src/pki/issue.ts";
import { parseCertificate } from "../../src/pki/x509.ts";
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
    const made: string[] = [];
    for (let i = 0; i < 3; i++) made.push(...(await c.createDevices(i < 2 ? 100 : 50, template)));
    expect(made.length).toBe(250);
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
    const { csrPem } = requestDevice(`admin:${device}`, "ec");
    const signed = await c.sign(csrPem);
    const cert = parseCertificate(signed.certificatePem);
    expect(cert.subject).toBe(`CN=admin:${device}`);
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
    using dojot = startFakeDojot(join(tmp.path, "ca"), { rateLimit: "/device" });
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
