/** Renew/revoke settings: the flags and the environment variables of dojot's tool (RENEW_DEVICES, …), for cicada run and, for what acts on a machine, cicada worker. */
import { join } from "node:path";
import type { OptionSpecs, Options } from "./options.ts";
import { DOJOT_OPTIONS, readDojotSettings } from "./dojot.ts";
import { certDir as certDirOf } from "../store/dir.ts";
import { exists } from "../sys/fs.ts";
import { isStoreUrl } from "../store/redis.ts";
import type { LifecycleConfig, LifecycleKind, LifecycleLocal, LifecyclePolicy } from "../lifecycle/types.ts";

const ENV = {
  renew: { on: "RENEW_DEVICES", max: "DEVICES_TO_RENEW", after: "TIME_TO_RENEW", p: "PROBABILITY_TO_RENEW", dir: "RENEW_CERT_DIR" },
  revoke: { on: "REVOKE_DEVICES", max: "DEVICES_TO_REVOKE", after: "TIME_TO_REVOKE", p: "PROBABILITY_TO_REVOKE", dir: "REVOKE_CERT_DIR" },
} as const;

export const LIFECYCLE_DEFAULTS = { max: 1000, afterMs: 1000, probability: 10, crlWaitMs: 500 };

function kindOptions(kind: LifecycleKind): OptionSpecs {
  const e = ENV[kind];
  return {
    [kind]: { type: "boolean", env: e.on, help: `${kind === "renew" ? "Renew" : "Revoke"} device certificates during the run` },
    [`${kind}-max`]: { type: "string", arg: "N", env: e.max, default: String(LIFECYCLE_DEFAULTS.max), help: `Devices to ${kind} at most, across all workers and machines` },
    [`${kind}-after`]: { type: "string", arg: "MS", env: e.after, default: String(LIFECYCLE_DEFAULTS.afterMs), help: `A device is connected this long before it may be ${kind}d` },
    [`${kind}-probability`]: { type: "string", arg: "PERCENT", env: e.p, default: String(LIFECYCLE_DEFAULTS.probability), help: `Chance per publish that a device is ${kind}d` },
  };
}

/** What acts on this machine: its CA, the hook, the signer's credentials. `cicada worker` takes these too, and only from its own flags and environment. */
export const LIFECYCLE_LOCAL_OPTIONS: OptionSpecs = {
  "ca-dir": { type: "string", arg: "DIR", help: "Local CA for renew/revoke: DIR/ca.crt, DIR/.ca/ca.key, DIR/.ca/crl.pem (default: --certs, or cert with a Redis store)" },
  "renew-dir": { type: "string", arg: "DIR", env: ENV.renew.dir, help: "Where renewed certificates go (default CA-DIR/renew)" },
  "revoke-dir": { type: "string", arg: "DIR", env: ENV.revoke.dir, help: "Where revoked certificates go (default CA-DIR/revoke)" },
  "crl-hook": { type: "string", arg: "CMD", env: "CRL_HOOK", help: "Shell command run after the CRL is rewritten, so the broker reloads it (e.g. 'kill -HUP 1234')" },
  ...DOJOT_OPTIONS,
};

export const LIFECYCLE_OPTIONS: OptionSpecs = {
  ...kindOptions("renew"),
  ...kindOptions("revoke"),
  signer: { type: "string", arg: "local|dojot", help: "Who revokes and signs during the run: the local CA (default) or dojot's x509 service" },
  "crl-wait": { type: "string", arg: "MS", default: String(LIFECYCLE_DEFAULTS.crlWaitMs), help: "Time given to the broker after a revocation before the revoked certificate is tried" },
  ...LIFECYCLE_LOCAL_OPTIONS,
};

function policy(o: Options, kind: LifecycleKind): LifecyclePolicy | undefined {
  if (!o.bool(kind)) return undefined;
  return {
    max: o.int(`${kind}-max`, LIFECYCLE_DEFAULTS.max, 0, 100_000_000),
    afterMs: o.int(`${kind}-after`, LIFECYCLE_DEFAULTS.afterMs, 0, 365 * 86_400_000),
    probability: o.num(`${kind}-probability`, LIFECYCLE_DEFAULTS.probability, 0, 100),
  };
}

/** The run's renew/revoke settings, or undefined when neither is on. Problems go to `o.issues`. */
export function readLifecycle(o: Options, run: { certs: string; tls: boolean }): LifecycleConfig | undefined {
  const renew = policy(o, "renew");
  const revoke = policy(o, "revoke");
  if (!renew && !revoke) return undefined;
  if (!run.tls) o.issues.push(`--${renew ? "renew" : "revoke"} needs TLS: devices are renewed and revoked by their certificates (drop --no-tls)`);
  const signer = o.choice("signer", ["local", "dojot"], "local");
  const local = readLifecycleLocal(o, run.certs, signer === "dojot");
  if (signer === "local") {
    const d = certDirOf(local.caDir);
    if (!exists(d.caCert) || !exists(d.caKey)) {
      o.issues.push(`renew/revoke with the local CA need its certificate and key: ${d.caCert} and ${d.caKey} (give --ca-dir, or --signer dojot)`);
    }
  }
  const crlWaitMs = o.int("crl-wait", LIFECYCLE_DEFAULTS.crlWaitMs, 0, 600_000);
  return { ...(renew ? { renew } : {}), ...(revoke ? { revoke } : {}), signer, crlWaitMs, ...local };
}

/** This machine's CA directory, hook and dojot credentials (LIFECYCLE_LOCAL_OPTIONS); `certs` is the device directory or store URL. */
export function readLifecycleLocal(o: Options, certs: string, withDojot: boolean): LifecycleLocal {
  const caDir = o.str("ca-dir") ?? (isStoreUrl(certs) ? "cert" : certs);
  return {
    caDir,
    renewDir: o.str("renew-dir") ?? join(caDir, "renew"),
    revokeDir: o.str("revoke-dir") ?? join(caDir, "revoke"),
    ...(o.has("crl-hook") ? { crlHook: o.str("crl-hook")! } : {}),
    ...(withDojot ? { dojot: readDojotSettings(o) } : {}),
  };
}
