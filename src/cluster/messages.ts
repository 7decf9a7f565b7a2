/**
 * The one message protocol between a controller and its workers, whatever carries it: IPC
 * between a supervisor and its local worker processes, Redis pub/sub between machines.
 */
import type { SwarmConfig } from "../engine/swarm.ts";
import type { EncodedStats } from "../metrics/snapshot.ts";

/** What one worker process simulates: a disjoint segment of the fleet's identities. */
export interface WorkerSpec {
  /** Position of this worker among its supervisor's workers. */
  slot: number;
  certDir: string;
  /** First identity of the segment (index into the directory's sorted ids). */
  first: number;
  /** Identities in the segment: the most devices this worker may run. */
  count: number;
  /** Without TLS and without enough certificates, ids are made up. */
  synthetic: boolean;
  swarm: SwarmConfig;
}

export type ToWorker =
  | { t: "start"; spec: WorkerSpec }
  | { t: "set"; users?: number; rate?: number }
  | { t: "stop" };

export interface WorkerStatus {
  target: number;
  active: number;
  connected: number;
  rss: number;
  cpu_us: number;
}

export type FromWorker =
  | { t: "stats"; slot: number; seq: number; delta: EncodedStats; status: WorkerStatus }
  | { t: "stopped"; slot: number; seq: number; delta: EncodedStats; status: WorkerStatus }
  | { t: "error"; slot: number; message: string };
