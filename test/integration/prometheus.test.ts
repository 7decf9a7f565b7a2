/**
 * /metrics scraped by a real Prometheus (Debian's package) while `cicada run --metrics` drives
 * mTLS devices against mosquitto, then read back through Prometheus' HTTP API: every expression
 * of the shipped Grafana dashboard answers, and Prometheus' figures agree with the run's report.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { freePort, startPrometheus } from "../../scripts/lib/testbed.ts";
import { BUCKETS_S } from "../../src/api/metrics.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, issuedIdentity, startBroker } from "../helpers/testbed.ts";
import { cicada, tempDir } from "../helpers/tmp.ts";

/** Polls `check` until it holds. */
async function waitFor(check: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; !(await check()); await Bun.sleep(200)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

const HAVE_PROMETHEUS = Bun.which("prometheus") !== null;
if (!HAVE_PROMETHEUS) console.warn("skipping Prometheus tests: prometheus is not installed (apt-get install prometheus)");

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_PROMETHEUS)("a real Prometheus scraping cicada run --metrics", () => {
  test("every Grafana panel's query answers; counters and the p99 agree with the report", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 200);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const metricsPort = await freePort();
    const token = "0123456789abcdef0123";
    await using prom = await startPrometheus({ stateDir: tmp.path, targets: [`127.0.0.1:${metricsPort}`], intervalS: 1, token });
    // Half the devices dial a second broker that takes 30 connections and closes the rest at once:
    // failures by reason for the failures panel. The verifying consumer, first in, holds one. Its
    // ACL acks the devices' telemetry and drops it (MQTT 3.1.1): lost messages for integrity.
    await using full = await startBroker({ certDir, stateDir: tmp.path, maxConnections: 30, devicePublishPattern: "%u/elsewhere" });
    const report = join(tmp.path, "run.json");
    // Prometheus takes up to 5 s to start scraping a new target: the run starts once it has tried this one (it is still down).
    await waitFor(async () => {
      const t = (await (await fetch(`${prom.url}/api/v1/targets`)).json()) as { data: { activeTargets: { lastScrape: string }[] } };
      return t.data.activeTargets.some((a) => !a.lastScrape.startsWith("0001"));
    }, "Prometheus to scrape the target once");
    // The verifying consumer (its own certificate) feeds the integrity families.
    const id = issuedIdentity(certDir);
    writeFileSync(join(tmp.path, "verify.crt"), id.cert);
    writeFileSync(join(tmp.path, "verify.key"), id.key);
    const started = Date.now() / 1000;
    const r = await cicada([
      "run", "--certs", certDir, "--port", `${broker.port},${full.port}`, "--users", "200", "--rate", "200", "--duration", "8s", "--interval", "300ms..600ms", "--reconnect-min", "0.5", "--reconnect-max", "1",
      "--verify", "--verify-cert", join(tmp.path, "verify.crt"), "--verify-key", join(tmp.path, "verify.key"),
      "--metrics", `127.0.0.1:${metricsPort}`, "--token", token, "--report", report,
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`metrics on http://127.0.0.1:${metricsPort}/metrics`);
    const rep = JSON.parse(readFileSync(report, "utf8")) as {
      ended: string;
      stats: Record<string, { count: number; p99_ms: number; latency_count: number }>;
      errors: Record<string, Record<string, number>>;
      integrity: { published: number; lost: number; duplicated: number; reordered: number };
    };
    const ended = Date.parse(rep.ended) / 1000;

    const query = async (expr: string, time: number): Promise<Sample[]> => {
      const res = await fetch(`${prom.url}/api/v1/query?${new URLSearchParams({ query: expr, time: String(time) })}`);
      const body = (await res.json()) as { status: string; data: { resultType: string; result: Sample[] }; error?: string };
      if (body.status !== "success") throw new Error(`${expr}: ${body.error}`);
      expect(body.data.resultType).toBe("vector");
      return body.data.result;
    };

    // Every target of every panel, with the dashboard's datasource variable (the only one) left to Grafana: no series is empty in the run.
    const dash = JSON.parse(readFileSync(join(import.meta.dir, "../../src/ui/grafana-dashboard.json"), "utf8")) as { panels: { title: string; targets: { expr: string }[] }[] };
    const empty: string[] = [];
    for (const p of dash.panels) for (const t of p.targets) if ((await query(t.expr, ended - 1)).length === 0) empty.push(`${p.title}: ${t.expr}`);
    expect(empty).toEqual([]);
    // The panels' `or vector(0)` fallbacks aside, the families behind them were there.
    for (const name of ["cicada_undelivered_messages", "cicada_duplicated_total", "cicada_reordered_total"]) expect({ name, n: (await query(name, ended - 1)).length }).toEqual({ name, n: 1 });
    // Each process running devices (one per worker) is labelled with its machine (this host, in a
    // run of one machine), holds its devices and has file descriptors to spare.
    const slots = await query("cicada_process_devices_connected", ended - 1);
    expect(slots.length).toBeGreaterThan(0);
    for (const name of ["cicada_process_open_fds", "cicada_process_max_fds - cicada_process_open_fds", "cicada_process_resident_memory_bytes"]) {
      const series = await query(name, ended - 1);
      expect(series.map((x) => [x.metric.machine, Number(x.value[1]) > 0])).toEqual(slots.map(() => [hostname(), true]));
    }
    const held = slots.reduce((a, x) => a + Number(x.value[1]), 0);
    expect(held).toBe(Number((await query("sum(cicada_devices_connected)", ended - 1))[0]!.value[1]));

    // The final counters, scraped while the run's metrics stayed up after its report: equal to the report's.
    const after = ended + 3;
    for (const row of ["connect", "publish", "subscribe", "disconnect"]) {
      const [s] = await query(`cicada_requests_total{row="${row}"}`, after);
      expect({ row, n: Number(s!.value[1]) }).toEqual({ row, n: rep.stats[row]!.count });
    }
    // increase() over the whole run: the first scrape saw the counters at 0, before the first
    // publish, and the last the final count. Prometheus extrapolates from the first and last
    // samples toward the window's edges by up to half an average interval each, at the run's mean
    // rate: so it may differ from the report by one scrape interval's (1 s) worth of publishes.
    const publishes = rep.stats.publish!.count;
    const [inc] = await query(`increase(cicada_requests_total{row="publish"}[${Math.ceil(after - started + 5)}s])`, after);
    expect(Math.abs(Number(inc!.value[1]) - publishes)).toBeLessThanOrEqual(publishes / (ended - started) + 1);
    const failures = await query("cicada_failures_total", after);
    const byReason: Record<string, Record<string, number>> = {};
    for (const f of failures) (byReason[f.metric.row!] ??= {})[f.metric.reason!] = Number(f.value[1]);
    expect(byReason).toEqual(rep.errors);
    // Integrity: what the verifying consumer counted, equal to the report's.
    const integrity = async (expr: string) => Number((await query(expr, after))[0]!.value[1]);
    expect(await integrity("cicada_published_total")).toBe(rep.integrity.published);
    expect(await integrity("cicada_undelivered_messages")).toBe(rep.integrity.lost);
    expect(await integrity("cicada_duplicated_total")).toBe(rep.integrity.duplicated);
    expect(await integrity("cicada_reordered_total")).toBe(rep.integrity.reordered);
    expect(rep.integrity.published).toBeGreaterThan(100);
    expect(rep.integrity.lost).toBeGreaterThan(0);
    expect(Object.keys(rep.errors.connect ?? {}).length).toBeGreaterThan(0);

    // histogram_quantile over the buckets falls in the bucket that holds the report's exact p99:
    // the tolerance is that bucket's width (BUCKETS_S), as Prometheus interpolates within it.
    const [q] = await query('histogram_quantile(0.99, sum by (le) (cicada_latency_seconds_bucket{row="publish"}))', after);
    const p99 = rep.stats.publish!.p99_ms / 1000;
    const hi = BUCKETS_S.find((b) => b >= p99)!;
    const lo = [...BUCKETS_S].reverse().find((b) => b < hi) ?? 0;
    expect(Number(q!.value[1])).toBeGreaterThanOrEqual(lo);
    expect(Number(q!.value[1])).toBeLessThanOrEqual(hi);
  }, 90_000);
});
