/**
 * Another process's CPU time and parent, from /proc/PID/stat: whether a process that has gone
 * quiet is still running (busy) or not running at all (stopped, stuck off the CPU); the
 * benchmarks' process trees read it too.
 */
import { readFileSync } from "node:fs";

/** Clock ticks per second of the times in /proc/PID/stat (USER_HZ, 100 on Linux). */
export const TICKS_PER_S = 100;

export interface ProcStat {
  /**
   * proc(5)'s state letter: R running or waiting for a core, S sleeping, D waiting inside the
   * kernel (disk, or memory being reclaimed), T stopped, Z exited.
   */
  state: string;
  ppid: number;
  /** utime + stime, clock ticks. */
  cpuTicks: number;
  /** Resident pages (4 KiB). */
  rssPages: number;
}

/** Process `pid`'s /proc/PID/stat fields cicada reads; null where /proc cannot say (not Linux, gone). */
export function procStat(pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  // `f` starts at field 3 of proc(5) (state): ppid is field 4, utime 14, stime 15, rss 24.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(f[11]) + Number(f[12]);
  return Number.isFinite(cpuTicks) ? { state: f[0]!, ppid: Number(f[1]), cpuTicks, rssPages: Number(f[21]) } : null;
}

/** utime + stime of process `pid` in clock ticks; null where /proc cannot say. */
export function cpuTicks(pid: number): number | null {
  return procStat(pid)?.cpuTicks ?? null;
}
