/**
 * Can one process hold this many devices? Checked before connecting, so a run that cannot
 * work says what to change instead of failing at the 20,000th connection with EMFILE.
 */
import { readFileSync } from "node:fs";
import type { FileLimit } from "../../native/rlimit.ts";

/** File descriptors a process needs besides its connections (stdio, files, Redis, the API). */
export const FD_RESERVE = 100;
/** Beyond this many connections per (source, destination) pair the kernel's port search gets slow. */
export const PORT_SEARCH_SLOW = 10_000;

export interface CapacityInput {
  users: number;
  /** Worker processes the users are split over. */
  workers: number;
  /** Distinct broker host:port destinations. */
  destinations: number;
  /** Source addresses (0: the kernel chooses one). */
  sources: number;
  files: FileLimit | null;
  ports: [number, number] | null;
}

export interface Capacity {
  errors: string[];
  warnings: string[];
  /** Most devices one process can hold under the open-file limit. */
  perProcess: number;
}

/** The ephemeral port range, from /proc/sys/net/ipv4/ip_local_port_range. */
export function ephemeralPorts(): [number, number] | null {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return lo && hi ? [lo, hi] : null;
  } catch {
    return null;
  }
}

export function checkCapacity(c: CapacityInput): Capacity {
  const errors: string[] = [];
  const warnings: string[] = [];
  const perProcess = c.files ? Math.max(0, c.files.soft - FD_RESERVE) : Number.MAX_SAFE_INTEGER;
  const perWorker = Math.ceil(c.users / Math.max(1, c.workers));
  if (c.files && perWorker > perProcess) {
    errors.push(
      `--users ${c.users} over ${c.workers} worker process(es) puts ${perWorker} devices in each, needing ${perWorker + FD_RESERVE} open files, ` +
        `but one process may open ${c.files.soft} (hard limit ${c.files.hard}): hold at most ${perProcess} devices per process — ` +
        `use --workers ${Math.ceil(c.users / perProcess)} or more (or --workers auto)` +
        (c.files.hard > c.files.soft ? `, or raise the limit with 'ulimit -n ${c.files.hard}'` : ""),
    );
  }
  if (c.ports) {
    const portCount = c.ports[1] - c.ports[0] + 1;
    const pairs = Math.max(1, c.sources) * Math.max(1, c.destinations);
    const perPair = Math.ceil(c.users / pairs);
    const where = `(${Math.max(1, c.sources)} source address(es) × ${Math.max(1, c.destinations)} broker address(es))`;
    if (perPair > portCount) {
      errors.push(
        `--users ${c.users} over ${pairs} connection pair(s) ${where} needs ${perPair} local ports per pair, but the ephemeral range ${c.ports[0]}-${c.ports[1]} has ${portCount}: ` +
          `add source addresses (--source-address 127.0.0.2,127.0.0.3,...) or broker ports`,
      );
    } else if (perPair > PORT_SEARCH_SLOW) {
      warnings.push(
        `${perPair} connections per (source, broker) pair ${where}: past ~${PORT_SEARCH_SLOW} the kernel's port search slows connects; add --source-address 127.0.0.2,... or broker ports`,
      );
    }
  }
  return { errors, warnings, perProcess };
}
