/**
 * cicada's own TLS 1.3 client (--tls-stack cicada) against a real TLS server: OpenSSL's
 * `s_server`, asking for a client certificate and verifying it against the CA. What the server
 * printed (the client certificate it verified, its signature type, what it read) and what came
 * back over the wire are the checks.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { freePort, waitForPort } from "../../scripts/lib/testbed.ts";
import { issueDevice, issueServer } from "../../src/pki/issue.ts";
import type { KeyKind } from "../../src/pki/build.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { ensureCertDir } from "../../src/store/dir.ts";
import { Tls13Client, TlsError, anchorsOf, verifyChain, type Tls13Sink } from "../../src/transport/tls13.ts";
import { tempDir } from "../helpers/tmp.ts";

interface Pki {
  dir: string;
  caPem: string;
  device: { cert: string; key: string };
  server: { cert: string; key: string; pem: string };
}

/** A CA of `kind`, a server certificate for 127.0.0.1 and a device certificate, in `dir`. */
function pki(dir: string, kind: KeyKind): Pki {
  const { ca } = openLocalCa(ensureCertDir(dir), { kind });
  const srv = issueServer(ca, ["127.0.0.1"], kind, 1);
  const dev = issueDevice(ca, "dev1", kind, 1);
  writeFileSync(join(dir, "s.crt"), srv.certPem);
  writeFileSync(join(dir, "s.key"), srv.keyPem, { mode: 0o600 });
  return { dir, caPem: ca.certPem, device: { cert: dev.certPem, key: dev.keyPem }, server: { cert: join(dir, "s.crt"), key: join(dir, "s.key"), pem: srv.certPem } };
}

/** What one connection saw: the application data it read, why it failed (null: it did not), the server's chain. */
interface Outcome {
  data: string;
  failure: string | null;
  peer: Uint8Array[] | null;
}

/**
 * `openssl s_server` requiring a client certificate from `p`'s CA, with `extra` flags; the client
 * connects with `groups`, sends `hello\n` once established, then `then` (lines for the server's
 * stdin, e.g. a KeyUpdate command, and lines to send after them).
 */
