/**
 * Certificate renew and revoke during a run (dojot's RENEW_DEVICES / REVOKE_DEVICES): what a
 * run asks for, and the one question a swarm asks whoever holds the caps and the signer.
 */
import type { DojotSettings } from "../dojot/client.ts";

export type LifecycleKind = "renew" | "revoke";

/** When a device may be renewed or revoked: checked at each of its publishes. */
export interface LifecyclePolicy {
  /** Devices at most, across every worker and machine of the run (DEVICES_TO_RENEW / _REVOKE). */
  max: number;
  /** Connected at least this long first (TIME_TO_RENEW / _REVOKE, ms). */
  afterMs: number;
  /** Chance per publish, percent (PROBABILITY_TO_RENEW / _REVOKE). */
  probability: number;
}

/** What a run asks of renew/revoke: the part a controller may tell its machines. */
export interface LifecyclePlan {
  renew?: LifecyclePolicy;
  revoke?: LifecyclePolicy;
  /** Who revokes and signs: the local CA of `caDir`, or dojot's x509 service. */
  signer: "local" | "dojot";
  /** Time given to the broker after a revocation before the revoked certificate is tried (ms). */
  crlWaitMs: number;
}

/**
 * What acts on the machine itself: its CA directory, the shell hook, the signer's credentials.
 * These come only from that machine's own command line and environment, never over the network.
 */
export interface LifecycleLocal {
  /** Directory whose `ca.crt` + `.ca/ca.key` sign renewed certificates and whose `.ca/crl.pem` lists revoked ones. */
  caDir: string;
  /** Renewed keys and certificates go here (RENEW_CERT_DIR). */
  renewDir: string;
  /** Revoked certificates are filed here (REVOKE_CERT_DIR); the local CA's CRL lists them. */
  revokeDir: string;
  /** Shell command run after the CRL is rewritten, to make the broker reload it (e.g. `kill -HUP <pid>`). */
  crlHook?: string;
  dojot?: DojotSettings;
}

export type LifecycleConfig = LifecyclePlan & LifecycleLocal;

/** The plan alone, as a controller sends it. */
export function lifecyclePlan(c: LifecycleConfig): LifecyclePlan {
  return { ...(c.renew ? { renew: c.renew } : {}), ...(c.revoke ? { revoke: c.revoke } : {}), signer: c.signer, crlWaitMs: c.crlWaitMs };
}

/**
 * The answer to a device's request: refused by the cap, or granted — then done, or failed with
 * `failure` (the stats reason: signer_error, cap_unavailable).
 */
export type LifecycleAnswer = { granted: false } | { granted: true; failure?: string; cert?: string; key?: string };

/** What a swarm calls: in-process, over IPC to its supervisor, whichever holds the caps and the signer. */
export interface LifecycleHooks {
  request(kind: LifecycleKind, id: string, certPem: string): Promise<LifecycleAnswer>;
}
