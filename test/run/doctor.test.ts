/**
 * `cicada doctor`: each OS limit becomes a number of devices with the commands that lift it, the
 * smallest is the verdict, and each broker is dialled once — against real mosquitto with mutual
 * TLS: a broker whose certificate the CA signed, one it did not, and a port nothing listens on.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assess, hostWarnings, probeHostFacts, readHostFacts, verdictLine, type HostFacts } from "../../src/run/doctor.ts";
import { freePort } from "../../scripts/lib/testbed.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, startBroker } from "../helpers/testbed.ts";
import { cicada, sh, tempDir } from "../helpers/tmp.ts";
import { netnsUnavailable } from "../helpers/netns.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const DOCTOR = join(import.meta.dir, "../../src/run/doctor.ts");

/** A roomy machine: 8 cores, 1M files, the full port range, 64 GiB free, no conntrack. */
const ROOMY: HostFacts = {
  cores: 8,
  nofile: { soft: 1_048_576, hard: 1_048_576 },
  nrOpen: 1_048_576,
  fileMax: 10_000_000,
  fileUsed: 2000,
  ports: [1024, 65535],
  somaxconn: 4096,
  twReuse: 1,
  conntrackMax: null,
  conntrackUsed: null,
  tcpEstablished: 12,
  memAvailable: 64 * 2 ** 30,
};

