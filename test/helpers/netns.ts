/**
 * A small lab of Linux network namespaces for tests of several machines: a hub namespace with a
 * bridge (for the broker and Redis), one namespace per machine, each with its own address in
 * 198.18.N.0/24 (the benchmarking range) and its own ephemeral port range, all joined to the hub
 * by veth pairs. This process reaches the bridge too (198.18.N.254), to watch the broker.
 * Needs root and iproute2; `available()` says why not where it cannot be made.
 */
import type { Subprocess } from "bun";

export interface Namespace {
  name: string;
  addr: string;
  /** The veth end inside this namespace: `ip -n NAME link set eth0 down` cuts it off. */
  dev: string;
  /** argv prefix that runs a command inside it. */
  exec: string[];
}

export interface Lab extends AsyncDisposable {
  hub: Namespace;
  /** By name, in the order asked for. */
  spaces: Namespace[];
  /** Sets a namespace's link up or down. */
  link(ns: Namespace, up: boolean): Promise<void>;
}

async function ip(...args: string[]): Promise<void> {
  const p = Bun.spawn(["ip", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`ip ${args.join(" ")}: ${err.trim()}`);
}

/** null when namespaces can be made here, else why not. */
export async function netnsUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return "not root";
  if (!Bun.which("ip")) return "no ip command (iproute2)";
  const probe = `cicada-probe-${process.pid}`;
  try {
    await ip("netns", "add", probe);
    await ip("netns", "del", probe);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Makes the hub and one namespace per `names` entry; each machine namespace gets the port range
 * `ports[i]`. The subnet's third octet is picked from this process's id, so labs of parallel
 * test runs do not collide.
 */
export async function makeLab(names: string[], ports: [number, number][] = []): Promise<Lab> {
  const net = 1 + (process.pid % 250);
  const tag = `c${net}`;
  const prefix = `198.18.${net}`;
  const made: string[] = [];
  const rootDev = `${tag}-root`;
  const teardown = async () => {
    for (const n of made.reverse()) await ip("netns", "del", n).catch(() => {});
    await ip("link", "del", rootDev).catch(() => {});
  };
  try {
    const hubName = `${tag}-hub`;
    await ip("netns", "add", hubName);
    made.push(hubName);
    await ip("-n", hubName, "link", "set", "lo", "up");
    await ip("-n", hubName, "link", "add", "br0", "type", "bridge");
    await ip("-n", hubName, "addr", "add", `${prefix}.1/24`, "dev", "br0");
    await ip("-n", hubName, "link", "set", "br0", "up");
    const hub: Namespace = { name: hubName, addr: `${prefix}.1`, dev: "br0", exec: ["ip", "netns", "exec", hubName] };

    // This process on the bridge.
    await ip("link", "add", rootDev, "type", "veth", "peer", "name", "to-root", "netns", hubName);
    await ip("-n", hubName, "link", "set", "to-root", "master", "br0", "up");
    await ip("addr", "add", `${prefix}.254/24`, "dev", rootDev);
    await ip("link", "set", rootDev, "up");

    const spaces: Namespace[] = [];
    for (const [i, name] of names.entries()) {
      const ns = `${tag}-${name}`;
      await ip("netns", "add", ns);
      made.push(ns);
      const hubEnd = `to-${name}`.slice(0, 15);
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", hubEnd, "netns", hubName);
      await ip("-n", hubName, "link", "set", hubEnd, "master", "br0", "up");
      const addr = `${prefix}.${11 + i}`;
      await ip("-n", ns, "addr", "add", `${addr}/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
      const range = ports[i];
      if (range) {
        const p = Bun.spawn(["ip", "netns", "exec", ns, "sysctl", "-qw", `net.ipv4.ip_local_port_range=${range[0]} ${range[1]}`], { stdio: ["ignore", "ignore", "inherit"] });
        if ((await p.exited) !== 0) throw new Error(`cannot set the port range in ${ns}`);
      }
      spaces.push({ name: ns, addr, dev: "eth0", exec: ["ip", "netns", "exec", ns] });
    }
    return {
      hub,
      spaces,
      link: (ns, up) => ip("-n", ns.name, "link", "set", ns.dev, up ? "up" : "down"),
      [Symbol.asyncDispose]: teardown,
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}

/** Waits for a process and kills it (SIGKILL) if it outlives `ms`. */
export async function reap(p: Subprocess, ms = 15_000): Promise<void> {
  if (p.exitCode !== null) return;
  const t = setTimeout(() => p.kill("SIGKILL"), ms);
  await p.exited;
  clearTimeout(t);
}
