/** The end of a run: a report that is never lost, a second Ctrl-C that still writes it, thresholds for API runs too. */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createApp } from "../../src/api/app.ts";
import { RunManager } from "../../src/api/manager.ts";
import { FakeBroker, waitFor } from "../helpers/broker.ts";
import { cicada, spawnCicada, tempDir } from "../helpers/tmp.ts";

const json = (body: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

describe("the end of a run", () => {
  test("a second Ctrl-C stops at once and still writes the report; what was in flight is unacked_at_stop", async () => {
    using tmp = tempDir();
    using broker = new FakeBroker({ kind: "no-acks" });
    const report = join(tmp.path, "r.json");
    const run = spawnCicada(["run", "--no-tls", "--certs", join(tmp.path, "none"), "--port", String(broker.port), "--users", "4", "--workers", "1", "--interval", "50ms", "--drain", "60s", "--ack-timeout", "60s", "--duration", "60s", "--report", report]);
    await waitFor(() => broker.count("publish") >= 20, "20 publishes");
    run.proc.kill("SIGINT");
    await waitFor(() => run.out.err.includes("interrupted"), "the first Ctrl-C to be taken");
    const t0 = performance.now();
    run.proc.kill("SIGINT");
    expect(await run.proc.exited).toBe(130);
    // Not the 60 s drain.
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(run.out.err).toContain("stopping now, without waiting for acks");
    const rep = JSON.parse(readFileSync(report, "utf8"));
    expect(rep.errors.publish.unacked_at_stop).toBeGreaterThan(0);
    expect(rep.publishes.sent).toBe(rep.publishes.acked + rep.publishes.failed + rep.publishes.in_flight);
    expect(rep.publishes.in_flight).toBe(0);
  }, 30_000);

  test("a report that cannot be written where asked goes to the working directory, is said, and the run fails; no .tmp debris", async () => {
    using tmp = tempDir();
    using broker = new FakeBroker();
    const out = join(tmp.path, "out");
    mkdirSync(out);
    const run = spawnCicada(["run", "--no-tls", "--certs", join(tmp.path, "none"), "--port", String(broker.port), "--users", "2", "--workers", "1", "--interval", "100ms", "--duration", "2s", "--report", join(out, "r.json")], {}, tmp.path);
    await waitFor(() => broker.count("publish") >= 2, "publishes");
    // The report's directory is replaced by a file before the run ends.
    rmSync(out, { recursive: true });
    writeFileSync(out, "in the way\n");
    expect(await run.proc.exited).toBe(1);
    const fallback = /wrote it to (\S+cicada-report-\S+\.json) instead/.exec(run.out.err)?.[1];
    expect(fallback?.startsWith(`${tmp.path}/cicada-report-`)).toBe(true);
    expect(JSON.parse(readFileSync(fallback!, "utf8")).stats.connect.count).toBe(2);
    expect(readdirSync(tmp.path).filter((n) => n.includes(".tmp"))).toEqual([]);
  }, 30_000);

  test("--report that cannot be written is bad input before the run", async () => {
    using tmp = tempDir();
    writeFileSync(join(tmp.path, "file"), "");
    const r = await cicada(["run", "--no-tls", "--report", join(tmp.path, "file", "r.json")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--report cannot be written: ${join(tmp.path, "file")} is not a directory`);
  });

  test("runs started through the API honour --threshold: the report carries the verdict", async () => {
    using tmp = tempDir();
    using broker = new FakeBroker();
    const history = join(tmp.path, "runs");
    const app = createApp(new RunManager(["--no-tls", "--certs", join(tmp.path, "none"), "--port", String(broker.port), "--workers", "1", "--interval", "100ms", "--threshold", "connect.count>=3", "--threshold", "publish.failures==0"], history, () => {}));
    expect((await app.request("/api/runs", json({ users: 2, duration: "1m" }))).status).toBe(201);
    await waitFor(() => broker.count("publish") >= 4, "publishes");
    const stopped = (await (await app.request("/api/runs/current/stop", json({}))).json()) as { report: { thresholds: { passed: boolean; held: string[]; broken: { expr: string; actual: number }[] } } };
    expect(stopped.report.thresholds).toEqual({ passed: false, held: ["publish.failures==0"], broken: [{ expr: "connect.count>=3", actual: 2 }] });
    // The history's status of the run says it too.
    const runs = (await (await app.request("/api/runs")).json()) as { passed: boolean | null }[];
    expect(runs.map((r) => r.passed)).toEqual([false]);
    expect(existsSync(history)).toBe(true);
  }, 30_000);
});