async function exchange(p: Pki, extra: string[], groups = "X25519:P-256", then: { serverIn?: string[]; clientOut?: string } = {}): Promise<Outcome & { serverOut: string }> {
  const port = await freePort();
  const server = Bun.spawn(["openssl", "s_server", "-accept", `127.0.0.1:${port}`, "-cert", p.server.cert, "-key", p.server.key, "-Verify", "1", "-CAfile", join(p.dir, "ca.crt"), ...extra], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  try {
    await waitForPort("127.0.0.1", port);
    const tls = new Tls13Client({ ...p.device, host: "127.0.0.1", groups });
    const out: Outcome = { data: "", failure: null, peer: null };
    let closed!: () => void;
    const done = new Promise<void>((r) => (closed = r));
    const sink: Tls13Sink<import("bun").Socket<null>> = {
      send: (s, b) => void s.write(b),
      established: (s) => {
        out.peer = tls.peer;
        s.write(tls.seal(Buffer.from("hello\n")));
      },
      data: (_s, b) => void (out.data += Buffer.from(b).toString()),
    };
    const sock = await Bun.connect<null>({
      hostname: "127.0.0.1",
      port,
      data: null,
      socket: {
        open: (s) => void s.write(tls.hello()),
        data: (s, b) => {
          try {
            tls.read(b, sink, s);
          } catch (err) {
            if (!(err instanceof TlsError)) throw err;
            out.failure = err.message;
            s.end();
          }
        },
        close: () => closed(),
      },
    });
    await Promise.race([done, Bun.sleep(1500)]);
    for (const line of then.serverIn ?? []) {
      server.stdin.write(`${line}\n`);
      server.stdin.flush();
      await Bun.sleep(300);
    }
    if (then.clientOut) {
      sock.write(tls.seal(Buffer.from(then.clientOut)));
      await Bun.sleep(300);
    }
    sock.end();
    server.kill();
    return { ...out, serverOut: (await new Response(server.stdout).text()) + (await new Response(server.stderr).text()) };
  } finally {
    server.kill();
  }
}

describe("cicada's TLS 1.3 client against OpenSSL's s_server", () => {
  for (const kind of ["ec", "rsa"] as const) {
    test(`mutual TLS with ${kind} keys: the server verifies the device's certificate and its signature; data both ways`, async () => {
      using tmp = tempDir();
      const p = pki(tmp.path, kind);
      const r = await exchange(p, ["-rev"]);
      expect(r.failure).toBeNull();
      // -rev answers each line reversed: what we sealed arrived whole, and what it sealed we opened.
      expect(r.data).toBe("olleh\n");
      expect(r.serverOut).toContain("Peer certificate: CN = dev1");
      expect(r.serverOut).toContain("Verification: OK");
      expect(r.serverOut).toContain(`Signature type: ${kind === "ec" ? "ECDSA" : "RSA-PSS"}`);
      // The broker's chain is handed to the dialer as DER, leaf first: the server's certificate.
      expect(new X509Certificate(r.peer![0]!).raw.equals(new X509Certificate(p.server.pem).raw)).toBe(true);
    });
  }

  test("a server that takes only P-256 asks again (HelloRetryRequest), and the second key share is used", async () => {
    using tmp = tempDir();
    const p = pki(tmp.path, "ec");
    const r = await exchange(p, ["-rev", "-groups", "P-256"], "X25519:P-256");
    expect(r.failure).toBeNull();
    expect(r.data).toBe("olleh\n");
    // Offered X25519 alone, the server has nothing to ask for: it refuses.
    const none = await exchange(p, ["-rev", "-groups", "P-256"], "X25519");
    expect(none.failure).toBe("tls_alert_handshake_failure");
  });

  test("AES-256-GCM with SHA-384, when the server allows only that", async () => {
    using tmp = tempDir();
    const p = pki(tmp.path, "ec");
    const r = await exchange(p, ["-rev", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]);
    expect(r.failure).toBeNull();
    expect(r.data).toBe("olleh\n");
  });

  test("KeyUpdate: the server's new keys are followed, and its request answered with ours", async () => {
    using tmp = tempDir();
    const p = pki(tmp.path, "ec");
    // s_server's "K" sends a KeyUpdate asking for ours; what it sends next is under its new keys,
    // what we send next under our new ones.
    const r = await exchange(p, ["-msg"], "X25519", { serverIn: ["K", "from server"], clientOut: "after update\n" });
    expect(r.failure).toBeNull();
    // -msg prints each handshake message: one KeyUpdate sent (">>>"), ours received ("<<<").
    expect(r.serverOut).toMatch(/>>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate/);
    expect(r.serverOut).toMatch(/<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate/);
    expect(r.data).toBe("from server\n");
    expect(r.serverOut).toContain("hello\n");
    expect(r.serverOut).toContain("after update\n");
  });

  test("a server of TLS 1.2 only: refused with the server's alert as the reason", async () => {
    using tmp = tempDir();
    const p = pki(tmp.path, "ec");
    const r = await exchange(p, ["-tls1_2"]);
    expect(r.failure).toBe("tls_alert_protocol_version");
    expect(r.data).toBe("");
  });

  test("a client certificate from another CA: the server's alert is the reason, no data flows", async () => {
    using tmp = tempDir();
    const p = pki(join(tmp.path, "a"), "ec");
    const other = pki(join(tmp.path, "b"), "ec");
    const r = await exchange({ ...p, device: other.device }, ["-rev", "-verify_return_error"]);
    expect(r.failure).toMatch(/^tls_alert_(unknown_ca|bad_certificate|decrypt_error)$/);
    expect(r.data).toBe("");
  });
});

describe("a malformed ServerHello costs that connection a TLS failure, never anything else", () => {
  test("every truncation of a well-formed ServerHello, a key share off the curve, records that do not decrypt: each a tls_ reason", () => {
    using tmp = tempDir();
    const p = pki(tmp.path, "ec");
    const share = Buffer.alloc(32, 9); // an X25519 public key (any 32 bytes is one)
    const exts = Buffer.concat([Buffer.from([0, 43, 0, 2, 3, 4]), Buffer.from([0, 51, 0, 36, 0, 0x1d, 0, 32]), share]);
    const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 1), Buffer.from([0, 0x13, 0x01, 0]), Buffer.from([0, exts.length]), exts]);
    const serverHello = (len: number) => {
      const hs = Buffer.concat([Buffer.from([2, 0, len >> 8, len & 0xff]), body.subarray(0, len)]);
      return Buffer.concat([Buffer.from([22, 3, 3, hs.length >> 8, hs.length & 0xff]), hs]);
    };
    const sink: Tls13Sink<null> = { send: () => {}, established: () => {}, data: () => {} };
    const outcome = (bytes: Uint8Array) => {
      const client = new Tls13Client({ ...p.device, host: "127.0.0.1", groups: "X25519:P-256" });
      client.hello();
      try {
        client.read(bytes, sink, null);
        return "taken";
      } catch (err) {
        return err instanceof TlsError ? "tls" : `other: ${String(err)}`;
      }
    };
    expect(outcome(serverHello(body.length))).toBe("taken");
    const cuts = Array.from({ length: body.length }, (_, k) => outcome(serverHello(k)));
    expect(cuts.filter((o) => o !== "tls")).toEqual([]);
    // A P-256 key share that is not a point on the curve: the key exchange fails as a TLS failure.
    const badPoint = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 0xff)]);
    const p256Exts = Buffer.concat([Buffer.from([0, 43, 0, 2, 3, 4]), Buffer.from([0, 51, 0, 69, 0, 0x17, 0, 65]), badPoint]);
    const p256Body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 1), Buffer.from([0, 0x13, 0x01, 0]), Buffer.from([0, p256Exts.length]), p256Exts]);
    const p256Hs = Buffer.concat([Buffer.from([2, 0, 0, p256Body.length]), p256Body]);
    const p256 = new Tls13Client({ ...p.device, host: "127.0.0.1", groups: "P-256" });
    p256.hello();
    expect(() => p256.read(Buffer.concat([Buffer.from([22, 3, 3, 0, p256Hs.length]), p256Hs]), sink, null)).toThrow("tls_illegal_parameter");
    // Encrypted records that follow it but do not decrypt under its keys: a bad record MAC.
    const junk = Buffer.concat([Buffer.from([23, 3, 3, 0, 40]), Buffer.alloc(40, 5)]);
    const client = new Tls13Client({ ...p.device, host: "127.0.0.1", groups: "X25519" });
    client.hello();
    expect(() => client.read(Buffer.concat([serverHello(body.length), junk]), sink, null)).toThrow("tls_bad_record_mac");
  });
});

