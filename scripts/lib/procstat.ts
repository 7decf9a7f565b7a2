/** CPU and memory of process trees and of the machine, read from /proc (Linux), for benchmarks. */
import { readFileSync, readdirSync } from "node:fs";
import { procStat, TICKS_PER_S } from "../../src/sys/cpu.ts";

export interface ProcUsage {
  /** user + system CPU seconds of the processes counted. */
  cpuS: number;
  rssBytes: number;
  /**
   * Proportional set size: resident pages, each shared page divided among the processes that
   * map it. Summed over processes it is their real memory, where RSS counts the executable's
   * pages (~40 MB for cicada) once per process.
   */
  pssBytes: number;
  processes: number;
}

/** A process's PSS from /proc/PID/smaps_rollup, bytes; 0 when it is gone or unreadable. */
export function pssBytes(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** Usage of `pids` and all their descendants. */
export function treeUsage(pids: number[]): ProcUsage {
  const all = readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);
  const parent = new Map<number, number>();
  for (const p of all) {
    const s = procStat(p);
    if (s) parent.set(p, s.ppid);
  }
  const wanted = new Set(pids);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, pp] of parent) if (!wanted.has(p) && wanted.has(pp)) (wanted.add(p), (grew = true));
  }
  const u: ProcUsage = { cpuS: 0, rssBytes: 0, pssBytes: 0, processes: 0 };
  for (const p of wanted) {
    const s = procStat(p);
    if (!s) continue;
    u.cpuS += s.cpuTicks / TICKS_PER_S;
    u.rssBytes += s.rssPages * 4096;
    u.pssBytes += pssBytes(p);
    u.processes++;
  }
  return u;
}

/** MemTotal, MemAvailable, MemFree and Cached (the page cache), bytes. */
export function machineMemory(): { totalBytes: number; availableBytes: number; freeBytes: number; cachedBytes: number } {
  const m = readFileSync("/proc/meminfo", "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(m)?.[1] ?? 0) * 1024;
  return { totalBytes: kb("MemTotal"), availableBytes: kb("MemAvailable"), freeBytes: kb("MemFree"), cachedBytes: kb("Cached") };
}

/**
 * The machine's stall counters: Linux pressure stall information (microseconds some task, or
 * every task, waited for a core, for memory or for I/O since boot) and the kernel's reclaim
 * counters. Differences between two readings say why processes were slow when the cores were
 * not all busy. Absent files (older kernels, no PSI) read as 0.
 */
export interface MachineStalls {
  cpuSomeUs: number;
  memorySomeUs: number;
  memoryFullUs: number;
  ioSomeUs: number;
  ioFullUs: number;
  /** Allocations that had to reclaim memory themselves (direct reclaim), and the pages they scanned. */
  allocStalls: number;
  directScanPages: number;
  kswapdScanPages: number;
  majorFaults: number;
}

export function machineStalls(): MachineStalls {
  const read = (path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  };
  const psi = (kind: string, which: "some" | "full") => Number(new RegExp(`^${which} .*total=(\\d+)`, "m").exec(read(`/proc/pressure/${kind}`))?.[1] ?? 0);
  const vm = read("/proc/vmstat");
  const count = (re: RegExp) => [...vm.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
  return {
    cpuSomeUs: psi("cpu", "some"),
    memorySomeUs: psi("memory", "some"),
    memoryFullUs: psi("memory", "full"),
    ioSomeUs: psi("io", "some"),
    ioFullUs: psi("io", "full"),
    allocStalls: count(/^allocstall_\w+ (\d+)$/gm),
    directScanPages: count(/^pgscan_direct (\d+)$/gm),
    kswapdScanPages: count(/^pgscan_kswapd (\d+)$/gm),
    majorFaults: count(/^pgmajfault (\d+)$/gm),
  };
}