describe("the doctor's arithmetic", () => {
  test("every limit in devices; the smallest is the verdict, named", () => {
    const v = assess({ devices: null, workers: "auto", destinations: 1, sources: 0 }, ROOMY);
    // One broker address: 64,512 ephemeral ports are fewer devices than memory or files allow.
    expect(v.limit?.name).toBe("ephemeral ports");
    expect(v.holds).toBe(65535 - 1024 + 1);
    expect(verdictLine(v, null)).toBe("this machine can hold ~64,512 mTLS devices; the limit is ephemeral ports");
    // Four broker addresses: four ranges; then 7 GiB of memory binds: the executable once (38 MB),
    // the supervisor (24 MB) and 8 workers × 21 MB, then 27.2 KB a device.
    const four = assess({ devices: 200_000, workers: "auto", destinations: 4, sources: 0 }, { ...ROOMY, memAvailable: 7 * 2 ** 30 });
    expect(four.holds).toBe(Math.floor((7 * 2 ** 30 * 0.9 - (38 + 24 + 8 * 21) * 2 ** 20) / 27_200));
    expect(four.limit?.name).toBe("memory");
    expect(four.short).toEqual([]);
    expect(verdictLine(four, 200_000)).toStartWith("200,000 devices fit: this machine can hold ~");
  });

  test("a low open-file limit with fixed workers falls short, with ulimit, nr_open and a systemd drop-in to lift it", () => {
    const f: HostFacts = { ...ROOMY, nofile: { soft: 1024, hard: 4096 }, nrOpen: 65_536 };
    const v = assess({ devices: 50_000, workers: 2, destinations: 8, sources: 0 }, f);
    const files = v.checks.find((c) => c.name === "open files per process")!;
    expect(files.holds).toBe(2 * (4096 - 100));
    expect(v.short.map((c) => c.name)).toEqual(["open files per process"]);
    expect(files.fix.join("\n")).toContain("ulimit -n 1048576");
    expect(files.fix.join("\n")).toContain("sysctl -w fs.nr_open=1048576");
    expect(files.fix.join("\n")).toContain("LimitNOFILE=1048576");
    expect(files.fix.join("\n")).toContain("--workers 13");
    // With workers on auto, more processes take the devices: files do not bind.
    expect(assess({ devices: 50_000, workers: "auto", destinations: 8, sources: 0 }, f).short).toEqual([]);
  });

  test("conntrack, the machine's files and memory bound the devices; cicada run warns of them", () => {
    const f: HostFacts = { ...ROOMY, conntrackMax: 65_536, conntrackUsed: 1536, memAvailable: 2 * 2 ** 30, fileMax: 30_000, fileUsed: 1000 };
    const v = assess({ devices: 100_000, workers: "auto", destinations: 8, sources: 0 }, f);
    expect(v.short.map((c) => c.name).sort()).toEqual(["conntrack table", "memory", "open files, whole machine"]);
    expect(v.checks.find((c) => c.name === "conntrack table")!.holds).toBe(64_000);
    expect(v.checks.find((c) => c.name === "conntrack table")!.fix).toEqual(["sysctl -w net.netfilter.nf_conntrack_max=262144"]);
    const warnings = hostWarnings(100_000, 8, f);
    expect(warnings).toHaveLength(3);
    for (const w of warnings) expect(w).toContain("cicada doctor --devices 100000");
  });

  test("with cicada's own TLS a device costs its own figure: more devices fit in the same memory", () => {
    const f: HostFacts = { ...ROOMY, memAvailable: 8 * 2 ** 30 };
    const memory = (tlsStack?: "cicada") => assess({ devices: 1_000_000, workers: "auto", destinations: 100, sources: 0, ...(tlsStack ? { tlsStack } : {}) }, f).checks.find((c) => c.name === "memory")!;
    const bun = memory();
    const own = memory("cicada");
    expect(bun.found).toContain("~27.2 KB per mTLS device (22.1 KB in cicada, 5.1 KB in the kernel)");
    expect(own.found).toContain("~10.4 KB per mTLS device (5.3 KB in cicada with its own TLS, 5.1 KB in the kernel)");
    expect(own.holds / bun.holds).toBeCloseTo(27.2 / 10.4, 1);
    // Short of memory with Bun's TLS, the doctor names the flag and what it would hold.
    expect(bun.fix[0]).toBe(`--tls-stack cicada   # cicada's own TLS 1.3 client: ~10.4 KB per device → ~${Math.floor(own.holds).toLocaleString("en-US")} devices, if they speak TLS 1.3`);
    expect(own.fix.join("\n")).not.toContain("--tls-stack");
    // cicada run warns from the same figure: 500,000 devices fit in 8 GiB only with cicada's TLS.
    expect(hostWarnings(500_000, 8, f).some((w) => w.startsWith("memory"))).toBe(true);
    expect(hostWarnings(500_000, 8, f, "cicada").some((w) => w.startsWith("memory"))).toBe(false);
  });

  test("a conntrack table that tracks nothing (0 entries, connections open) is a note, not a limit", () => {
    const f: HostFacts = { ...ROOMY, conntrackMax: 65_536, conntrackUsed: 0, tcpEstablished: 40 };
    const v = assess({ devices: 100_000, workers: "auto", destinations: 8, sources: 0 }, f);
    const ct = v.checks.find((c) => c.name === "conntrack table")!;
    expect(ct.advisory).toBe(true);
    expect(ct.found).toContain("0 entries with 40 TCP connection(s) open");
    expect(v.short).toEqual([]);
    expect(hostWarnings(100_000, 8, f)).toEqual([]);
    // Nothing open to tell by: the table may still track, so it counts.
    expect(assess({ devices: 100_000, workers: "auto", destinations: 8, sources: 0 }, { ...f, tcpEstablished: 0 }).short.map((c) => c.name)).toEqual(["conntrack table"]);
  });

  test("source addresses: one port range each", () => {
    const v = assess({ devices: 100_000, workers: "auto", destinations: 1, sources: 2 }, ROOMY);
    const ports = v.checks.find((c) => c.name === "ephemeral ports")!;
    expect(ports.holds).toBe(2 * 64_512);
    expect(v.checks.find((c) => c.name === "port search")?.advisory).toBe(true);
  });
});

