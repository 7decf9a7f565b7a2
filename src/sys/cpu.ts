/**
 * Another process's CPU time so far, from /proc/PID/stat (user + system, clock ticks): whether a
 * process that has gone quiet is still running (busy) or not running at all (stopped, hung on a
 * lock, in the kernel).
 */
import { readFileSync } from "node:fs";

/** utime + stime of process `pid` in clock ticks; null where /proc cannot say (not Linux, gone). */
export function cpuTicks(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of proc(5), counted from 1; `fields` starts at field 3 (state).
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks : null;
}
