/** Bad input is exit 2 with a clear message; secrets stay out of messages; directories get their modes whatever the umask. */
import { describe, expect, test } from "bun:test";
import { copyFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { listDeviceIds } from "../../src/store/dir.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { cicada, sh, tempDir } from "../helpers/tmp.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

describe("bad input", () => {
  for (const cmd of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    test(`cicada ${cmd} is an unknown command`, async () => {
      const r = await cicada([cmd]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`unknown command "${cmd}"`);
    });
  }

  test("--source-address must list IP addresses (run and worker)", async () => {
    const run = await cicada(["run", "--no-tls", "--source-address", "127.0.0.2,notanip"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--source-address must list IP addresses of this machine, e.g. 127.0.0.2,127.0.0.3 (got "notanip")');
    const worker = await cicada(["worker", "--source-address", "localhost"]);
    expect(worker.code).toBe(2);
    expect(worker.stderr).toContain('--source-address must list IP addresses');
  });

  test("--metrics beyond loopback needs a token (run and worker); --ui serves /metrics already", async () => {
    const run = await cicada(["run", "--no-tls", "--metrics", "0.0.0.0:9464"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--metrics 0.0.0.0:9464 is reachable beyond this machine: give --token");
    const both = await cicada(["run", "--no-tls", "--metrics", "127.0.0.1:9464", "--ui", "127.0.0.1:8089"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("--ui serves /metrics already");
    const worker = await cicada(["worker", "--metrics", "10.0.0.7:9464", "--token", "short"]);
    expect(worker.code).toBe(2);
    expect(worker.stderr).toContain("must be at least 16 characters");
    expect(worker.stderr).not.toContain("short");
  });

  test("a password in DOJOT_URL never appears in what cicada prints", async () => {
    // Port 1 on loopback: nothing listens, the request fails at once.
    const r = await cicada(["dojot", "clear", "--all"], { env: { DOJOT_URL: "http://admin:s3cr3t-pw@127.0.0.1:1", DOJOT_API_RETRIES: "0" } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("http://admin:***@127.0.0.1:1");
    expect(r.stdout + r.stderr).not.toContain("s3cr3t-pw");
    const bad = await cicada(["dojot", "clear", "--all", "--dojot-url", "ftp://admin:s3cr3t-pw@host"]);
    expect(bad.code).toBe(2);
    expect(bad.stdout + bad.stderr).not.toContain("s3cr3t-pw");
  });
});

describe("certificate directories", () => {
  for (const umask of ["077", "000"]) {
    test(`modes are explicit under umask ${umask}`, async () => {
      using tmp = tempDir();
      const dir = join(tmp.path, "cert");
      const r = await sh(["sh", "-c", `umask ${umask}; exec "$0" "$@"`, process.execPath, MAIN, "certs", "create", "--devices", "2", "--dir", dir]);
      expect(r.code).toBe(0);
      const mode = (p: string) => statSync(join(dir, p)).mode & 0o777;
      expect([mode("."), mode("renew"), mode("revoke"), mode(".ca")]).toEqual([0o755, 0o755, 0o755, 0o700]);
      expect(mode(".ca/ca.key")).toBe(0o600);
      expect(mode("ca.crt")).toBe(0o644);
    });
  }
});

describe("exit codes", () => {
  test("a remote service that cannot be reached is exit 4, not an internal error", async () => {
    // Port 1 on loopback: nothing listens.
    const dojot = await cicada(["dojot", "clear", "--all"], { env: { DOJOT_URL: "http://127.0.0.1:1", DOJOT_API_RETRIES: "0" } });
    expect(dojot.code).toBe(4);
    using tmp = tempDir();
    const redis = await cicada(["store", "export", "--redis", "redis://127.0.0.1:1", "--dir", join(tmp.path, "cert")]);
    expect(redis.code).toBe(4);
    expect(redis.stderr).toContain("cannot reach Redis at redis://127.0.0.1:1");
  });
});

test("one certificate is one certificate", async () => {
  using tmp = tempDir();
  const r = await cicada(["certs", "create", "--devices", "1", "--dir", join(tmp.path, "cert")]);
  expect(r.code).toBe(0);
  expect(r.stdout).toStartWith("created 1 EC P-256 device certificate in ");
});

describe("a run that cannot start wrong", () => {
  test("identities are checked before any connection: a key that is not its certificate's, a certificate of another CA", async () => {
    using tmp = tempDir();
    const dir = join(tmp.path, "cert");
    const other = join(tmp.path, "other");
    await makeCerts(dir, 6);
    await makeCerts(other, 1);
    const ids = listDeviceIds(dir);
    copyFileSync(join(dir, `${ids[1]}.key`), join(dir, `${ids[0]}.key`));
    const foreign = listDeviceIds(other)[0]!;
    copyFileSync(join(other, `${foreign}.crt`), join(dir, `${ids[2]}.crt`));
    copyFileSync(join(other, `${foreign}.key`), join(dir, `${ids[2]}.key`));
    // Port 1: were a connection ever tried, it would fail differently.
    const r = await cicada(["run", "--certs", dir, "--port", "1", "--users", "6", "--duration", "1s"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${ids[0]}: its key does not match its certificate`);
    expect(r.stderr).toContain(`${ids[2]}: its certificate was not issued by the broker CA`);
    expect(r.stderr).not.toContain(ids[3]!);
    // --insecure skips the chain, not the key check.
    const insecure = await cicada(["run", "--certs", dir, "--port", "1", "--users", "6", "--duration", "1s", "--insecure"]);
    expect(insecure.code).toBe(2);
    expect(insecure.stderr).toContain(`${ids[0]}: its key does not match its certificate`);
    expect(insecure.stderr).not.toContain("not issued by the broker CA");
  });

  test("a large set is sampled, and the sampling is said", async () => {
    using tmp = tempDir();
    const dir = join(tmp.path, "cert");
    await makeCerts(dir, 110);
    const ids = listDeviceIds(dir);
    // The last identity is always checked.
    writeFileSync(join(dir, `${ids[109]}.key`), "not a key\n");
    const r = await cicada(["run", "--certs", dir, "--port", "1", "--users", "110", "--duration", "1s"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${ids[109]}: its key is not a PEM private key`);
    expect(r.stderr).toContain("(checked 102 of 110 identities: the first, the last and 100 at random)");
  });
});

test("--tenant is checked the same way by every command that takes it", async () => {
  for (const args of [["certs", "create", "--devices", "1", "--dir", "/nonexistent-never-written"], ["run", "--no-tls"]]) {
    const r = await cicada([...args, "--tenant", "a/b"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--tenant must be a non-empty name without spaces, /, +, # or : (got "a/b")');
  }
});

describe("flags mean one thing everywhere; old spellings still work", () => {
  test("--broker-ca (run) and its old spelling --ca-cert read the same file; both at once is bad input", async () => {
    using tmp = tempDir();
    const missing = join(tmp.path, "nope.crt");
    const now = await cicada(["run", "--certs", tmp.path, "--broker-ca", missing]);
    const old = await cicada(["run", "--certs", tmp.path, "--ca-cert", missing]);
    expect([now.code, old.code]).toEqual([2, 2]);
    expect(now.stderr).toContain(`--broker-ca: cannot read CA certificate ${missing}`);
    expect(old.stderr).toContain(`--ca-cert: cannot read CA certificate ${missing}`);
    const both = await cicada(["run", "--broker-ca", missing, "--ca-cert", missing]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("--broker-ca and --ca-cert are one option: give it once");
    const help = await cicada(["run", "--help"]);
    expect(help.stdout).toMatch(/--broker-ca FILE +CA that signed the broker certificate.*\[also --ca-cert\]/);
  });

  test("certs: --certs/--dir, --signing-ca-cert/--ca-cert and --store/--redis name the same things", async () => {
    using tmp = tempDir();
    const a = await cicada(["certs", "create", "--ids", "x1", "--certs", "new"], { cwd: tmp.path });
    const b = await cicada(["certs", "create", "--ids", "x2", "--dir", "new"], { cwd: tmp.path });
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(listDeviceIds(join(tmp.path, "new"))).toEqual(["x1", "x2"]);
    // An outside CA: the new spelling and the old one sign alike.
    const ca = join(tmp.path, "new", "ca.crt");
    const key = join(tmp.path, "new", ".ca", "ca.key");
    expect((await cicada(["certs", "create", "--ids", "y1", "--certs", "other", "--signing-ca-cert", ca, "--signing-ca-key", key], { cwd: tmp.path })).code).toBe(0);
    expect((await cicada(["certs", "create", "--ids", "y2", "--certs", "other", "--ca-cert", ca, "--ca-key", key], { cwd: tmp.path })).code).toBe(0);
    for (const id of ["y1", "y2"]) expect((await sh(["openssl", "verify", "-CAfile", ca, join(tmp.path, "other", `${id}.crt`)])).code).toBe(0);
    const lonely = await cicada(["certs", "create", "--ids", "z", "--signing-ca-cert", ca], { cwd: tmp.path });
    expect(lonely.stderr).toContain("--signing-ca-cert and --signing-ca-key go together");
    // The store, old and new spelling: a bad URL is named by the spelling given.
    for (const flag of ["--store", "--redis"]) {
      const r = await cicada(["certs", "create", "--ids", "q", flag, "ftp://h"], { cwd: tmp.path });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${flag} must be a redis:// or rediss:// URL`);
    }
  });

  test("dojot's Redis variables are read through the flags they stand for, and named when wrong", async () => {
    const r = await cicada(["store", "map"], { env: { REDIS_HOST: "", REDIS_PORT: "", REDIS_CERTIFICATES_DB: "x", REDIS_MAPPED_DB: "100" } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('REDIS_CERTIFICATES_DB must be a whole number from 0 to 99 (got "x")');
    expect(r.stderr).toContain('REDIS_MAPPED_DB must be a whole number from 0 to 99 (got "100")');
    const help = await cicada(["store", "map", "--help"]);
    expect(help.stdout).toContain("env REDIS_PASSWD");
  });
});
