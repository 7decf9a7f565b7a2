/**
 * The protocol between a controller (`cicada run --redis`) and machines (`cicada worker`)
 * over Redis pub/sub. It carries what the IPC protocol carries — users, rate, identity
 * ranges, stop; stats and status back — shaped for a carrier that drops what it cannot
 * deliver: the controller restates every machine's whole assignment in a beat every
 * second, and machines resend their stats until the beat acknowledges them (stats-ledger.ts). A
 * lost message, a Redis restart or an outage of any length then costs nothing: the next
 * message covers it.
 */
import type { SwarmConfig } from "../engine/config.ts";
import type { PackedStats } from "../metrics/snapshot.ts";
import type { Range } from "./ranges.ts";
import type { WorkerInfo } from "./fleet.ts";
import type { VerifiedTotals } from "../engine/verifier.ts";

/** Key and channel names: `cicada:ctl` (beats), `cicada:up` (machine states), `cicada:machine:<id>` (registry). */
export const PREFIX = "cicada";
export const CTL = `${PREFIX}:ctl`;
export const UP = `${PREFIX}:up`;
export const registryKey = (machine: string) => `${PREFIX}:machine:${machine}`;

export const BEAT_MS = 1000;
/** A machine silent this long (while the controller's own link is up) is lost. */
export const LOST_MS = 10_000;
export const DEFAULT_GRACE_MS = 60_000;

/** What one machine is told to run. `v` changes whenever the rest does. */
export interface Assignment {
  v: number;
  /**
   * Fencing epoch: a machine that dropped its devices under fence N (its lease lapsed) starts
   * again only on an assignment with a higher one, which the controller gives once it has seen
   * that (or has declared the machine lost and held its identities back): a beat from before,
   * still queued when it wakes, cannot restart it.
   */
  fence: number;
  ranges: Range[];
  users: number;
  rate: number;
}

/** Controller → every machine, every second. */
export interface Beat {
  t: "beat";
  run: string;
  /** When the controller started (ms since the epoch): machines follow the newest controller, never an older one. */
  started: number;
  /** Numbers the controller's beats: a machine drops one it has seen, or an older one. */
  seq: number;
  /** Sent at (ms since the epoch, the controller's clock). */
  at: number;
  /** Stats epoch: bumped by a reset; machines then start their totals afresh. */
  epoch: number;
  /** Machines stop their devices when no beat came for this long. */
  grace_ms: number;
  stop: boolean;
  swarm: SwarmConfig;
  synthetic: boolean;
  /** --verify: each machine verifies its own devices with its own consumer identity. */
  verify?: { connections: number; actuateRate: number; waitMs: number };
  assign: Record<string, Assignment>;
  /** Per machine, the last stats step added (for the run and epoch above). */
  acks: Record<string, number>;
}

export interface MachineState {
  t: "state";
  machine: string;
  host: string;
  pid: number;
  /** When this agent started (ms since the epoch): a new value means a restarted agent, counting from zero. */
  since: number;
  /** Sent at (ms since the epoch, the machine's clock). */
  at: number;
  /** The run it works for, or null when idle. */
  run: string | null;
  seq: number;
  epoch: number;
  /** Assignment version every local worker has applied. */
  v: number;
  /** Leading positions of its ranges in use. */
  used: number;
  /** Identities in its certificate directory and a digest of their ids: machines must agree on them. */
  ids: number;
  digest: string;
  running: boolean;
  stopped: boolean;
  target: number;
  active: number;
  connected: number;
  /** Its own CPU and RSS (the agent process), workers' are in `workers`. */
  cpu_us: number;
  rss: number;
  workers: WorkerInfo[];
  /** Stats counted in steps from..to and not yet acknowledged (see stats-ledger.ts), histograms packed. */
  stats: { from: number; to: number; packed: PackedStats } | null;
  /** Steps still unacknowledged: 0 once the controller has added everything it counted. */
  pending: number;
  /** Control messages it dropped (forged, replayed, malformed). */
  dropped: number;
  /** The fence of the last assignment whose devices it dropped when its lease lapsed (0: none). */
  fenced: number;
  /** Its verifying consumer's running totals for the run (--verify). */
  verified?: VerifiedTotals;
  error?: string;
}

/** A digest of a directory's sorted ids: two machines with the same digest map indices to the same devices. */
export function idsDigest(ids: readonly string[]): string {
  return new Bun.CryptoHasher("sha1").update(ids.join(",")).digest("hex").slice(0, 16);
}

/** What a beat says about publishing (interval, on/off): a machine applies it when it changes. */
export function publishingKey(s: SwarmConfig): string {
  return `${s.intervalMs[0]}..${s.intervalMs[1]}:${s.publish !== false}:${s.max === true}`;
}
