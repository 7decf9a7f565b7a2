#!/usr/bin/env bun
/**
 * Would cicada hold a device for less with its own TLS over plain sockets? The only other TLS
 * client on the machine is OpenSSL's libssl. This bench builds a small C client
 * (fixtures/openssl-client.c) that holds N mTLS connections to one local mosquitto, each with its
 * own certificate on one shared SSL_CTX, with OpenSSL's memory options, and runs Bun's bare
 * Bun.connect floor (tls-floor's own-no-ca) against the same broker for comparison. One JSON line
 * per client: RSS and CPU per connection. A C client is OpenSSL's floor: driving it from
 * TypeScript would add to it, never take away.
 *   bun bench/openssl-floor.bench.ts [--conns 5000] [--options -,r,rc,r2,rc2]
 * Needs a C compiler and OpenSSL's headers (Debian: apt-get install gcc libssl-dev).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBroker } from "../scripts/lib/testbed.ts";
import { listDeviceIds } from "../src/store/dir.ts";
import { ensureCerts } from "./fixtures/common.ts";

const { values } = parseArgs({
  options: {
    conns: { type: "string", default: "5000" },
    // Letters for the C client (see its header): r release buffers, c clear the certificate after the handshake, 2 TLS 1.2.
    options: { type: "string", default: "-,r,rc,r2,rc2" },
    certs: { type: "string", default: join(tmpdir(), "cicada-bench-certs-ec") },
  },
});
const n = Number(values.conns);
const compiler = ["cc", "gcc"].map((c) => Bun.which(c)).find(Boolean);
if (!compiler || !existsSync("/usr/include/openssl/ssl.h")) {
  process.stderr.write("error: this bench builds a C client: it needs cc and OpenSSL's headers (Debian: apt-get install gcc libssl-dev)\n");
  process.exit(2);
}

const certDir = await ensureCerts(values.certs!, n, "ec", (line) => process.stderr.write(`# ${line}\n`));
const state = mkdtempSync(join(tmpdir(), "cicada-openssl-floor-"));
try {
  const client = join(state, "openssl-client");
  const built = Bun.spawnSync([compiler, "-O2", "-o", client, join(import.meta.dir, "fixtures/openssl-client.c"), "-lssl", "-lcrypto"], { stdio: ["ignore", "inherit", "inherit"] });
  if (built.exitCode !== 0) throw new Error(`${compiler} failed to build the OpenSSL client`);
  const ids = join(state, "ids");
  writeFileSync(ids, listDeviceIds(certDir).slice(0, n).join("\n") + "\n");

  const broker = await startBroker({ certDir, stateDir: state, verbose: false });
  try {
    const run = async (argv: string[]) => {
      const child = Bun.spawn(argv, { stdio: ["ignore", "inherit", "inherit"] });
      if ((await child.exited) !== 0) throw new Error(`${argv[0]} exited ${child.exitCode}`);
      await Bun.sleep(1000); // the broker lets go of the last client's connections
    };
    await run([process.execPath, join(import.meta.dir, "tls-floor.bench.ts"), "--child", "own-no-ca", "--port", String(broker.port), "--conns", String(n), "--certs", certDir]);
    for (const options of values.options!.split(",")) await run([client, String(n), String(broker.port), ids, certDir, options]);
  } finally {
    await broker.stop();
  }
} finally {
  rmSync(state, { recursive: true, force: true });
}
