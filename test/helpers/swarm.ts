/** Building swarms for tests: configs with short timings, and certificate directories. */
import type { LoadedScenario } from "../../src/scenario/load.ts";
import { issueAll } from "../../src/pki/batch.ts";
import { openLocalCa } from "../../src/pki/signers/local.ts";
import { DirIdentities, ensureCertDir } from "../../src/store/dir.ts";
import type { IdentitySource, SwarmConfig } from "../../src/engine/config.ts";
import { Swarm } from "../../src/engine/swarm.ts";
import type { LifecycleHooks } from "../../src/lifecycle/types.ts";
import type { Target } from "../../src/transport/connect.ts";

export function swarmConfig(targets: Target[], over: Partial<SwarmConfig> = {}): SwarmConfig {
  return {
    targets,
    sources: [],
    tls: false,
    insecure: false,
    tenant: "admin",
    qos: 1,
    version: 4,
    keepaliveS: 30,
    intervalMs: [200, 300],
    payloadSize: 0,
    reconnectMs: [100, 400],
    connectTimeoutMs: 5000,
    users: 10,
    rate: 1000,
    ...over,
  };
}

/** `n` device certificates from the directory's local CA; returns the identities. */
export async function makeCerts(root: string, n: number, tenant = "admin"): Promise<DirIdentities> {
  const dir = ensureCertDir(root);
  const { ca } = openLocalCa(dir, { kind: "ec" });
  const ids = Array.from({ length: n }, (_, i) => `d${String(i).padStart(5, "0")}`);
  await issueAll({ root, tenant, kind: "ec", days: 1, caCert: dir.caCert, caKey: dir.caKey, ids }, ca, () => {});
  return new DirIdentities(root);
}

/** Plain ids for TCP swarms. */
export function plainIds(n: number): IdentitySource {
  return { count: n, id: (i) => `p${i}`, load: () => ({ cert: "", key: "" }) };
}

/** A started swarm that is stopped when the test scope ends. */
export function startSwarm(cfg: SwarmConfig, ids: IdentitySource, lifecycle: LifecycleHooks | null = null, scenario: LoadedScenario | null = null): Swarm & AsyncDisposable {
  const s = new Swarm(cfg, ids, undefined, lifecycle, scenario) as Swarm & AsyncDisposable;
  s[Symbol.asyncDispose] = () => s.stop(2000);
  s.start();
  return s;
}
