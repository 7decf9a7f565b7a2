/**
 * The Redis certificate store (dojot's layout) and dojot-signed certificates, end to end:
 * real redis-server, real mosquitto, dojot's API played by test/helpers/fake-dojot.ts.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { startRedis } from "../../scripts/lib/testbed.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { ensureCertDir, listDeviceIds } from "../../src/store/dir.ts";
import { writeDojotDump } from "../fixtures/dojot-dump.ts";
import { FAKE_PASSWORD, startFakeDojot } from "../helpers/fake-dojot.ts";
import { Probe } from "../helpers/probe.ts";
import { waitFor } from "../helpers/broker.ts";
import { HAVE_MOSQUITTO, HAVE_REDIS, deviceIdentity, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { cicada, sh, tempDir } from "../helpers/tmp.ts";

/** Every device of `dir` verifies against its ca.crt with openssl. */
async function opensslVerifiesAll(dir: string): Promise<number> {
  const crts = readdirSync(dir).filter((f) => f.endsWith(".crt") && f !== "ca.crt").map((f) => join(dir, f));
  const r = await sh(["openssl", "verify", "-CAfile", join(dir, "ca.crt"), ...crts]);
  expect(r.code).toBe(0);
  return r.stdout.trim().split("\n").filter((l) => l.endsWith(": OK")).length;
}

async function handshake(port: number, dir: string, id: string): Promise<number> {
  const ident = deviceIdentity(dir, id);
  await using p = Probe.connect({ port, clientId: ident.cn, ...ident });
  return (await p.connack).returnCode ?? -1;
}

