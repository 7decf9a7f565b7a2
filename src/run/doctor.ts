/**
 * Is this machine ready for N devices? `cicada doctor` prints every check; `cicada run` runs the
 * host checks before it connects (errors stop it, the rest warn) and points to the doctor.
 *
 * Each check turns one OS limit into a number of devices this machine can hold under it, with
 * the commands that lift it. The smallest is the verdict: "~N devices; the limit is X".
 * Facts are read from /proc in one place (readHostFacts), so the arithmetic is tested apart.
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { autoWorkers, ephemeralPorts, FD_RESERVE, PORT_SEARCH_SLOW } from "../engine/limits.ts";
import { getFileLimit } from "../../native/rlimit.ts";
import type { TlsStack } from "../transport/connect.ts";

/**
 * Memory per mTLS device in cicada's processes, and the kernel's memory per socket (slab:
 * socket, file, epoll entry; idle sockets hold no buffers). The device is one of the
 * 100,000-device test's, publishing QoS 1 every 30 s and subscribed (`bun bench/scale.bench.ts`):
 * the process tree's PSS at its peak less the processes' own (below), ÷ devices = 21.5–22.1 KB
 * (two runs; 23.3 KB while every worker also kept the whole sorted id list). An
 * idle one holds 20.1–20.2 KB (`bun bench/memory.bench.ts`, 19,000 in one process). The kernel's is
 * half of the 9.1–10.2 KB the slab grew per loopback connection (both ends). README, "Sizing".
 */
export const DEVICE_RSS_BYTES = 22_100;
/**
 * The same with cicada's own TLS client (--tls-stack cicada): the 100,000-device test's tree held
 * 710 MB PSS at its peak, 188 MB of it the processes' own, so 5.2 KB per device (2026-11-27); an
 * idle one holds 4.7 KB (`bun bench/memory.bench.ts --layers mtls --tls-stack cicada`).
 */
export const DEVICE_RSS_BYTES_OWN_TLS = 5_300;
export const DEVICE_KERNEL_BYTES = 5_100;
/**
 * What the processes cost before their devices (`bun bench/memory.bench.ts --layers process`):
 * the executable's pages, resident once however many processes map them (38 MB), then each
 * process's own memory: a worker's 20.7–20.8 MB, the supervisor's 24.1 MB.
 */
export const EXECUTABLE_BYTES = 38 * 2 ** 20;
export const PROCESS_BASE_BYTES = 21 * 2 ** 20;
export const SUPERVISOR_BYTES = 24 * 2 ** 20;
/** What the OS and the rest of the machine keep back from MemAvailable: 10%. */
const MEMORY_SPARE = 0.1;
/** A per-process open-file limit to ask for: what one worker can usefully hold, and then some. */
const WANT_NOFILE = 1_048_576;

/** What the checks read from the machine: /proc and the process limits. null where it cannot be read. */
export interface HostFacts {
  cores: number;
  /** This process's RLIMIT_NOFILE: cicada raises the soft limit to the hard one itself. */
  nofile: { soft: number; hard: number } | null;
  /** fs.nr_open: the most a hard limit may be raised to. */
  nrOpen: number | null;
  /** fs.file-max and the handles allocated now (fs.file-nr). */
  fileMax: number | null;
  fileUsed: number | null;
  ports: [number, number] | null;
  somaxconn: number | null;
  twReuse: number | null;
  /** nf_conntrack_max and _count, when the conntrack module is loaded. */
  conntrackMax: number | null;
  conntrackUsed: number | null;
  /**
   * TCP connections established on this machine now (CurrEstab of /proc/net/snmp, IPv4 and IPv6;
   * read only when conntrack is loaded). An empty conntrack table while connections are open means
   * nothing asks conntrack to track them (no rule uses it), so its table bounds nothing.
   */
  tcpEstablished: number | null;
  /** Read while a loopback connection of cicada's own was open, to test conntrack (probeHostFacts). */
  probed?: boolean;
  memAvailable: number | null;
}

