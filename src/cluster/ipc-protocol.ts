/**
 * The protocol between a supervisor and its worker processes on one machine, over IPC: specs
 * and commands down, stats deltas and status up. Machines speak redis-protocol.ts instead.
 */
import type { Publishing, SwarmConfig } from "../engine/config.ts";
import type { EncodedStats } from "../metrics/snapshot.ts";
import type { LifecycleAnswer, LifecycleKind } from "../lifecycle/types.ts";
import type { Range } from "./ranges.ts";
import type { Names } from "./identities.ts";
import type { StoreSettings } from "../store/redis.ts";

/** What one worker process simulates: its turn of positions over its machine's identity ranges. */
export interface WorkerSpec {
  /** Position of this worker among its supervisor's workers: it takes positions slot, slot+stride, ... */
  slot: number;
  stride: number;
  certDir: string;
  /** The machine's identities, as ranges of indices into the directory's sorted ids. */
  ranges: Range[];
  /** Without TLS and without enough certificates, ids are made up. */
  synthetic: boolean;
  /** The Redis certificate store, when `certDir` is its URL (settings resolved once, by the command). */
  store?: StoreSettings;
  /** The ids of this worker's first positions (up to its users), by directory index, from the supervisor's one listing; absent: the worker lists them. */
  names?: Names;
  swarm: SwarmConfig;
}

export type ToWorker =
  /** `lease`: when (engine/scheduler.ts leaseClock) the worker drops its devices and dials nothing (absent: no lease). */
  | { t: "start"; spec: WorkerSpec; v: number; lease?: number }
  /** The lease extended: the machine's controller is still heard from. */
  | { t: "lease"; until: number }
  /** `v` numbers the settings; the worker echoes the last it applied in its status. */
  /** `names`: ids of positions the worker was not named yet (more users, or new ranges), when its supervisor names them. */
  | { t: "set"; v: number; users?: number; rate?: number; ranges?: Range[]; names?: Names; publishing?: Partial<Publishing> }
  | { t: "stop" }
  /** Stop without waiting (a second Ctrl-C): the stop in progress cuts its waits short. */
  | { t: "hurry" }
  /** The supervisor's answer to a worker's renew/revoke request `req`. */
  | { t: "lifecycle"; req: number; answer: LifecycleAnswer };

export interface WorkerStatus {
  /** The last settings version applied. */
  v: number;
  target: number;
  active: number;
  connected: number;
  /** QoS 1/2 publishes awaiting their ack. */
  inflight: number;
  rss: number;
  cpu_us: number;
  /** Open file descriptors and the soft limit (sampled every 10 s, sys/fds.ts): each connection holds one. */
  fds: number;
  fd_limit: number;
}

export type FromWorker =
  | { t: "stats"; slot: number; seq: number; delta: EncodedStats; status: WorkerStatus }
  | { t: "stopped"; slot: number; seq: number; delta: EncodedStats; status: WorkerStatus }
  | { t: "error"; slot: number; message: string }
  /** A device asks to be renewed or revoked; the supervisor holds the caps and the signer. */
  | { t: "lifecycle"; slot: number; req: number; kind: LifecycleKind; id: string; certPem: string };
