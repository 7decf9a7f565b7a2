import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCa, loadCa } from "../../src/pki/ca.ts";
import { issueDevice, issueServer } from "../../src/pki/issue.ts";
import { parseCertificate, x509 } from "../../src/pki/x509.ts";
import { sh, tempDir } from "../helpers/tmp.ts";

describe.each(["ec", "rsa"] as const)("certificates with %s keys", (kind) => {
  const { ca, keyPem } = createCa(kind);

  test("device certificate: CN tenant:id, clientAuth, verified by openssl against the CA", async () => {
    using tmp = tempDir();
    const dev = issueDevice(ca, "admin:0a1b2c3d", kind, 30);
    writeFileSync(join(tmp.path, "ca.crt"), ca.certPem);
    writeFileSync(join(tmp.path, "dev.crt"), dev.certPem);
    const r = await sh(["openssl", "verify", "-purpose", "sslclient", "-CAfile", "ca.crt", "dev.crt"], tmp.path);
    expect(r.stdout.trim()).toBe("dev.crt: OK");
    const cert = parseCertificate(dev.certPem);
    expect(cert.subject).toBe("CN=admin:0a1b2c3d");
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([x509.ExtendedKeyUsage.clientAuth]);
    expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    expect(cert.serialNumber.toLowerCase().replace(/^0+/, "")).toBe(dev.serial);
    // The key on disk belongs to the certificate.
    const r2 = await sh(["sh", "-c", `printf '%s' "$0" | openssl pkey -pubout | openssl sha256; openssl x509 -in dev.crt -pubkey -noout | openssl sha256`, dev.keyPem], tmp.path);
    const [a, b] = r2.stdout.trim().split("\n");
    expect(a).toBe(b);
  });

  test("server certificate: SAN lists hosts and addresses, serverAuth", async () => {
    using tmp = tempDir();
    const srv = issueServer(ca, ["127.0.0.1", "localhost", "::1"], kind, 30);
    writeFileSync(join(tmp.path, "ca.crt"), ca.certPem);
    writeFileSync(join(tmp.path, "srv.crt"), srv.certPem);
    const r = await sh(["openssl", "verify", "-purpose", "sslserver", "-CAfile", "ca.crt", "srv.crt"], tmp.path);
    expect(r.stdout.trim()).toBe("srv.crt: OK");
    const text = (await sh(["openssl", "x509", "-in", "srv.crt", "-noout", "-ext", "subjectAltName"], tmp.path)).stdout;
    expect(text).toContain("IP Address:127.0.0.1");
    expect(text).toContain("DNS:localhost");
    expect(text).toContain("IP Address:0:0:0:0:0:0:0:1");
  });

  test("loadCa accepts the matching key and refuses another", () => {
    const where = { cert: "ca.crt", key: "ca.key" };
    expect(loadCa(ca.certPem, keyPem, where).certPem).toBe(ca.certPem);
    const other = createCa(kind);
    expect(() => loadCa(ca.certPem, other.keyPem, where)).toThrow("CA key ca.key does not match CA certificate ca.crt");
  });
});