function proc(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/** TCP connections established now: the TCP MIB's CurrEstab (one small file, however many sockets); null when unreadable. */
function establishedTcp(): number | null {
  const [names, values] = (proc("/proc/net/snmp") ?? "").split("\n").filter((l) => l.startsWith("Tcp:"));
  const i = names?.split(/\s+/).indexOf("CurrEstab") ?? -1;
  const v = i > 0 ? Number(values?.split(/\s+/)[i]) : NaN;
  return Number.isFinite(v) ? v : null;
}

function procNumber(path: string): number | null {
  const v = proc(path);
  const n = v === null ? NaN : Number(v.split(/\s+/)[0]);
  return Number.isFinite(n) ? n : null;
}

export function readHostFacts(): HostFacts {
  const limit = getFileLimit();
  const fileNr = proc("/proc/sys/fs/file-nr")?.split(/\s+/).map(Number);
  const mem = /MemAvailable:\s+(\d+) kB/.exec(proc("/proc/meminfo") ?? "");
  const conntrackMax = procNumber("/proc/sys/net/netfilter/nf_conntrack_max");
  return {
    cores: availableParallelism(),
    nofile: limit.ok ? limit.value : null,
    nrOpen: procNumber("/proc/sys/fs/nr_open"),
    fileMax: procNumber("/proc/sys/fs/file-max"),
    fileUsed: fileNr && fileNr.length >= 3 ? fileNr[0]! - fileNr[1]! : null,
    ports: ephemeralPorts(),
    somaxconn: procNumber("/proc/sys/net/core/somaxconn"),
    twReuse: procNumber("/proc/sys/net/ipv4/tcp_tw_reuse"),
    conntrackMax,
    conntrackUsed: procNumber("/proc/sys/net/netfilter/nf_conntrack_count"),
    tcpEstablished: conntrackMax === null ? null : establishedTcp(),
    memAvailable: mem ? Number(mem[1]) * 1024 : null,
  };
}

/**
 * The facts, read with a TCP connection open when that is what it takes to tell whether
 * conntrack tracks connections: with its table empty and no connection open, a table that bounds
 * every device and one that nothing uses look the same. A connection to itself on loopback
 * (127.0.0.1; a rule that tracks any traffic of this network namespace tracks it too) settles
 * it: read while it is open, an empty table means nothing is tracked.
 */
export async function probeHostFacts(): Promise<HostFacts> {
  const f = readHostFacts();
  if (f.conntrackMax === null || f.conntrackUsed !== 0 || (f.tcpEstablished ?? 0) > 0) return f;
  let accepted!: () => void;
  const up = new Promise<void>((resolve) => (accepted = resolve));
  let server: import("bun").TCPSocketListener | undefined;
  try {
    server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: () => accepted(), data() {} } });
    const client = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {} } });
    try {
      await Promise.race([up, Bun.sleep(1000)]);
      return { ...readHostFacts(), probed: true };
    } finally {
      client.end();
    }
  } catch {
    return f; // no loopback here: the facts as they were
  } finally {
    server?.stop(true);
  }
}

/** The run a machine is checked for. */
export interface Plan {
  /** Devices asked for (null: say what the machine can hold). */
  devices: number | null;
  /** Worker processes: a number, or auto (one per core, more if the open-file limit needs them). */
  workers: number | "auto";
  /** Distinct broker host:port destinations. */
  destinations: number;
  /** --source-address count (0: the kernel picks the source). */
  sources: number;
  /** Whose TLS the devices speak (--tls-stack; absent: Bun's): what a device costs in memory. */
  tlsStack?: TlsStack;
}

export interface Check {
  /** What is checked, e.g. "open files per process". */
  name: string;
  /** The figures read, e.g. "soft 1024, hard 20000". */
  found: string;
  /** Devices this machine can hold under this limit (Infinity: it does not bound them). */
  holds: number;
  /** Only advice: it does not bound the devices (somaxconn, tcp_tw_reuse). */
  advisory?: boolean;
  /** Commands that lift it, shown when it falls short (or, for advice, always). */
  fix: string[];
}

export interface Verdict {
  checks: Check[];
  /** Devices the machine can hold: the smallest holds of the bounding checks. */
  holds: number;
  /** The check that sets it. */
  limit: Check | null;
  /** Checks that fall short of plan.devices. */
  short: Check[];
}

const n = (x: number) => (Number.isFinite(x) ? Math.floor(x).toLocaleString("en-US") : "no limit");

/** Workers a plan runs, as `cicada run` picks them (the soft limit is raised to the hard one first). */
export function workersFor(plan: Plan, f: HostFacts): number {
  if (plan.workers !== "auto") return plan.workers;
  if (plan.devices === null) return f.cores;
  return autoWorkers(plan.devices, f.nofile ? Math.max(1, f.nofile.hard - FD_RESERVE) : Infinity, f.cores);
}

