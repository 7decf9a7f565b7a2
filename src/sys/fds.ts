/**
 * This process's open file descriptors and their limit, for /metrics (headroom per process).
 * Counting means listing /proc/self/fd: ~17 ms of CPU at 15,000 descriptors, done off the main
 * thread by an async readdir. So it is sampled at most every FD_SAMPLE_MS, and a call returns the
 * last sample at once (0 open until the first one lands).
 */
import { readdir } from "node:fs/promises";
import { getFileLimit } from "../../native/rlimit.ts";

export const FD_SAMPLE_MS = 10_000;

export interface FdUsage {
  open: number;
  limit: number;
}

const last: FdUsage = { open: 0, limit: 0 };
let sampledAt = -Infinity;

/** The last sample of open descriptors and the soft limit; starts a new sample when the last is older than FD_SAMPLE_MS. */
export function fdUsage(now = performance.now()): FdUsage {
  if (now - sampledAt >= FD_SAMPLE_MS) {
    sampledAt = now;
    const limit = getFileLimit();
    if (limit.ok) last.limit = Math.min(limit.value.soft, Number.MAX_SAFE_INTEGER);
    readdir("/proc/self/fd").then(
      (names) => void (last.open = names.length),
      () => {}, // no /proc (not Linux): the count stays 0, the limit still shows
    );
  }
  return { open: last.open, limit: last.limit };
}
