// cluster/ — fleets: one process, one process per core (supervisor, IPC) and many machines (Redis federation).
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * What the CLI and the API drive, whichever fleet runs the devices: one process
 * (local-fleet.ts), one process per core (supervisor.ts) or many machines (controller.ts).
 */
import type { Publishing } from "../engine/config.ts";
import type { Stats } from "../metrics/stats.ts";
import type { VerifiedTotals } from "../engine/verifier.ts";
import type { WorkerStatus } from "./ipc-protocol.ts";
import type { Range } from "./ranges.ts";
import type { DropReason } from "./seal.ts";

/** What the CLI and the API drive: one in-process swarm or a supervised set of workers. */
export interface Fleet {
  /** Starts the devices; a federated fleet resolves once the machines it waits for have joined. */
  start(): void | Promise<void>;
  setUsers(n: number): void;
  setRate(r: number): void;
  /** Changes how devices publish while they run: the interval (from --msg-rate) and pause/resume. */
  setPublishing(p: Partial<Publishing>): void;
  snapshot(): FleetSnapshot;
  /** Forgets the stats counted so far (Locust's reset): the report then covers what follows. */
  resetStats(): void;
  /** Stops every device; resolves with the fleet as it was when told to stop (final stats included). */
  stop(): Promise<FleetSnapshot>;
  /** Cuts a stop in progress short: outstanding acks and closing sockets are not waited for. */
  hurry?(): void;
}

export interface WorkerInfo extends WorkerStatus {
  /** The machine it runs on, in a federated run's snapshot (the controller adds it). */
  machine?: string;
  slot: number;
  pid: number;
  restarts: number;
  alive: boolean;
}

export interface FleetSnapshot {
  target: number;
  active: number;
  connected: number;
  /** QoS 1/2 publishes awaiting their ack now. */
  inflight: number;
  stats: Stats;
  workers: WorkerInfo[];
  /** Worker processes that died or hung and were replaced. */
  restarts: number;
  /** Machines of a federated run. */
  machines?: MachineInfo[];
  /** What the machines' verifying consumers counted (federated --verify), summed. */
  verified?: VerifiedTotals;
  /** Machine states the controller dropped, by reason (forged, replayed, malformed). */
  dropped?: Partial<Record<DropReason, number>>;
}

export interface MachineInfo {
  id: string;
  host: string;
  pid: number;
  lost: boolean;
  users: number;
  ranges: Range[];
  connected: number;
  processes: number;
  /** The machine's agent and its workers together. */
  cpu_us: number;
  rss: number;
  /** Control messages the machine dropped (forged, replayed, malformed). */
  dropped?: number;
  rejected?: string;
}

/** Splits `total` into `parts` near-equal whole shares. */
export function split(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}
