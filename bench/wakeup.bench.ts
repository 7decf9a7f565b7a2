#!/usr/bin/env bun
/**
 * What one wake-up of an idle process costs on this machine: the floor under cicada's CPU per
 * message when devices publish seldom (1 per 30 s), where each PUBACK arrives alone and wakes
 * its worker for itself. Each mode runs in its own process for --seconds and prints one JSON
 * line with the CPU per wake-up (user + system, from getrusage):
 *   timer   — a 10 ms interval that does nothing (what cicada's timer wheel costs when idle)
 *   echo    — one byte every 10 ms to a TCP echo server in another process, read back: the
 *             timer's wake-up, a write and the reply's wake-up; with timer run too, a last
 *             line gives the reply's share (echo less timer)
 *   node, python — the same 10 ms sleep loop in those runtimes, when installed, to tell the
 *             machine's cost (a virtual machine's timer and scheduler) from Bun's own
 *   bun bench/wakeup.bench.ts [--seconds 20] [--only timer,echo,node,python]
 */
import { parseArgs } from "node:util";

const MODES = ["timer", "echo", "node", "python"] as const;
const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    only: { type: "string", default: MODES.join(",") },
    // Internal: run one mode in this process.
    child: { type: "string" },
    port: { type: "string" },
  },
});
const seconds = Number(values.seconds);
const PERIOD_MS = 10;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ bench: "wakeup", ...o }));

function cpuUs(c: NodeJS.CpuUsage): number {
  return c.user + c.system;
}

/** Runs `start` (which arms its wake-ups), waits 2 s to settle, then measures for --seconds. */
async function measure(start: () => void, count: () => number): Promise<{ cpuUs: number; wakeups: number }> {
  start();
  await Bun.sleep(2000);
  const c0 = process.cpuUsage();
  const n0 = count();
  await Bun.sleep(seconds * 1000);
  return { cpuUs: cpuUs(process.cpuUsage(c0)), wakeups: count() - n0 };
}

if (values.child === "timer") {
  let ticks = 0;
  const r = await measure(() => void setInterval(() => ticks++, PERIOD_MS), () => ticks);
  emit({ mode: "timer", wakeups_per_s: Math.round(r.wakeups / seconds), cpu_us_per_wakeup: +(r.cpuUs / r.wakeups).toFixed(1) });
  process.exit(0);
}
if (values.child === "echo") {
  let replies = 0;
  const socket = await Bun.connect({ hostname: "127.0.0.1", port: Number(values.port), socket: { data: () => void replies++ } });
  const one = new Uint8Array([1]);
  const r = await measure(() => void setInterval(() => socket.write(one), PERIOD_MS), () => replies);
  emit({ mode: "echo", rounds_per_s: Math.round(r.wakeups / seconds), cpu_us_per_round: +(r.cpuUs / r.wakeups).toFixed(1) });
  process.exit(0);
}

const NODE = `let n=0;setInterval(()=>n++,${PERIOD_MS});setTimeout(()=>{const c=process.cpuUsage(),n0=n;setTimeout(()=>{const d=process.cpuUsage(c);console.log(JSON.stringify({cpu:d.user+d.system,n:n-n0}));process.exit(0)},${seconds * 1000})},2000)`;
const PYTHON = `
import json, resource, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return (r.ru_utime + r.ru_stime) * 1e6
end = time.time() + 2
while time.time() < end: time.sleep(${PERIOD_MS / 1000})
c0, n, end = cpu(), 0, time.time() + ${seconds}
while time.time() < end: time.sleep(${PERIOD_MS / 1000}); n += 1
print(json.dumps({"cpu": cpu() - c0, "n": n}))`;

async function foreign(mode: "node" | "python", argv: string[]): Promise<void> {
  if (!Bun.which(argv[0]!)) return emit({ mode, skipped: `${argv[0]} is not installed` });
  const out = await new Response(Bun.spawn(argv, { stdout: "pipe" }).stdout).text();
  const { cpu, n } = JSON.parse(out) as { cpu: number; n: number };
  emit({ mode, wakeups_per_s: Math.round(n / seconds), cpu_us_per_wakeup: +(cpu / n).toFixed(1) });
}

/** Runs one mode in a process of its own; passes its line on and returns it. */
async function child(mode: string, extra: string[] = []): Promise<Record<string, number>> {
  const p = Bun.spawn([process.execPath, import.meta.path, "--child", mode, "--seconds", String(seconds), ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  const out = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) throw new Error(`mode ${mode} exited ${p.exitCode}`);
  process.stdout.write(out);
  return JSON.parse(out);
}

const seen: Record<string, Record<string, number>> = {};
for (const mode of values.only!.split(",")) {
  if (!MODES.includes(mode as (typeof MODES)[number])) throw new Error(`--only: unknown mode ${mode} (${MODES.join(", ")})`);
  if (mode === "timer") seen.timer = await child("timer");
  if (mode === "echo") {
    // The echo server runs here, in the parent: the child's CPU is what is measured.
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => void s.write(d) } });
    try {
      seen.echo = await child("echo", ["--port", String(server.port)]);
    } finally {
      server.stop(true);
    }
  }
  if (mode === "node") await foreign("node", ["node", "-e", NODE]);
  if (mode === "python") await foreign("python", ["python3", "-c", PYTHON]);
}
if (seen.timer && seen.echo) emit({ mode: "reply", cpu_us_per_reply: +(seen.echo.cpu_us_per_round! - seen.timer.cpu_us_per_wakeup!).toFixed(1) });