/** Every check for `plan` on a machine with `f`, and the verdict. */
export function assess(plan: Plan, f: HostFacts): Verdict {
  const checks: Check[] = [];
  const want = plan.devices ?? 0;
  const workers = workersFor(plan, f);

  if (f.nofile) {
    // cicada raises each process's soft limit to its hard limit; the hard one is what counts.
    const perProcess = Math.max(0, f.nofile.hard - FD_RESERVE);
    const need = Math.max(WANT_NOFILE, Math.ceil(want / workers) + FD_RESERVE);
    const fix = [`ulimit -n ${need}            # in the shell that starts cicada (raising the hard limit needs root)`];
    if (f.nrOpen !== null && f.nrOpen < need) fix.push(`sysctl -w fs.nr_open=${need}   # the most any process may open`);
    fix.push(`# under systemd: a drop-in for the unit that runs cicada, e.g.`, `#   mkdir -p /etc/systemd/system/cicada.service.d && printf '[Service]\\nLimitNOFILE=${need}\\n' > /etc/systemd/system/cicada.service.d/nofile.conf`);
    if (plan.workers !== "auto") fix.push(`# or more worker processes: --workers ${Math.max(1, Math.ceil(want / Math.max(1, perProcess)))}`);
    checks.push({
      name: "open files per process",
      found: `soft ${n(f.nofile.soft)}, hard ${n(f.nofile.hard)}, fs.nr_open ${f.nrOpen === null ? "?" : n(f.nrOpen)}; ${workers} worker process(es) × ${n(perProcess)} devices`,
      holds: plan.workers === "auto" ? Infinity : workers * perProcess,
      fix,
    });
  }
  if (f.fileMax !== null) {
    const free = f.fileMax - (f.fileUsed ?? 0);
    checks.push({
      name: "open files, whole machine",
      found: `fs.file-max ${n(f.fileMax)}, ${n(f.fileUsed ?? 0)} in use`,
      holds: Math.max(0, free - workers * FD_RESERVE),
      fix: [`sysctl -w fs.file-max=${Math.max(2 * want, 2_097_152)}`],
    });
  }
  if (f.ports) {
    const count = f.ports[1] - f.ports[0] + 1;
    const per = plan.sources > 0 ? plan.sources : Math.max(1, plan.destinations);
    const what = plan.sources > 0 ? `${plan.sources} source address(es)` : `${per} broker address(es)`;
    const fix = [`sysctl -w net.ipv4.ip_local_port_range="1024 65535"`];
    fix.push(plan.sources > 0 ? "# or more --source-address (127.0.0.2, 127.0.0.3, … on loopback)" : "# or more broker ports or hosts (--port 8883,8884,…): each destination has its own range");
    checks.push({ name: "ephemeral ports", found: `${f.ports[0]}-${f.ports[1]} (${n(count)} ports) × ${what}`, holds: count * per, fix });
    const each = want / per;
    if (each > PORT_SEARCH_SLOW) {
      checks.push({
        name: "port search",
        found: `${n(each)} connections per ${plan.sources > 0 ? "source address" : "broker address"}: past ~${n(PORT_SEARCH_SLOW)} the kernel's search for a free port slows connects`,
        holds: Infinity,
        advisory: true,
        fix: [plan.sources > 0 ? "# more --source-address" : "# more broker ports or hosts"],
      });
    }
  }
  if (f.conntrackMax !== null) {
    const lift = `sysctl -w net.netfilter.nf_conntrack_max=${Math.max(2 * want, 262_144)}`;
    // Empty while connections are open: nothing is tracked, so the table bounds nothing (yet).
    const idle = f.conntrackUsed === 0 && (f.tcpEstablished ?? 0) > 0;
    checks.push(
      idle
        ? {
            name: "conntrack table",
            found: `nf_conntrack_max ${n(f.conntrackMax)}, but 0 entries with ${f.probed ? "a loopback connection of cicada's own" : `${n(f.tcpEstablished!)} TCP connection(s)`} open: no rule asks it to track connections, so it bounds nothing now`,
            holds: Infinity,
            advisory: true,
            fix: [`# a firewall rule that tracks connections (NAT, -m conntrack/state) would make it a limit: ${lift}`],
          }
        : {
            name: "conntrack table",
            found: `nf_conntrack_max ${n(f.conntrackMax)}, ${n(f.conntrackUsed ?? 0)} in use (each tracked connection takes an entry)`,
            holds: Math.max(0, f.conntrackMax - (f.conntrackUsed ?? 0)),
            fix: [lift],
          },
    );
  }
  if (f.memAvailable !== null) {
    const ownTls = plan.tlsStack === "cicada";
    const own = ownTls ? DEVICE_RSS_BYTES_OWN_TLS : DEVICE_RSS_BYTES;
    const base = EXECUTABLE_BYTES + SUPERVISOR_BYTES + workers * PROCESS_BASE_BYTES;
    const room = f.memAvailable * (1 - MEMORY_SPARE) - base;
    const fits = (perDevice: number) => Math.max(0, Math.floor(room / (perDevice + DEVICE_KERNEL_BYTES)));
    const kb = (bytes: number) => (bytes / 1000).toFixed(1);
    checks.push({
      name: "memory",
      found:
        `${(f.memAvailable / 2 ** 30).toFixed(1)} GiB available, 10% kept spare; ${(base / 2 ** 20).toFixed(0)} MB for the executable and ${workers + 1} process(es), ` +
        `then ~${kb(own + DEVICE_KERNEL_BYTES)} KB per mTLS device (${kb(own)} KB in cicada${ownTls ? " with its own TLS" : ""}, ${kb(DEVICE_KERNEL_BYTES)} KB in the kernel)`,
      holds: fits(own),
      fix: [
        ...(ownTls ? [] : [`--tls-stack cicada   # cicada's own TLS 1.3 client: ~${kb(DEVICE_RSS_BYTES_OWN_TLS + DEVICE_KERNEL_BYTES)} KB per device → ~${n(fits(DEVICE_RSS_BYTES_OWN_TLS))} devices, if they speak TLS 1.3`]),
        "# more memory, or spread the devices over more machines (cicada worker --redis …)",
      ],
    });
  }
  checks.push({
    name: "cores",
    found: `${f.cores} core(s): ${workers} worker process(es)${workers > f.cores ? ", more than cores: they share them" : ""}`,
    holds: Infinity,
    advisory: true,
    fix: f.cores < 2 ? ["# a second core: cicada runs one worker per core"] : [],
  });
  if (f.twReuse !== null && f.twReuse !== 1) {
    checks.push({
      name: "tcp_tw_reuse",
      found: `${f.twReuse}${f.twReuse === 2 ? " (loopback only)" : ""}: a reconnecting device's old port waits in TIME_WAIT for 60 s`,
      holds: Infinity,
      advisory: true,
      fix: ["sysctl -w net.ipv4.tcp_tw_reuse=1   # with reconnect storms to a remote broker"],
    });
  }
  if (f.somaxconn !== null && f.somaxconn < 4096) {
    checks.push({
      name: "somaxconn",
      found: `${f.somaxconn}: a broker on this machine queues at most this many connects`,
      holds: Infinity,
      advisory: true,
      fix: ["sysctl -w net.core.somaxconn=65535   # on a machine that runs a broker"],
    });
  }

  const bounding = checks.filter((c) => !c.advisory);
  const limit = bounding.reduce<Check | null>((a, c) => (a === null || c.holds < a.holds ? c : a), null);
  const holds = limit?.holds ?? Infinity;
  const short = plan.devices === null ? [] : bounding.filter((c) => c.holds < plan.devices!);
  return { checks, holds, limit, short };
}