describe("verifyChain: the broker's certificate against the CA, as Bun's TLS names what is wrong", () => {
  test("the right CA and host pass; another host, another CA, an expired certificate each have their reason", () => {
    using tmp = tempDir();
    const p = pki(join(tmp.path, "a"), "ec");
    const other = pki(join(tmp.path, "b"), "ec");
    const leaf = new X509Certificate(p.server.pem).raw;
    const anchors = anchorsOf(p.caPem);
    expect(verifyChain([leaf], anchors, "127.0.0.1")).toBeNull();
    expect(verifyChain([leaf], anchors, "127.0.0.2")).toBe("tls_cert_altname_invalid");
    expect(verifyChain([leaf], anchors, "broker.example")).toBe("tls_cert_altname_invalid");
    expect(verifyChain([leaf], anchorsOf(other.caPem), "127.0.0.1")).toBe("unable_to_get_issuer_cert_locally");
    expect(verifyChain([leaf], anchors, "127.0.0.1", Date.now() + 3 * 86_400_000)).toBe("cert_has_expired");
    expect(verifyChain([leaf], anchors, "127.0.0.1", Date.now() - 3 * 86_400_000)).toBe("cert_not_yet_valid");
    // The same certificate with one byte of its signature changed: the CA's name matches, its signature does not.
    const forged = Buffer.from(leaf);
    forged[forged.length - 1]! ^= 0x01;
    expect(verifyChain([forged], anchors, "127.0.0.1")).toBe("cert_signature_failure");
    // The CA's own certificate presented as the leaf is trusted as itself, but names no host.
    const caDer = new X509Certificate(p.caPem).raw;
    expect(verifyChain([caDer], anchorsOf(other.caPem), "127.0.0.1")).toBe("depth_zero_self_signed_cert");
  });
});
