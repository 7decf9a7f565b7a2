import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FAKE_PASSWORD, startFakeDojot } from "../helpers/fake-dojot.ts";
import { cicada, sh, tempDir } from "../helpers/tmp.ts";

const deviceIds = (dir: string) => readdirSync(dir).filter((n) => n.endsWith(".crt") && n !== "ca.crt").map((n) => n.slice(0, -4));

describe("cicada certs create", () => {
  test("dojot layout: 2N+3 entries, keys 0600, CN tenant:id, all verify against ca.crt", async () => {
    using tmp = tempDir();
    const r = await cicada(["certs", "create", "--devices", "7", "--dir", "cert", "--tenant", "acme"], { cwd: tmp.path });
    expect(r.stderr).toContain("created local CA");
    expect(r.code).toBe(0);
    const dir = join(tmp.path, "cert");
    expect(readdirSync(dir).filter((n) => !n.startsWith(".")).length).toBe(2 * 7 + 3);
    const ids = deviceIds(dir);
    expect(ids.length).toBe(7);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}$/);
      expect(statSync(join(dir, `${id}.key`)).mode & 0o777).toBe(0o600);
      const subject = await sh(["openssl", "x509", "-in", `${id}.crt`, "-noout", "-subject", "-nameopt", "RFC2253"], dir);
      expect(subject.stdout.trim()).toBe(`subject=CN=acme:${id}`);
    }
    expect(statSync(join(dir, ".ca/ca.key")).mode & 0o777).toBe(0o600);
    // OpenSSL 3 reports failures on stderr and exits non-zero: check all three.
    const v = await sh(["openssl", "verify", "-CAfile", "ca.crt", ...ids.map((id) => `${id}.crt`)], dir);
    expect(v.code).toBe(0);
    expect(v.stderr.trim()).toBe("");
    expect(v.stdout.trim().split("\n").filter((l) => l.endsWith(": OK")).length).toBe(ids.length);
    // No private key material is ever printed.
    expect(r.stdout + r.stderr).not.toContain("PRIVATE KEY");
  });

  test("re-running adds devices and never rewrites existing files", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "aa,bb", "--dir", "c"], { cwd: tmp.path });
    const dir = join(tmp.path, "c");
    const before = readFileSync(join(dir, "aa.crt"), "utf8");
    const caBefore = readFileSync(join(dir, "ca.crt"), "utf8");
    const r = await cicada(["certs", "create", "--ids", "aa,cc", "--dir", "c"], { cwd: tmp.path });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("created 1 ");
    expect(r.stdout).toContain("1 already present");
    expect(readFileSync(join(dir, "aa.crt"), "utf8")).toBe(before);
    expect(readFileSync(join(dir, "ca.crt"), "utf8")).toBe(caBefore);
    await cicada(["certs", "create", "--devices", "3", "--dir", "c"], { cwd: tmp.path });
    expect(deviceIds(dir).length).toBe(6);
  });

  test("worker processes share the work and the CA", async () => {
    using tmp = tempDir();
    const r = await cicada(["certs", "create", "--devices", "600", "--jobs", "2", "--dir", "c"], { cwd: tmp.path });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("created 600 ");
    const dir = join(tmp.path, "c");
    const ids = deviceIds(dir);
    expect(ids.length).toBe(600);
    const v = await sh(["openssl", "verify", "-CAfile", "ca.crt", ...ids.map((id) => `${id}.crt`)], dir);
    expect(v.code).toBe(0);
    expect(v.stderr.trim()).toBe("");
    expect(v.stdout.trim().split("\n").filter((l) => l.endsWith(": OK")).length).toBe(600);
  });

  test("RSA keys as dojot used", async () => {
    using tmp = tempDir();
    const r = await cicada(["certs", "create", "--ids", "r1", "--key", "rsa", "--dir", "c"], { cwd: tmp.path });
    expect(r.code).toBe(0);
    const t = await sh(["openssl", "x509", "-in", "c/r1.crt", "-noout", "-text"], tmp.path);
    expect(t.stdout).toContain("Public-Key: (2048 bit)");
  });

  test("env TENANT and CERT_DIR are honoured, flags win", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "e1"], { cwd: tmp.path, env: { TENANT: "envt", CERT_DIR: "envdir" } });
    const s = await sh(["openssl", "x509", "-in", "envdir/e1.crt", "-noout", "-subject", "-nameopt", "RFC2253"], tmp.path);
    expect(s.stdout.trim()).toBe("subject=CN=envt:e1");
    await cicada(["certs", "create", "--ids", "e2", "--tenant", "flag"], { cwd: tmp.path, env: { TENANT: "envt", CERT_DIR: "envdir" } });
    const s2 = await sh(["openssl", "x509", "-in", "envdir/e2.crt", "-noout", "-subject", "-nameopt", "RFC2253"], tmp.path);
    expect(s2.stdout.trim()).toBe("subject=CN=flag:e2");
  });

  describe("bad input: one clear line, exit 2, nothing written", () => {
    const cases: [string, string[], string][] = [
      ["--devices 0", ["--devices", "0"], "--devices must be a whole number from 1 to 10000000 (got \"0\")"],
      ["--devices abc", ["--devices", "abc"], "--devices must be a whole number from 1 to 10000000 (got \"abc\")"],
      ["neither --devices nor --ids", [], "give --devices N, --ids a,b,c or --dojot"],
      ["an id that is no file name", ["--ids", "../x"], "--ids: \"../x\" not valid"],
      ["an unknown flag", ["--devices", "1", "--colour"], "unknown option --colour"],
    ];
    for (const [name, args, message] of cases) {
      test(name, async () => {
        using tmp = tempDir();
        const r = await cicada(["certs", "create", ...args, "--dir", "c"], { cwd: tmp.path });
        expect(r.code).toBe(2);
        expect(r.stderr).toStartWith(`cicada: ${message}`);
        expect(r.stderr.trim().split("\n").length).toBe(1);
        expect(readdirSync(tmp.path)).toEqual([]);
      });
    }

    test("a directory that cannot be used", async () => {
      using tmp = tempDir();
      writeFileSync(join(tmp.path, "afile"), "");
      const r = await cicada(["certs", "create", "--devices", "1", "--dir", "afile/cert"], { cwd: tmp.path });
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toStartWith("cicada: certificate directory afile/cert is not usable:");
      expect(r.stderr.trim().split("\n").length).toBe(1);
    });

    test("a CA key that does not match the CA certificate", async () => {
      using tmp = tempDir();
      await cicada(["certs", "create", "--ids", "a", "--dir", "one"], { cwd: tmp.path });
      await cicada(["certs", "create", "--ids", "a", "--dir", "two"], { cwd: tmp.path });
      const r = await cicada(["certs", "create", "--ids", "b", "--dir", "three", "--ca-cert", "one/ca.crt", "--ca-key", "two/.ca/ca.key"], { cwd: tmp.path });
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toBe("cicada: CA key two/.ca/ca.key does not match CA certificate one/ca.crt");
      expect(readdirSync(join(tmp.path, "three")).filter((n) => n.endsWith(".crt"))).toEqual([]);
    });
  });

  test("several problems are listed together", async () => {
    const r = await cicada(["certs", "create", "--devices", "-1", "--key", "dsa", "--days", "x"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--devices must be");
    expect(r.stderr).toContain("--key must be one of ec, rsa (got \"dsa\")");
    expect(r.stderr).toContain("--days must be");
  });
});

