/** Test-side access to the real test bed: skips integration suites, with a reason, when a server is not installed. */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PROBE_CN, startBroker, startWebsockify, type Broker } from "../../scripts/lib/testbed.ts";
import { issueDevice } from "../../src/pki/issue.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { Probe } from "./probe.ts";
import { ensureCertDir } from "../../src/store/dir.ts";

function installed(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export const HAVE_MOSQUITTO = installed("mosquitto");
export const HAVE_REDIS = installed("redis-server");
export const HAVE_WEBSOCKIFY = installed("websockify");
if (!HAVE_MOSQUITTO) console.warn("skipping broker tests: mosquitto is not installed (apt-get install mosquitto)");
if (!HAVE_REDIS) console.warn("skipping Redis tests: redis-server is not installed (apt-get install redis-server)");

export interface Identity {
  cn: string;
  cert: string;
  key: string;
  ca: string;
}

/** Reads a device's files from a dojot-layout directory. */
export function deviceIdentity(dir: string, id: string, tenant = "admin"): Identity {
  return {
    cn: `${tenant}:${id}`,
    cert: readFileSync(join(dir, `${id}.crt`), "utf8"),
    key: readFileSync(join(dir, `${id}.key`), "utf8"),
    ca: readFileSync(join(dir, "ca.crt"), "utf8"),
  };
}

/** An identity issued by the directory's CA with any CN (e.g. the probe's). */
export function issuedIdentity(certDir: string, cn = PROBE_CN): Identity {
  const dir = ensureCertDir(certDir);
  const { ca } = openLocalCa(dir, { kind: "ec" });
  const c = issueDevice(ca, cn, "ec", 1);
  return { cn, cert: c.certPem, key: c.keyPem, ca: ca.certPem };
}

export { PROBE_CN, startBroker, startWebsockify, type Broker };

/** A probe with the broker's all-reading identity, subscribed to `filter` (a subscriber outside cicada, to count what the broker delivers). */
export async function probeOn(certDir: string, broker: { host?: string; port: number }, filter = "+/attrs", qos: 0 | 1 = 1, opts: { plain?: boolean; protocolVersion?: 4 | 5 } = {}): Promise<Probe> {
  const id = issuedIdentity(certDir);
  const p = Probe.connect({ ...(broker.host ? { host: broker.host } : {}), port: broker.port, clientId: id.cn, ...id, ...opts });
  await p.connack;
  await p.subscribe(filter, qos);
  return p;
}

/** Writes the all-reading identity (issuedIdentity) as `dir/sub.crt` and `dir/sub.key` (0600), for --verify-cert/--verify-key; returns the flags. */
export function consumerFiles(certDir: string, dir: string): string[] {
  const id = issuedIdentity(certDir);
  writeFileSync(join(dir, "sub.crt"), id.cert);
  writeFileSync(join(dir, "sub.key"), id.key, { mode: 0o600 });
  return ["--verify-cert", join(dir, "sub.crt"), "--verify-key", join(dir, "sub.key")];
}
