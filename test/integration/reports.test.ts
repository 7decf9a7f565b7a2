/** `--report` in its three formats and `--threshold` for CI, on a real run against mosquitto. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, startBroker } from "../helpers/testbed.ts";
import { cicada, tempDir } from "../helpers/tmp.ts";

describe.skipIf(!HAVE_MOSQUITTO)("reports and thresholds", () => {
  test("run.html, run.csv; a broken threshold exits 3 naming it and its value, kept ones exit 0", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 20);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const run = (report: string, thresholds: string[]) =>
      cicada(["run", "--certs", certDir, "--port", String(broker.port), "--users", "20", "--rate", "100", "--duration", "4s", "--interval", "300ms..500ms", "--workers", "1", "--report", join(tmp.path, report), ...thresholds.flatMap((t) => ["--threshold", t])]);

    const broken = await run("run.html", ["connect.count>=20", "publish.p99_ms<0.001", "connect.failure_rate<0.01", "health.late_sends==0"]);
    expect(broken.code).toBe(3);
    expect(broken.stdout).toContain("Thresholds broken (1 of 4):");
    expect(broken.stdout).toMatch(/ {2}publish\.p99_ms<0\.001 {2}\(was \d+(\.\d+)?\)/);
    expect(broken.stdout).not.toContain("connect.count>=20  (was");
    const html = readFileSync(join(tmp.path, "run.html"), "utf8");
    expect(html).toStartWith("<!doctype html>");
    expect(html).toContain("<td>connect</td><td>20</td><td>0</td>");
    // Self-contained: the chart library and the timeline are inside the page.
    expect(html).toContain("uPlot");
    expect(html).toMatch(/update\(\[\{"t":/);
    expect(html).not.toMatch(/<script src=/);

    const kept = await run("run.csv", ["connect.count==20", "publish.failure_rate<0.01"]);
    expect(kept.code).toBe(0);
    expect(kept.stdout).toContain("Thresholds: all 2 held.");
    const csv = readFileSync(join(tmp.path, "run.csv"), "utf8").split("\n");
    expect(csv[0]).toBe("Name,Request Count,Failure Count,Min (ms),Median (ms),95% (ms),99% (ms),Max (ms),Average (ms),Requests/s");
    expect(csv[1]).toStartWith("connect,20,0,");
    expect(Number(csv.find((l) => l.startsWith("publish,"))!.split(",")[1])).toBeGreaterThan(20);
  }, 60_000);

  test("bad thresholds and report names are bad input, listed together", async () => {
    const r = await cicada(["run", "--threshold", "publish.p99<5", "--threshold", "nope.count>1", "--threshold", "p99 below 5", "--report", "run.txt", "--ui", "0.0.0.0:8089"]);
    expect(r.code).toBe(2);
    for (const s of ['"publish.p99<5": a row has', 'no row "nope"', "is not ROW.METRIC<OP>NUMBER", "--report must end in .json, .csv or .html", "--ui 0.0.0.0:8089 is reachable beyond this machine: give --token"]) {
      expect(r.stderr).toContain(s);
    }
    // A guessable token is refused, and not echoed: it is a secret.
    const weak = await cicada(["run", "--ui", "127.0.0.1:0", "--token", "hunter2"]);
    expect(weak.code).toBe(2);
    expect(weak.stderr).toContain("--token must be at least 16 characters (got 7)");
    expect(weak.stderr).not.toContain("hunter2");
  });
});
