/**
 * Certificate renew and revoke under load, against a real mosquitto that loads the local CA's
 * CRL (reloaded on SIGHUP through --crl-hook), and with machines racing for a global cap in a
 * real redis-server.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { startRedis } from "../../scripts/lib/testbed.ts";
import { Probe } from "../helpers/probe.ts";
import { FAKE_PASSWORD, startFakeDojot } from "../helpers/fake-dojot.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, HAVE_REDIS, deviceIdentity, startBroker, type Identity } from "../helpers/testbed.ts";
import { cicada, sh, tempDir } from "../helpers/tmp.ts";

/** What the broker answers a device with this identity: the CONNACK code, or "refused" when the TLS handshake or the link failed first. */
async function tryConnect(port: number, ident: Identity): Promise<number | "refused"> {
  await using p = Probe.connect({ port, clientId: ident.cn, ...ident });
  try {
    return (await p.connack).returnCode ?? -1;
  } catch {
    return "refused";
  }
}

/** Serial numbers (upper-case hex) the CRL lists, as openssl reads it. */
async function crlSerials(crl: string): Promise<string[]> {
  const r = await sh(["openssl", "crl", "-in", crl, "-noout", "-text"]);
  expect(r.code).toBe(0);
  return [...r.stdout.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.replace(/^0+/, ""));
}

async function serialOf(certPem: string): Promise<string> {
  const proc = Bun.spawn(["openssl", "x509", "-noout", "-serial"], { stdin: new TextEncoder().encode(certPem), stdout: "pipe" });
  return (await new Response(proc.stdout).text()).trim().replace(/^serial=/, "").replace(/^0+/, "");
}

const runArgs = (port: number, certDir: string, report: string, extra: string[]) => [
  "run", "--port", String(port), "--certs", certDir, "--users", "12", "--rate", "100", "--duration", "7s", "--interval", "500ms..1s", "--report", report, ...extra,
];

