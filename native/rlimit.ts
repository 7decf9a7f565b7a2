/**
 * The open-file limit (RLIMIT_NOFILE) through libc via bun:ffi, which Bun does not expose.
 * Each connection is one file descriptor, so this caps the devices one process can hold.
 * Every call returns { ok, value | reason } and never throws.
 */
import { readFileSync } from "node:fs";
import { loadLibc } from "./libc.ts";

export type Result<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface FileLimit {
  soft: number;
  hard: number;
}

const RLIMIT_NOFILE = 7; // Linux, x86_64 and aarch64

/** The limit as /proc reports it (works without FFI). */
function fromProc(): Result<FileLimit> {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
    const m = line && /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(line);
    if (!m) return { ok: false, reason: "no 'Max open files' line in /proc/self/limits" };
    const n = (s: string) => (s === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(s));
    return { ok: true, value: { soft: n(m[1]!), hard: n(m[2]!) } };
  } catch (err) {
    return { ok: false, reason: `cannot read /proc/self/limits: ${(err as Error).message}` };
  }
}

export function getFileLimit(): Result<FileLimit> {
  return fromProc();
}

/**
 * Raises the soft open-file limit to the hard limit. Returns the limit in force afterwards; on
 * failure, the reason says what the operator must set instead (ulimit -n, systemd LimitNOFILE).
 */
export async function raiseFileLimit(): Promise<Result<FileLimit>> {
  const before = fromProc();
  if (!before.ok) return before;
  if (before.value.soft >= before.value.hard) return before;
  if (process.platform !== "linux") return { ok: false, reason: `cannot raise the open-file limit on ${process.platform}: set ulimit -n ${before.value.hard}` };
  const lib = loadLibc();
  if (!lib) return { ok: false, reason: `bun:ffi unavailable: run 'ulimit -n ${before.value.hard}' (or LimitNOFILE=${before.value.hard} under systemd) first` };
  const buf = new BigUint64Array(2);
  if (lib.getrlimit(RLIMIT_NOFILE, buf) !== 0) return { ok: false, reason: "getrlimit(RLIMIT_NOFILE) failed" };
  buf[0] = buf[1]!;
  if (lib.setrlimit(RLIMIT_NOFILE, buf) !== 0) return { ok: false, reason: `setrlimit failed: run 'ulimit -n ${before.value.hard}' first` };
  return fromProc();
}