/** One line: "this machine can hold ~N devices; the limit is X". */
export function verdictLine(v: Verdict, devices: number | null): string {
  const can = v.limit && Number.isFinite(v.holds) ? `this machine can hold ~${n(v.holds)} mTLS devices; the limit is ${v.limit.name}` : "no limit found on the devices this machine can hold";
  if (devices === null) return can;
  return v.short.length ? `${n(devices)} devices do NOT fit: ${can}` : `${n(devices)} devices fit: ${can}`;
}

export const doctorHint = (devices: number) => `cicada doctor --devices ${devices} shows every limit of this machine and how to lift it`;

/**
 * What `cicada run` warns of before it connects, beyond its own open-file and port checks
 * (engine/limits.ts, which stop it): the doctor's memory, whole-machine files and conntrack, only
 * warnings, as the figures behind them are estimates.
 */
export function hostWarnings(devices: number, workers: number, f: HostFacts, tlsStack?: TlsStack): string[] {
  const own = new Set(["open files per process", "ephemeral ports"]);
  return assess({ devices, workers, destinations: 1, sources: 0, ...(tlsStack ? { tlsStack } : {}) }, f)
    .short.filter((c) => !own.has(c.name))
    .map((c) => `${c.name}: ${c.found}: about ${n(c.holds)} devices fit, fewer than --users ${devices} (${doctorHint(devices)})`);
}
