/** Certificates from `cicada certs` against a real mosquitto with mutual TLS, the per-device ACL and the CRL. */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Probe } from "../helpers/probe.ts";
import { HAVE_MOSQUITTO, deviceIdentity, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { cicada, tempDir } from "../helpers/tmp.ts";

describe.skipIf(!HAVE_MOSQUITTO)("mutual TLS with mosquitto", () => {
  test("a device certificate connects; its ACL delivers its own config topic only", async () => {
    using tmp = tempDir();
    expect((await cicada(["certs", "create", "--ids", "d1,d2", "--dir", "cert"], { cwd: tmp.path })).code).toBe(0);
    const certDir = join(tmp.path, "cert");
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const id = deviceIdentity(certDir, "d1");
    await using device = Probe.connect({ port: broker.port, clientId: id.cn, ...id });
    expect((await device.connack).returnCode).toBe(0);
    // mosquitto 2.0 grants the SUBSCRIBE and enforces read access when delivering.
    await device.subscribe("+/config", 1);
    const probeId = issuedIdentity(certDir);
    await using admin = Probe.connect({ port: broker.port, clientId: probeId.cn, ...probeId });
    await admin.connack;
    await admin.publish("admin:d2/config", '{"to":"d2"}', 1);
    await admin.publish("admin:d1/config", '{"to":"d1"}', 1);
    const got = await device.next((p) => p.cmd === "publish");
    expect(got.cmd === "publish" && got.topic).toBe("admin:d1/config");
    expect(device.packets.filter((p) => p.cmd === "publish").length).toBe(1);
  });

  test("a certificate from another CA is refused during the handshake", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "d1", "--dir", "cert"], { cwd: tmp.path });
    await cicada(["certs", "create", "--ids", "x1", "--dir", "other"], { cwd: tmp.path });
    await using broker = await startBroker({ certDir: join(tmp.path, "cert"), stateDir: tmp.path });
    const stranger = deviceIdentity(join(tmp.path, "other"), "x1");
    // Trust the broker's CA, present a client certificate it did not sign.
    const good = deviceIdentity(join(tmp.path, "cert"), "d1");
    await using probe = Probe.connect({ port: broker.port, clientId: stranger.cn, ca: good.ca, cert: stranger.cert, key: stranger.key });
    await expect(probe.connack).rejects.toBeDefined();
    expect(probe.packets).toEqual([]);
  });

  test("a revoked certificate in the CRL is refused after the broker reloads", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "keep,gone", "--dir", "cert"], { cwd: tmp.path });
    const certDir = join(tmp.path, "cert");
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const gone = deviceIdentity(certDir, "gone");
    {
      await using before = Probe.connect({ port: broker.port, clientId: gone.cn, ...gone });
      expect((await before.connack).returnCode).toBe(0);
    }
    expect((await cicada(["certs", "revoke", "--ids", "gone", "--dir", "cert"], { cwd: tmp.path })).code).toBe(0);
    broker.reload();
    // Wait for the reload by polling with the revoked certificate until it is refused.
    let refused = false;
    for (let i = 0; i < 50 && !refused; i++) {
      await using p = Probe.connect({ port: broker.port, clientId: gone.cn, ...gone });
      refused = await p.connack.then(() => false, () => true);
      if (!refused) await Bun.sleep(100);
    }
    expect(refused).toBe(true);
    const keep = deviceIdentity(certDir, "keep");
    await using still = Probe.connect({ port: broker.port, clientId: keep.cn, ...keep });
    expect((await still.connack).returnCode).toBe(0);
  });

  test("the probe identity may read every device's telemetry", async () => {
    using tmp = tempDir();
    await cicada(["certs", "create", "--ids", "d1", "--dir", "cert"], { cwd: tmp.path });
    const certDir = join(tmp.path, "cert");
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const probeId = issuedIdentity(certDir);
    await using probe = Probe.connect({ port: broker.port, clientId: probeId.cn, ...probeId });
    await probe.connack;
    expect((await probe.subscribe("+/attrs", 1)).granted).toEqual([1]);
    const dev = deviceIdentity(certDir, "d1");
    await using device = Probe.connect({ port: broker.port, clientId: dev.cn, ...dev });
    await device.connack;
    await device.publish("admin:d1/attrs", '{"timestamp":1}', 1);
    const msg = await probe.next((p) => p.cmd === "publish");
    expect(msg.cmd === "publish" && msg.topic).toBe("admin:d1/attrs");
  });
});
