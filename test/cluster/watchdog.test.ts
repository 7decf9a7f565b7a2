/**
 * The supervisor's watchdog: whether a silent worker is still running, read from real processes'
 * /proc/PID/stat (a sleeping one, a busy one, a stopped one) and over the watchdog's window of CPU
 * times. A worker waiting inside the kernel (D: memory being reclaimed, the disk) is running: on a
 * machine short of memory it can be silent for seconds without CPU time of its own, and killing it
 * dropped 19,000 devices in the middle of a 400,000-device ramp.
 */
import { afterEach, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { running } from "../../src/cluster/supervisor.ts";
import { procStat } from "../../src/sys/cpu.ts";
import { waitFor } from "../helpers/broker.ts";

const started: Subprocess[] = [];
afterEach(() => {
  for (const p of started.splice(0)) p.kill("SIGKILL");
});
const spawn = (argv: string[]) => {
  const p = Bun.spawn(argv, { stdio: ["ignore", "ignore", "ignore"] });
  started.push(p);
  return p;
};

test("a sleeping process that used no CPU over the window is not running; one that used some is", async () => {
  const sleeper = spawn(["sleep", "30"]);
  await waitFor(() => procStat(sleeper.pid)?.state === "S", "sleep to be asleep");
  const stat = procStat(sleeper.pid)!;
  expect(running(stat, [stat.cpuTicks, stat.cpuTicks, stat.cpuTicks])).toBe(false);
  // CPU anywhere in the window, not only in the last second: a worker that ran 3 s ago and waits now.
  expect(running(stat, [stat.cpuTicks - 1, stat.cpuTicks, stat.cpuTicks])).toBe(true);
  // Fewer than two known readings say nothing about CPU.
  expect(running(stat, [null, stat.cpuTicks])).toBe(false);
});

test("a process on a core (R) is running; a stopped one (T) is not, whatever CPU it used before it stopped", async () => {
  const busy = spawn([process.execPath, "-e", "while (true) {}"]);
  await waitFor(() => procStat(busy.pid)?.state === "R", "the busy loop to be on a core");
  const onCore = procStat(busy.pid)!;
  expect(running(onCore, [onCore.cpuTicks, onCore.cpuTicks])).toBe(true);
  busy.kill("SIGSTOP");
  await waitFor(() => procStat(busy.pid)?.state === "T", "the busy loop to be stopped");
  const stopped = procStat(busy.pid)!;
  expect(running(stopped, [0, stopped.cpuTicks])).toBe(false);
});

test("waiting inside the kernel (D) is running; gone is not", async () => {
  // D cannot be made on demand here; the rule is read from the state letter alone.
  expect(running({ state: "D" }, [7, 7, 7])).toBe(true);
  const gone = spawn(["true"]);
  await gone.exited;
  expect(procStat(gone.pid)).toBeNull();
  expect(running(procStat(gone.pid), [1, 2])).toBe(false);
});