describe.skipIf(!HAVE_REDIS || !HAVE_MOSQUITTO)("the Redis certificate store", () => {
  test("certs create --redis, then export anywhere: 2N+3 entries, openssl verifies, mTLS works; map, restore, clear", async () => {
    using tmp = tempDir();
    await using redis = await startRedis({ stateDir: tmp.path });
    const c = await cicada(["certs", "create", "--devices", "40", "--redis", redis.url, "--dir", "ca-home"], { cwd: tmp.path });
    expect(c.code).toBe(0);
    expect(c.stdout).toContain("created 40 EC P-256 device certificates in Redis");
    const raw = new Redis(`${redis.url}/0`);
    const keys = await raw.keys("*");
    expect(keys.length).toBe(40);
    const h = await raw.hgetall(keys[0]!);
    expect(Object.keys(h).sort()).toEqual(["private_key", "thing_certificate", "thing_id"]);
    expect(h.thing_id).toBe(`admin:${keys[0]}`);
    raw.disconnect();

    const e = await cicada(["store", "export", "--redis", redis.url, "--dir", "out"], { cwd: tmp.path });
    expect(e.code).toBe(0);
    const out = join(tmp.path, "out");
    expect(readdirSync(out).filter((n) => !n.startsWith(".")).length).toBe(2 * 40 + 3);
    expect(statSync(join(out, `${keys[0]}.key`)).mode & 0o777).toBe(0o600);
    expect(await opensslVerifiesAll(out)).toBe(40);
    // The CA came from the store: the broker trusts the CA that signed them.
    await using broker = await startBroker({ certDir: join(tmp.path, "ca-home"), stateDir: tmp.path });
    expect(await handshake(broker.port, out, keys[0]!)).toBe(0);
    // Exporting again changes nothing and says so.
    expect((await cicada(["store", "export", "--redis", redis.url, "--dir", "out"], { cwd: tmp.path })).stdout).toContain("40 already there");

    const mapped = new Redis(`${redis.url}/1`);
    expect((await cicada(["store", "map", "--redis", redis.url])).stdout).toContain("mapped 40");
    expect(await mapped.get("1")).toBe([...keys].sort()[0]!);
    await mapped.set("device_count", 17);
    expect((await cicada(["store", "restore", "--redis", redis.url])).code).toBe(0);
    expect(await mapped.get("device_count")).toBe("0");
    const refused = await cicada(["store", "clear", "--redis", redis.url]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("--yes");
    expect((await cicada(["store", "clear", "--yes", "--redis", redis.url])).code).toBe(0);
    expect(await mapped.dbsize()).toBe(0);
    mapped.disconnect();
  }, 60_000);

  test("a dump written by dojot's tool exports unchanged and its certificates connect", async () => {
    using tmp = tempDir();
    await using redis = await startRedis({ stateDir: tmp.path });
    const caHome = join(tmp.path, "their-ca");
    const { ca } = openLocalCa(ensureCertDir(caHome), { kind: "ec" });
    const ids = ["0a1b2c3d", "deadbeef", "00c0ffee"];
    await writeDojotDump(redis.url, ca, ids);
    // Their dumps hold no CA: it is given as a file, as dojot's tool fetched it from its CA.
    const noCa = await cicada(["store", "export", "--redis", redis.url, "--dir", "out"], { cwd: tmp.path });
    expect(noCa.code).toBe(2);
    expect(noCa.stderr).toContain("--signing-ca-cert FILE or --dojot");
    const e = await cicada(["store", "export", "--redis", redis.url, "--dir", "out", "--ca-cert", join(caHome, "ca.crt")], { cwd: tmp.path });
    expect(e.code).toBe(0);
    const out = join(tmp.path, "out");
    expect(listDeviceIds(out)).toEqual([...ids].sort());
    expect(await opensslVerifiesAll(out)).toBe(3);
    await using broker = await startBroker({ certDir: caHome, stateDir: tmp.path });
    for (const id of ids) expect(await handshake(broker.port, out, id)).toBe(0);
    // REDIS_HOST/REDIS_PORT find it too, and the mapping dojot made is there.
    const m = await cicada(["store", "map"], { env: { REDIS_HOST: "127.0.0.1", REDIS_PORT: String(redis.port) } });
    expect(m.stdout).toContain("mapped 3");
  }, 60_000);

  test("cicada run --certs redis://: devices load their identities straight from the store", async () => {
    using tmp = tempDir();
    await using redis = await startRedis({ stateDir: tmp.path, password: "pw" });
    const env = { REDIS_PASSWD: "pw" };
    expect((await cicada(["certs", "create", "--devices", "12", "--redis", `redis://127.0.0.1:${redis.port}`, "--dir", "ca-home"], { cwd: tmp.path, env })).code).toBe(0);
    await using broker = await startBroker({ certDir: join(tmp.path, "ca-home"), stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    for (const workers of ["1", "2"]) {
      const r = await cicada(["run", "--certs", `redis://127.0.0.1:${redis.port}`, "--port", String(broker.port), "--users", "12", "--rate", "100", "--duration", "3s", "--workers", workers, "--report", report], { env });
      expect(r.code).toBe(0);
      const rep = JSON.parse(readFileSync(report, "utf8"));
      expect(rep.stats.connect.count).toBe(12);
      expect(rep.stats.connect.failures).toBe(0);
    }
    const clients = [...readFileSync(broker.log, "utf8").matchAll(/New client connected from \S+ as (admin:\S+) /g)].map((m) => m[1]);
    expect(new Set(clients).size).toBe(12);
  }, 60_000);
  test("--signer dojot --redis: dojot-signed certificates in the store, one login shared through its jwt key", async () => {
    using tmp = tempDir();
    await using redis = await startRedis({ stateDir: tmp.path });
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"), { jwtTtlS: 600 });
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    for (const n of ["4", "3"]) {
      const c = await cicada(["certs", "create", "--signer", "dojot", "--devices", n, "--redis", redis.url], { cwd: tmp.path, env });
      expect(c.code).toBe(0);
    }
    expect(dojot.auths).toBe(1); // the second run used the JWT the first one left in Redis
    const mapped = new Redis(`${redis.url}/1`);
    const ttl = await mapped.ttl("jwt");
    expect(ttl).toBeGreaterThan(400); // expires with the token, less the renewal margin
    expect(ttl).toBeLessThanOrEqual(540);
    expect(await mapped.get("ca_certificate")).toBe(dojot.ca.certPem);
    mapped.disconnect();
    expect((await cicada(["store", "export", "--redis", redis.url, "--dir", "out"], { cwd: tmp.path })).code).toBe(0);
    expect(await opensslVerifiesAll(join(tmp.path, "out"))).toBe(7);
  }, 60_000);

  test("a store's CA is never replaced silently: local into dojot's and dojot's into local are refused, --replace-ca replaces", async () => {
    using tmp = tempDir();
    await using redis = await startRedis({ stateDir: tmp.path });
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    const storeCa = async () => {
      const mapped = new Redis(`${redis.url}/1`);
      const pem = await mapped.get("ca_certificate");
      mapped.disconnect();
      return pem;
    };
    expect((await cicada(["certs", "create", "--devices", "3", "--redis", redis.url, "--dir", "local"], { cwd: tmp.path })).code).toBe(0);
    const local = (await storeCa())!;
    const mixed = await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--redis", redis.url], { cwd: tmp.path, env });
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain("the Redis store holds certificates of another CA (O=cicada, CN=cicada local CA) than dojot's CA");
    expect(mixed.stderr).toContain("--replace-ca");
    expect(await storeCa()).toBe(local);
    expect(dojot.log.filter((l) => l.line === "POST /x509/v1/certificates")).toEqual([]);
    // The other way: a store with dojot's CA does not take a new local CA's certificates.
    const other = await startRedis({ stateDir: join(tmp.path, "r2") });
    try {
      expect((await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--redis", other.url], { cwd: tmp.path, env })).code).toBe(0);
      const back = await cicada(["certs", "create", "--devices", "2", "--redis", other.url, "--dir", "fresh"], { cwd: tmp.path });
      expect(back.code).toBe(2);
      expect(back.stderr).toContain("holds certificates of another CA");
    } finally {
      await other.stop();
    }
    const replaced = await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--redis", redis.url, "--replace-ca"], { cwd: tmp.path, env });
    expect(replaced.code).toBe(0);
    expect(await storeCa()).toBe(dojot.ca.certPem);
  }, 60_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("certificates signed by dojot", () => {
  test("dojot create, certs create --dojot: one certificate per dojot device, associated, verifying, connecting; dojot clear", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"), { fail502: 3 });
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD, DOJOT_API_RETRY_TIME: "10" };
    const made = await cicada(["dojot", "create", "--devices", "25", "--batch", "10"], { env });
    expect(made.code).toBe(0);
    expect(dojot.devices.length).toBe(25);
    // The first three authenticated requests (the template) are answered 502 and retried; then 3 batches.
    expect(dojot.log.filter((l) => l.line === "POST /template").length).toBe(1 + 3);
    expect(dojot.log.filter((l) => l.line.startsWith("POST /device")).length).toBe(3);
    expect(made.stdout).toContain("(3 requests retried)");
    // Each retry is said as it happens.
    expect(made.stderr.match(/^dojot: POST \/template: HTTP 502; retry [123] of 3 in \d+\.\d s$/gm)?.length).toBe(3);
    const c = await cicada(["certs", "create", "--dojot", "--dir", "cert"], { cwd: tmp.path, env });
    expect(c.code).toBe(0);
    const dir = join(tmp.path, "cert");
    expect(listDeviceIds(dir)).toEqual([...dojot.devices].sort());
    expect(readdirSync(dir).filter((n) => !n.startsWith(".")).length).toBe(2 * 25 + 3);
    expect([...dojot.certs.values()].map((x) => x.device).sort()).toEqual([...dojot.devices].sort());
    expect(readFileSync(join(dir, "ca.crt"), "utf8")).toBe(dojot.ca.certPem);
    expect(await opensslVerifiesAll(dir)).toBe(25);
    await using broker = await startBroker({ certDir: dojot.caDir, stateDir: tmp.path });
    expect(await handshake(broker.port, dir, dojot.devices[0]!)).toBe(0);

    // A run with them: identity = username = dojot's CN (tenant:id), ACL %u/attrs; every acked publish is delivered.
    const id = issuedIdentity(dojot.caDir);
    await using probe = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    await probe.connack;
    await probe.subscribe("+/attrs", 1);
    const report = join(tmp.path, "r.json");
    const run = await cicada(["run", "--certs", "cert", "--port", String(broker.port), "--users", "25", "--rate", "200", "--duration", "4s", "--interval", "300ms..500ms", "--report", report], { cwd: tmp.path });
    expect(run.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.stats.connect.count).toBe(25);
    expect(rep.stats.publish.failures).toBe(0);
    expect(rep.stats.publish.count).toBeGreaterThan(100);
    const delivered = () => probe.packets.filter((p) => p.cmd === "publish") as { topic: string }[];
    await waitFor(() => delivered().length >= rep.stats.publish.count, "every publish at the subscriber");
    await Bun.sleep(300);
    expect(delivered().length).toBe(rep.stats.publish.count);
    expect(new Set(delivered().map((p) => p.topic))).toEqual(new Set(dojot.devices.map((d) => `admin:${d}/attrs`)));
    expect((await cicada(["dojot", "clear", "--all"], { env })).code).toBe(0);
    expect(dojot.devices).toEqual([]);
    expect(dojot.templates).toEqual([]);
  }, 60_000);

  test("--signer dojot paces batches with --wait; 429 and a wrong password stop with a clear message", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    const c = await cicada(["certs", "create", "--signer", "dojot", "--devices", "6", "--batch", "2", "--wait", "300", "--dir", "cert"], { cwd: tmp.path, env });
    expect(c.code).toBe(0);
    expect(listDeviceIds(join(tmp.path, "cert")).length).toBe(6);
    const signs = dojot.log.filter((l) => l.line === "POST /x509/v1/certificates").map((l) => l.at);
    expect(signs.length).toBe(6);
    expect(signs[2]! - signs[1]!).toBeGreaterThanOrEqual(280);
    expect(signs[4]! - signs[3]!).toBeGreaterThanOrEqual(280);

    dojot.faults.rateLimit = "/x509/v1/certificates";
    const limited = await cicada(["certs", "create", "--signer", "dojot", "--devices", "3", "--dir", "cert"], { cwd: tmp.path, env });
    expect(limited.code).toBe(4);
    expect(limited.stderr).toContain(`dojot POST ${dojot.url}/x509/v1/certificates: HTTP 429`);
    const wrong = await cicada(["certs", "create", "--signer", "dojot", "--devices", "3", "--dir", "cert"], { cwd: tmp.path, env: { ...env, DOJOT_PASSWD: "nope" } });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain("HTTP 401");
    expect(wrong.stderr).toContain("DOJOT_PASSWD");
    // Nothing half-written: still the 6 devices.
    expect(listDeviceIds(join(tmp.path, "cert")).length).toBe(6);
  }, 60_000);

  test("CAs are never mixed in a directory: a local CA or another dojot's CA is kept unless --replace-ca", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    using other = startFakeDojot(join(tmp.path, "other-ca"));
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    expect((await cicada(["certs", "create", "--devices", "2", "--dir", "local"], { cwd: tmp.path })).code).toBe(0);
    const intoLocal = await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--dir", "local"], { cwd: tmp.path, env });
    expect(intoLocal.code).toBe(2);
    expect(intoLocal.stderr).toContain("(a local CA, key");
    expect(listDeviceIds(join(tmp.path, "local")).length).toBe(2);
    // A directory holding one dojot's CA (no key here) and certificates it signed.
    expect((await cicada(["certs", "create", "--signer", "dojot", "--devices", "3", "--dir", "d"], { cwd: tmp.path, env })).code).toBe(0);
    const otherEnv = { DOJOT_URL: other.url, DOJOT_PASSWD: FAKE_PASSWORD };
    const foreign = await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--dir", "d"], { cwd: tmp.path, env: otherEnv });
    expect(foreign.code).toBe(2);
    expect(foreign.stderr).toContain("holds certificates of another CA");
    expect(readFileSync(join(tmp.path, "d", "ca.crt"), "utf8")).toBe(dojot.ca.certPem);
    expect(await opensslVerifiesAll(join(tmp.path, "d"))).toBe(3);
    const replaced = await cicada(["certs", "create", "--signer", "dojot", "--devices", "2", "--dir", "d", "--replace-ca"], { cwd: tmp.path, env: otherEnv });
    expect(replaced.code).toBe(0);
    expect(readFileSync(join(tmp.path, "d", "ca.crt"), "utf8")).toBe(other.ca.certPem);
  }, 60_000);
});