describe("the conntrack probe, on this machine", () => {
  // A fresh load machine often has conntrack loaded, nothing tracked and no connection open
  // (this project's machine held 358,000 devices past a 262,144-entry table that stayed empty).
  test.skipIf(readHostFacts().conntrackMax === null)("conntrack's empty table is read with a connection open, so it tells what it bounds", async () => {
    const f = await probeHostFacts();
    // Entries, or a connection open while the table was read: either way the check can tell.
    expect((f.conntrackUsed ?? 0) > 0 || (f.tcpEstablished ?? 0) > 0).toBe(true);
    const ct = assess({ devices: 10_000_000, workers: "auto", destinations: 200, sources: 0 }, f).checks.find((c) => c.name === "conntrack table")!;
    if (f.conntrackUsed === 0) expect(ct.advisory).toBe(true);
    else expect(ct.holds).toBe(f.conntrackMax! - f.conntrackUsed!);
    if (f.probed) expect(ct.found).toContain("a loopback connection of cicada's own open");
  });

  // A namespace of its own has its loopback down: the probe cannot listen, and the facts stand as read.
  test.skipIf(readHostFacts().conntrackMax === null)("without a loopback to probe on, the facts are read as they are, not an error", async () => {
    const why = await netnsUnavailable();
    if (why) return console.warn(`skipped: network namespaces cannot be made here (${why})`);
    const ns = `cicada-doctor-${process.pid}`;
    expect((await sh(["ip", "netns", "add", ns])).code).toBe(0);
    try {
      const r = await sh(["ip", "netns", "exec", ns, process.execPath, "-e", `import { probeHostFacts } from ${JSON.stringify(DOCTOR)}; console.log(JSON.stringify(await probeHostFacts()))`]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const f = JSON.parse(r.stdout) as HostFacts;
      expect(f.probed).toBeUndefined();
      expect(f.conntrackMax).not.toBeNull();
    } finally {
      await sh(["ip", "netns", "del", ns]);
    }
  });
});

/** Two certificate directories of different CAs under `root`: the brokers' (`cert`, 2 devices) and a stranger's (`other`, 1). */
async function twoCas(root: string): Promise<{ certDir: string; otherDir: string }> {
  const certDir = join(root, "cert");
  const otherDir = join(root, "other");
  await makeCerts(certDir, 2);
  await makeCerts(otherDir, 1);
  return { certDir, otherDir };
}

describe.skipIf(!HAVE_MOSQUITTO)("cicada doctor on this machine", () => {
  test("a broker whose certificate verifies, one that does not, one that is not there; exit codes", async () => {
    using tmp = tempDir();
    const { certDir, otherDir } = await twoCas(tmp.path);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const dead = await freePort();

    const ok = await cicada(["doctor", "--devices", "100", "--brokers", `127.0.0.1:${broker.port}`, "--certs", certDir]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`\\[ok +\\] 127\\.0\\.0\\.1:${broker.port}: the broker's certificate verifies against the CA \\(TCP [\\d.]+ ms, TLS [\\d.]+ ms, TLSv1\\.3 X25519\\); CN=127\\.0\\.0\\.1`));
    expect(ok.stdout).toContain("Verdict: 100 devices fit: this machine can hold ~");

    // The same broker seen with another CA's directory, and a port nothing listens on.
    const bad = await cicada(["doctor", "--brokers", `127.0.0.1:${broker.port},127.0.0.1:${dead}`, "--certs", otherDir]);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toContain(`[FAIL ] 127.0.0.1:${broker.port}: the broker's certificate does not verify against the CA`);
    expect(bad.stdout).toContain(`[FAIL ] 127.0.0.1:${dead}: cannot connect: ECONNREFUSED`);
    expect(bad.stdout).toContain("a broker did not answer as it should");

    // --tls-version: the broker picks 1.2 when offered only that; one of TLS 1.3 only refuses it.
    await using only13 = await startBroker({ certDir, stateDir: tmp.path, listenerExtra: ["tls_version tlsv1.3"] });
    const v12 = await cicada(["doctor", "--brokers", `127.0.0.1:${broker.port},127.0.0.1:${only13.port}`, "--certs", certDir, "--tls-version", "1.2"]);
    expect(v12.code).toBe(2);
    expect(v12.stdout).toMatch(new RegExp(`\\[ok +\\] 127\\.0\\.0\\.1:${broker.port}: the broker's certificate verifies against the CA \\(TCP [\\d.]+ ms, TLS [\\d.]+ ms, TLSv1\\.2 X25519\\)`));
    expect(v12.stdout).toContain(`[FAIL ] 127.0.0.1:${only13.port}: TLS handshake failed`);

    // --tls-groups: the group the broker settled on; the post-quantum hybrid alone finds none in its OpenSSL 3.
    const p256 = await cicada(["doctor", "--brokers", `127.0.0.1:${broker.port}`, "--certs", certDir, "--tls-groups", "P-256"]);
    expect(p256.code).toBe(0);
    expect(p256.stdout).toMatch(/ms, TLSv1\.3 prime256v1\)/);
    const pq = await cicada(["doctor", "--brokers", `127.0.0.1:${broker.port}`, "--certs", certDir, "--tls-groups", "X25519MLKEM768"]);
    expect(pq.code).toBe(2);
    expect(pq.stdout).toContain(`[FAIL ] 127.0.0.1:${broker.port}: TLS handshake failed`);
    expect(readFileSync(broker.log, "utf8")).toContain("no suitable key share");
  }, 30_000);

  test("--tls-stack cicada: each broker dialled with cicada's own TLS; one without a TLS 1.3 suite it offers fails", async () => {
    using tmp = tempDir();
    const { certDir, otherDir } = await twoCas(tmp.path);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using noSuite = await startBroker({ certDir, stateDir: tmp.path, listenerExtra: ["ciphers_tls1.3 TLS_AES_128_CCM_8_SHA256"] });
    const ok = await cicada(["doctor", "--devices", "100", "--brokers", `127.0.0.1:${broker.port}`, "--certs", certDir, "--tls-stack", "cicada", "--tls-groups", "P-256"]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`\\[ok +\\] 127\\.0\\.0\\.1:${broker.port}: the broker's certificate verifies against the CA \\(TCP [\\d.]+ ms, TLS [\\d.]+ ms, TLSv1\\.3 P-256\\); CN=127\\.0\\.0\\.1`));
    expect(ok.stdout).toContain("KB in cicada with its own TLS");
    const bad = await cicada(["doctor", "--brokers", `127.0.0.1:${noSuite.port},127.0.0.1:${broker.port}`, "--certs", otherDir, "--tls-stack", "cicada"]);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toContain(`[FAIL ] 127.0.0.1:${noSuite.port}: TLS handshake failed: tls_alert_handshake_failure`);
    // Another CA's directory: the broker's chain (its certificate and its CA, as mosquitto sends
    // them) ends in a root that directory does not trust, in OpenSSL's words; checked as the
    // handshake ends, before the broker's own verdict on the device.
    expect(bad.stdout).toContain(`[FAIL ] 127.0.0.1:${broker.port}: the broker's certificate does not verify against the CA: self_signed_cert_in_chain`);
  }, 30_000);

  test("the open-file limit of the shell that starts it: short, with the ulimit that lifts it; the verdict names it", async () => {
    const r = await sh(["bash", "-c", `ulimit -n 600 && exec ${process.execPath} ${MAIN} doctor --devices 5000 --workers 2`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain("[SHORT] open files per process: soft 600, hard 600");
    expect(r.stdout).toContain("ulimit -n 1048576");
    expect(r.stdout).toContain("Verdict: 5,000 devices do NOT fit: this machine can hold ~1,000 mTLS devices; the limit is open files per process.");
  });

  test("bad flags: every problem, exit 2", async () => {
    const r = await cicada(["doctor", "--devices", "lots", "--brokers", "127.0.0.1", "--workers", "0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--devices must be a whole number");
    expect(r.stderr).toContain("--brokers must be HOST:PORT");
    expect(r.stderr).toContain("--workers must be a whole number");
  });
});