describe("cicada certs revoke / crl", () => {
  test("the CRL lists exactly the revoked serials, signed by the CA", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "d1,d2,d3", "--dir", "c"], { cwd: tmp.path });
    const dir = join(tmp.path, "c");
    const serial = async (f: string) => (await sh(["openssl", "x509", "-in", f, "-noout", "-serial"], dir)).stdout.trim().replace("serial=", "").toUpperCase();
    const s2 = await serial("d2.crt");
    const r = await cicada(["certs", "revoke", "--ids", "d2", "--dir", "c"], { cwd: tmp.path });
    expect(r.code).toBe(0);
    expect(readdirSync(join(dir, "revoke")).sort()).toEqual(["d2.crt", "d2.key"]);
    const crl = await sh(["openssl", "crl", "-in", ".ca/crl.pem", "-CAfile", "ca.crt", "-noout", "-text"], dir);
    expect(crl.stderr).toContain("verify OK");
    expect(crl.stdout).toContain(`Serial Number: ${s2}`);
    expect(crl.stdout.match(/Serial Number:/g)?.length).toBe(1);
    expect(crl.stdout).toMatch(/CRL Number: \s*2/);
    // d1 still verifies with CRL checking, d2 does not.
    const ok = await sh(["openssl", "verify", "-crl_check", "-CAfile", "ca.crt", "-CRLfile", ".ca/crl.pem", "d1.crt"], dir);
    expect(ok.stdout.trim()).toBe("d1.crt: OK");
    const bad = await sh(["openssl", "verify", "-crl_check", "-CAfile", "ca.crt", "-CRLfile", ".ca/crl.pem", "revoke/d2.crt"], dir);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toContain("certificate revoked");
    const again = await cicada(["certs", "crl", "--dir", "c", "--out", "copy.pem"], { cwd: tmp.path });
    expect(again.stdout).toContain("1 revoked certificates");
    expect(readFileSync(join(tmp.path, "copy.pem"), "utf8")).toStartWith("-----BEGIN X509 CRL-----");
  });
});