describe.skipIf(!HAVE_MOSQUITTO)("renew and revoke with the local CA", () => {
  test("revoke: listed in the CRL, the broker told, the revoked certificate refused on reconnect; the cap holds across two workers", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 12);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada(runArgs(broker.port, certDir, report, ["--workers", "2", "--revoke", "--revoke-max", "3", "--revoke-after", "0", "--revoke-probability", "100", "--crl-hook", `kill -HUP ${broker.pid}`]));
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.certificates).toEqual({ renewed: 0, revoked: 3, revoked_but_accepted: 0, renew_failures: 0, revoke_failures: 0 });
    expect(rep.stats.revoke.p50_ms).toBeGreaterThan(0);
    expect(rep.users.connected).toBe(12 - 3);
    expect(r.stdout).toContain("every revoked certificate was refused");

    const revoked = readdirSync(join(certDir, "revoke")).map((n) => n.replace(/\.crt$/, "")).sort();
    expect(revoked.length).toBe(3);
    const listed = await crlSerials(join(certDir, ".ca", "crl.pem"));
    for (const id of revoked) {
      expect(listed).toContain(await serialOf(readFileSync(join(certDir, "revoke", `${id}.crt`), "utf8")));
      // From the outside: the broker refuses the revoked device, and still takes the others.
      expect(await tryConnect(broker.port, deviceIdentity(certDir, id))).toBe("refused");
    }
    const kept = readdirSync(certDir).filter((n) => n.endsWith(".key")).map((n) => n.slice(0, -4)).find((id) => !revoked.includes(id))!;
    expect(await tryConnect(broker.port, deviceIdentity(certDir, kept))).toBe(0);
  }, 60_000);

  test("renew: the device reconnects with its new certificate and keeps publishing; the old one is refused", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 12);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada(runArgs(broker.port, certDir, report, ["--workers", "1", "--renew", "--renew-max", "2", "--renew-after", "0", "--renew-probability", "100", "--crl-hook", `kill -HUP ${broker.pid}`, "--crl-wait", "200"]));
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.certificates.renewed).toBe(2);
    expect(rep.certificates.renew_failures).toBe(0);
    expect(rep.users.connected).toBe(12);
    const renewed = readdirSync(join(certDir, "renew")).filter((n) => n.endsWith(".crt")).map((n) => n.slice(0, -4));
    expect(renewed.length).toBe(2);
    const log = readFileSync(broker.log, "utf8");
    for (const id of renewed) {
      const fresh = { ...deviceIdentity(certDir, id), cert: readFileSync(join(certDir, "renew", `${id}.crt`), "utf8"), key: readFileSync(join(certDir, "renew", `${id}.key`), "utf8") };
      expect((await sh(["openssl", "verify", "-CAfile", join(certDir, "ca.crt"), join(certDir, "renew", `${id}.crt`)])).code).toBe(0);
      expect(readFileSync(join(certDir, "renew", `${id}.key`)).length).toBeGreaterThan(0);
      expect(await tryConnect(broker.port, fresh)).toBe(0);
      expect(await tryConnect(broker.port, deviceIdentity(certDir, id))).toBe("refused");
      // Connected twice during the run (first certificate, then the renewed one).
      expect(log.split(`as admin:${id} `).length - 1).toBeGreaterThanOrEqual(2);
    }
    // Every device kept publishing to the end: each one's PUBACKed publishes reached the broker.
    expect(rep.stats.publish.failures).toBe(0);
  }, 60_000);

  test("a broker that is never told about the revocation accepts the revoked certificate: reported as revoked_but_accepted", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 12);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const r = await cicada(runArgs(broker.port, certDir, report, ["--workers", "1", "--revoke", "--revoke-max", "2", "--revoke-after", "0", "--revoke-probability", "100", "--crl-wait", "0"]));
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.certificates.revoked_but_accepted).toBe(2);
    expect(rep.certificates.revoked).toBe(0);
    expect(rep.errors.revoke).toEqual({ revoked_but_accepted: 2 });
    expect(r.stdout).toContain("2 REVOKED BUT STILL ACCEPTED");
  }, 60_000);

  test("settings are validated, every problem listed, exit 2", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 2);
    const r = await cicada(["run", "--certs", certDir, "--no-tls", "--revoke", "--revoke-probability", "150", "--renew-max", "-1", "--signer", "x509"], {
      env: { RENEW_DEVICES: "yes", TIME_TO_RENEW: "soon" },
    });
    expect(r.code).toBe(2);
    for (const s of ["--revoke-probability must be", "--renew-max must be", "TIME_TO_RENEW must be", "--signer must be one of local, dojot", "needs TLS"]) expect(r.stderr).toContain(s);
    const noCa = await cicada(["run", "--certs", join(tmp.path, "elsewhere"), "--ca-cert", join(certDir, "ca.crt"), "--revoke"]);
    expect(noCa.code).toBe(2);
    expect(noCa.stderr).toContain("renew/revoke with the local CA need its certificate and key");
  }, 30_000);
});

