/**
 * Can one process hold this many devices? Checked before connecting, so a run that cannot
 * work says what to change instead of failing at the 20,000th connection with EMFILE.
 */
import { readFileSync } from "node:fs";
import type { FileLimit } from "../../native/rlimit.ts";

/** File descriptors a process needs besides its connections (stdio, files, Redis, the API). */
export const FD_RESERVE = 100;
/** Beyond this many connections per destination (or per bound source address) the kernel's port search gets slow. */
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

/** `--workers auto`: one process per core, more when one process may not open enough files for its share; never more than devices. */
export function autoWorkers(users: number, perProcess: number, cores: number): number {
  return Math.max(1, Math.min(users, Math.max(cores, Math.ceil(users / perProcess))));
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
    const range = `${c.ports[0]}-${c.ports[1]}`;
    if (c.sources > 0) {
      // Bun binds each socket to its source address before connecting, so the kernel picks the
      // port at bind() time, unaware of the destination: one ephemeral range per source address
      // across all brokers, searched more slowly as it fills.
      const perSource = Math.ceil(c.users / c.sources);
      if (perSource > portCount) {
        errors.push(`--users ${c.users} over ${c.sources} --source-address(es) needs ${perSource} local ports per address, but the ephemeral range ${range} has ${portCount}: add source addresses, or drop --source-address and add broker ports`);
      } else if (perSource > PORT_SEARCH_SLOW) {
        warnings.push(`${perSource} connections per --source-address: a socket bound to a source address gets its port at bind() time, and past ~${PORT_SEARCH_SLOW} per address that search slows connects sharply; add addresses, or drop --source-address and spread over more broker ports`);
      }
    } else {
      const perDestination = Math.ceil(c.users / Math.max(1, c.destinations));
      const where = `${Math.max(1, c.destinations)} broker address(es)`;
      if (perDestination > portCount) {
        errors.push(`--users ${c.users} over ${where} needs ${perDestination} local ports per broker address, but the ephemeral range ${range} has ${portCount}: add broker ports or hosts`);
      } else if (perDestination > PORT_SEARCH_SLOW) {
        warnings.push(`${perDestination} connections per broker address (${where}): past ~${PORT_SEARCH_SLOW} the kernel's port search slows connects; add broker ports or hosts`);
      }
    }
  }
  return { errors, warnings, perProcess };
}