describe("cicada certs revoke: the same filing as a run's revoke, local or dojot", () => {
  test("a device revoked twice keeps both certificates, each listed in the CRL", async () => {
    using tmp = tempDir();
    const dir = join(tmp.path, "c");
    await cicada(["certs", "create", "--ids", "d1", "--dir", "c"], { cwd: tmp.path });
    const first = readFileSync(join(dir, "d1.crt"), "utf8");
    expect((await cicada(["certs", "revoke", "--ids", "d1", "--dir", "c"], { cwd: tmp.path })).code).toBe(0);
    await cicada(["certs", "create", "--ids", "d1", "--dir", "c"], { cwd: tmp.path });
    const serial = (await sh(["openssl", "x509", "-in", "d1.crt", "-noout", "-serial"], dir)).stdout.trim().replace("serial=", "").toLowerCase().replace(/^0+/, "");
    const r = await cicada(["certs", "revoke", "--ids", "d1", "--dir", "c"], { cwd: tmp.path });
    expect(r.stdout).toContain("lists 2 certificates");
    expect(readdirSync(join(dir, "revoke")).sort()).toEqual(["d1.crt", "d1.key", `d1-${serial}.crt`, `d1-${serial}.key`].sort());
    expect(readFileSync(join(dir, "revoke", "d1.crt"), "utf8")).toBe(first);
    expect(statSync(join(dir, "revoke", `d1-${serial}.key`)).mode & 0o777).toBe(0o600);
    expect(deviceIds(dir)).toEqual([]);
  });

  test("--signer dojot: revoked in dojot by fingerprint, filed under revoke/, taken out of DIR", async () => {
    using tmp = tempDir();
    using dojot = startFakeDojot(join(tmp.path, "dojot-ca"));
    const env = { DOJOT_URL: dojot.url, DOJOT_PASSWD: FAKE_PASSWORD };
    expect((await cicada(["certs", "create", "--signer", "dojot", "--ids", "a1,b2", "--dir", "c"], { cwd: tmp.path, env })).code).toBe(0);
    const dir = join(tmp.path, "c");
    const pem = readFileSync(join(dir, "a1.crt"), "utf8");
    const r = await cicada(["certs", "revoke", "--signer", "dojot", "--ids", "a1", "--dir", "c"], { cwd: tmp.path, env });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const revoked = [...dojot.certs.values()].filter((c) => c.revoked);
    expect(revoked.map((c) => c.pem.trim())).toEqual([pem.trim()]);
    expect(readdirSync(join(dir, "revoke")).sort()).toEqual(["a1.crt", "a1.key"]);
    expect(deviceIds(dir)).toEqual(["b2"]);
    const hookWithDojot = await cicada(["certs", "revoke", "--signer", "dojot", "--ids", "b2", "--dir", "c", "--crl-hook", "true"], { cwd: tmp.path, env });
    expect(hookWithDojot.code).toBe(2);
    expect(hookWithDojot.stderr).toContain("--crl-hook");
  });
});

describe("help", () => {
  for (const args of [["--help"], ["certs", "--help"], ["certs", "create", "--help"], ["certs", "crl", "--help"], ["certs", "revoke", "--help"], ["certs", "server", "--help"]]) {
    test(args.join(" "), async () => {
      const r = await cicada(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage: cicada");
    });
  }
  test("--version", async () => {
    const r = await cicada(["--version"]);
    expect(r.stdout).toMatch(/^cicada \d+\.\d+\.\d+ \(bun /);
  });
});