describe.skipIf(!HAVE_MOSQUITTO)("renew and revoke with dojot as the signer", () => {
  test("revoked by fingerprint and renewed through dojot's x509 service; a broker that does not ask dojot is reported", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    expect((await cicada(["certs", "create", "--signer", "dojot", "--devices", "12", "--dir", "cert"], { cwd: tmp.path, env })).code).toBe(0);
    const certDir = join(tmp.path, "cert");
    await using broker = await startBroker({ certDir: dojot.caDir, stateDir: tmp.path });
    const report = join(tmp.path, "r.json");
    const extra = ["--workers", "1", "--signer", "dojot", "--crl-wait", "0", "--revoke", "--revoke-max", "2", "--revoke-after", "0", "--revoke-probability", "100"];
    const r = await cicada(runArgs(broker.port, certDir, report, [...extra, "--renew", "--renew-max", "2", "--renew-after", "0", "--renew-probability", "100"]), { env });
    expect(r.code).toBe(0);
    const rep = JSON.parse(readFileSync(report, "utf8"));
    // Revocations reached dojot (DELETE by fingerprint: its GET now answers 404) ...
    const deletes = dojot.log.filter((l) => l.line.startsWith("DELETE /x509/v1/certificates/"));
    expect(deletes.length).toBe(2 + 2); // two revokes, and the old certificate of each renewed device
    expect([...dojot.certs.values()].filter((c) => c.revoked).length).toBe(4);
    // Filed as `certs revoke` files them: every revoked certificate under revoke/.
    expect(readdirSync(join(certDir, "revoke")).filter((n) => n.endsWith(".crt")).length).toBe(4);
    // ... but this broker checks no revocation list of dojot's: the platform accepted revoked certificates.
    expect(rep.certificates.revoked_but_accepted).toBe(2);
    // Renewed certificates are dojot's, and the broker takes them.
    expect(rep.certificates.renewed).toBe(2);
    const renewed = readdirSync(join(certDir, "renew")).filter((n) => n.endsWith(".crt"));
    expect(renewed.length).toBe(2);
    for (const n of renewed) expect((await sh(["openssl", "verify", "-CAfile", join(certDir, "ca.crt"), join(certDir, "renew", n)])).code).toBe(0);
  }, 60_000);
});

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_REDIS)("renew and revoke across machines", () => {
  test("two machines race for the revoke cap in Redis: exactly the cap is revoked; each runs its own hook, never the controller's", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 30);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using redis = await startRedis({ stateDir: tmp.path });
    // The hook that acts on a machine comes from that machine's command line; the controller's stays on the controller.
    const machines = ["m1", "m2"].map((name) =>
      Bun.spawn([process.execPath, join(import.meta.dir, "../../src/cli/main.ts"), "worker", "--redis", redis.url, "--certs", certDir, "--workers", "1", "--name", name, "--once", "--crl-hook", `kill -HUP ${broker.pid}`], {
        stdio: ["ignore", "ignore", "pipe"],
      }),
    );
    const proof = join(tmp.path, "controller-hook-ran");
    const report = join(tmp.path, "r.json");
    // Who claims from the cap: MONITOR shows each EVAL with the address it came from; CLIENT LIST names the addresses.
    const monitorClient = new Redis(redis.url);
    const monitor = await monitorClient.monitor();
    const claimsFrom = new Set<string>();
    monitor.on("monitor", (_t: string, args: string[], source: string) => {
      if (String(args[0]).toLowerCase() === "eval" && String(args[3]).endsWith(":revoke")) claimsFrom.add(source);
    });
    const names = new Map<string, string>();
    const lister = new Redis(redis.url);
    let listing = true;
    const listed = (async () => {
      for (; listing; await Bun.sleep(200)) {
        for (const line of String(await lister.client("LIST")).split("\n")) {
          const addr = /addr=(\S+)/.exec(line)?.[1];
          const name = /name=(\S+)/.exec(line)?.[1];
          if (addr && name) names.set(addr, name);
        }
      }
    })();
    try {
      const r = await cicada([
        "run", "--redis", redis.url, "--expect-machines", "2", "--certs", certDir, "--port", String(broker.port), "--users", "30", "--rate", "200", "--duration", "8s",
        "--interval", "300ms..500ms", "--revoke", "--revoke-max", "5", "--revoke-after", "0", "--revoke-probability", "100", "--crl-hook", `touch ${proof}`, "--report", report,
      ]);
      expect(r.code).toBe(0);
      for (const m of machines) expect(await m.exited).toBe(0);
    } finally {
      for (const m of machines) if (m.exitCode === null) m.kill("SIGKILL");
      listing = false;
      await listed;
      lister.disconnect();
      monitor.disconnect();
      monitorClient.disconnect();
    }
    // Both machines asked for the cap.
    expect(new Set([...claimsFrom].map((a) => names.get(a)))).toEqual(new Set(["cicada-machine-m1", "cicada-machine-m2"]));
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.certificates.revoked + rep.certificates.revoked_but_accepted + rep.certificates.revoke_failures).toBe(5);
    expect(rep.certificates.revoked).toBe(5);
    // The counter in Redis stopped at the cap.
    const client = new Redis(redis.url);
    const keys = await client.keys("cicada:cap:*:revoke");
    expect(keys.length).toBe(1);
    expect(await client.get(keys[0]!)).toBe("5");
    client.disconnect();
    expect(readdirSync(join(certDir, "revoke")).length).toBe(5);
    expect(existsSync(proof)).toBe(false);
  }, 60_000);
});
