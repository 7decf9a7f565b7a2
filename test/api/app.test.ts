/**
 * The control API: through app.request() for validation, tokens and the OpenAPI document, and
 * over a real socket (`cicada run --ui`) driving a real run against mosquitto, with /metrics
 * parsed by a Prometheus text-format parser and checked against the JSON stats.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import parsePrometheus from "parse-prometheus-text-format";
import { createApp } from "../../src/api/app.ts";
import { RunManager } from "../../src/api/manager.ts";
import { startArgv } from "../../src/api/start.ts";
import { RUN_SPEC } from "../../src/config/run.ts";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, startBroker } from "../helpers/testbed.ts";
import { tempDir } from "../helpers/tmp.ts";
import { startUi } from "../helpers/ui.ts";

const post = (body: unknown, headers: Record<string, string> = {}) => ({ method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

describe("control API (app.request)", () => {
  test("a bad start lists every problem: the body's, then the run settings' (as cicada run reports them)", async () => {
    using tmp = tempDir();
    const app = createApp(new RunManager(["--certs", join(tmp.path, "none")], join(tmp.path, "runs"), () => {}));
    const shape = await app.request("/api/runs", post({ users: 0, rate: "fast", colour: "red" }));
    expect(shape.status).toBe(400);
    const a = (await shape.json()) as { errors: string[] };
    expect(a.errors.length).toBe(3);
    expect(a.errors.join("\n")).toContain("users");
    expect(a.errors.join("\n")).toContain("rate");
    expect(a.errors.join("\n")).toContain("colour");
    const settings = await app.request("/api/runs", post({ users: 10, port: "70000", duration: "soon", interval: "0s" }));
    expect(settings.status).toBe(400);
    const b = (await settings.json()) as { errors: string[] };
    for (const s of ["--port must list ports", "--duration must be", "--interval must be"]) expect(b.errors.some((e) => e.startsWith(s))).toBe(true);
    // Settings right, but the certificates are missing: still the caller's to fix, and said so.
    const certs = await app.request("/api/runs", post({ users: 10, tls: true }));
    expect(certs.status).toBe(400);
    expect(((await certs.json()) as { errors: string[] }).errors[0]).toContain("cannot read CA certificate");
    expect((await app.request("/api/runs/current/stop", post({}))).status).toBe(409);
    expect((await app.request("/api/runs/nope")).status).toBe(404);
  });

  test("with a token, every API call needs it; the page and its assets do not carry data", async () => {
    using tmp = tempDir();
    const app = createApp(new RunManager([], join(tmp.path, "runs"), () => {}), { token: "t0ken" });
    expect((await app.request("/api/status")).status).toBe(401);
    expect((await app.request("/api/status", { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    expect((await app.request("/metrics")).status).toBe(401);
    expect((await app.request("/api/runs", post({ users: 1 }))).status).toBe(401);
    const ok = await app.request("/api/status", { headers: { authorization: "Bearer t0ken" } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { state: string }).state).toBe("idle");
    const page = await app.request("/");
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<form id="start">');
    expect((await app.request("/assets/uplot.js")).status).toBe(200);
  });

  test("a page elsewhere cannot drive the API: Host, Origin and Content-Type are checked before any route", async () => {
    using tmp = tempDir();
    // Certificates missing: a start that got through would answer 400 for them, not for the request's form.
    const app = createApp(new RunManager(["--certs", join(tmp.path, "none"), "--no-tls"], join(tmp.path, "runs"), () => {}), { allowHosts: ["cicada.lab"] });
    const at = (host: string) => ({ host });
    // DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends Host: evil.example.
    const rebound = await app.request("http://evil.example:8089/api/status", { headers: at("evil.example:8089") });
    expect(rebound.status).toBe(403);
    expect(((await rebound.json()) as { errors: string[] }).errors[0]).toContain("Host evil.example:8089 is not this server");
    expect((await app.request("/api/runs", post({ users: 1 }, at("evil.example")))).status).toBe(403);
    for (const host of ["127.0.0.1:8089", "[::1]:8089", "localhost:8089", "cicada.lab:443"]) expect((await app.request("/api/status", { headers: at(host) })).status).toBe(200);
    // A cross-site page: its Origin is not ours (a form or fetch from elsewhere), or Fetch Metadata says so.
    const cross = await app.request("/api/runs/current/stop", post({}, { host: "127.0.0.1:8089", origin: "http://evil.example" }));
    expect(cross.status).toBe(403);
    expect((await app.request("/api/runs/current/stop", post({}, { host: "127.0.0.1:8089", origin: "null" }))).status).toBe(403);
    expect((await app.request("/api/runs/current/stop", post({}, { host: "127.0.0.1:8089", "sec-fetch-site": "cross-site" }))).status).toBe(403);
    // The dashboard's own page: same origin, passes (and no run is going).
    expect((await app.request("/api/runs/current/stop", post({}, { host: "127.0.0.1:8089", origin: "http://127.0.0.1:8089" }))).status).toBe(409);
    // A simple cross-site request (no preflight) can only be form-encoded or text/plain: refused, nothing starts.
    const form = await app.request("/api/runs", { method: "POST", headers: { "content-type": "text/plain" }, body: '{"users":1}' });
    expect(form.status).toBe(400);
    expect(((await form.json()) as { errors: string[] }).errors[0]).toContain("Content-Type: application/json");
    expect((await app.request("/api/runs/current/reset-stats", { method: "POST" })).status).toBe(400);
    // No body, or a body that is not JSON: 400 with the reason, never a 500 or a run with defaults.
    for (const body of [undefined, "{nope", "[1,"]) {
      const r = await app.request("/api/runs", { method: "POST", headers: { "content-type": "application/json" }, body });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { errors: string[] }).errors[0]).toContain("not valid JSON");
    }
    expect((await app.request("/api/runs/current", { method: "PATCH", headers: { "content-type": "application/json" }, body: "{" })).status).toBe(400);
    expect(((await (await app.request("/api/status")).json()) as { state: string }).state).toBe("idle");
  });

  test("the bearer scheme is case-insensitive; the token must match exactly", async () => {
    using tmp = tempDir();
    const token = "0123456789abcdef";
    const app = createApp(new RunManager([], join(tmp.path, "runs"), () => {}), { token });
    for (const scheme of ["Bearer", "bearer", "BEARER"]) expect((await app.request("/api/status", { headers: { authorization: `${scheme} ${token}` } })).status).toBe(200);
    for (const wrong of [`Bearer ${token}x`, `Bearer ${token.slice(1)}`, `Basic ${token}`, token]) expect((await app.request("/api/status", { headers: { authorization: wrong } })).status).toBe(401);
  });

  test("the OpenAPI document describes every route", async () => {
    using tmp = tempDir();
    const app = createApp(new RunManager([], join(tmp.path, "runs"), () => {}));
    const doc = (await (await app.request("/openapi.json")).json()) as { openapi: string; paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, unknown> } };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths).sort()).toEqual(
      ["/api/runs", "/api/runs/current", "/api/runs/current/reset-stats", "/api/runs/current/stop", "/api/runs/{id}", "/api/runs/{id}/report/{format}", "/api/status", "/metrics"].sort(),
    );
    expect(Object.keys(doc.paths["/api/runs"]!).sort()).toEqual(["get", "post"]);
    expect(doc.components.schemas.StartRun).toBeDefined();
  });
});

describe.skipIf(!HAVE_MOSQUITTO)("control API over a real socket", () => {
  test("a run started by scenario name, found only in the server's --scenarios: its custom rows in /metrics and the report", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 5);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const dir = join(tmp.path, "scenarios");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "pinger.ts"),
      `import { defineScenario } from "cicada/scenario";
export default defineScenario({ name: "pinger", every: [{ interval: "200ms", run(d) { d.publish(d.clientId + "/attrs", { n: d.seq() }); d.measure("ping", 1); } }] });
`,
    );
    // A scenario elsewhere on the machine, which no request may name.
    writeFileSync(join(tmp.path, "elsewhere.ts"), readFileSync(join(dir, "pinger.ts")));
    await using ui = await startUi(["--certs", certDir, "--port", String(broker.port), "--history", join(tmp.path, "runs"), "--scenarios", dir]);
    const api = (path: string, init?: RequestInit) => fetch(`${ui.url}${path}`, init);
    for (const bad of ["../elsewhere", join(tmp.path, "elsewhere.ts"), "pinger.ts"]) expect((await api("/api/runs", post({ users: 5, scenario: bad }))).status).toBe(400);
    const missing = await api("/api/runs", post({ users: 5, scenario: "elsewhere" }));
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { errors: string[] }).errors[0]).toContain(`no elsewhere.ts in ${dir}`);

    const started = await api("/api/runs", post({ users: 5, duration: "3s", scenario: "pinger" }));
    expect(started.status).toBe(201);
    const { id } = (await started.json()) as { id: string };
    // The scenario decides how often its devices publish: a message rate for them is refused, said why.
    const rate = await api("/api/runs/current", { method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ msg_rate: 100 }) });
    expect(rate.status).toBe(400);
    expect(((await rate.json()) as { errors: string[] }).errors[0]).toContain("scenario (pinger) decides");
    await ui.waitFor(async () => /cicada_requests_total\{row="ping"\} [1-9]/.test(await (await api("/metrics")).text()));
    await ui.waitFor(async () => ((await (await api(`/api/runs/${id}`)).json()) as { state: string }).state === "finished");
    const { report } = (await (await api(`/api/runs/${id}`)).json()) as { report: { config: { scenario: string }; stats: Record<string, { count: number }> } };
    expect(report.config.scenario).toBe("pinger");
    expect(report.stats.ping!.count).toBeGreaterThan(20);
    expect(report.stats.publish!.count).toBe(report.stats.ping!.count);
  }, 60_000);

  test("start, change users live, stop; /metrics agrees with the JSON stats; the run is kept on disk", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 60);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const history = join(tmp.path, "runs");
    await using ui = await startUi(["--certs", certDir, "--port", String(broker.port), "--history", history, "--interval", "300ms..500ms", "--workers", "2"]);
    const api = (path: string, init?: RequestInit) => fetch(`${ui.url}${path}`, init);

    const started = await api("/api/runs", post({ users: 40, rate: 200, duration: "1m", label: "api test" }));
    expect(started.status).toBe(201);
    const run = (await started.json()) as { id: string };
    expect((await api("/api/runs", post({ users: 1 }))).status).toBe(409);
    await ui.waitFor(async () => ((await (await api("/api/status")).json()) as { current: { report: { users: { connected: number } } } }).current.report.users.connected === 40);
    const patch = (body: unknown) => api("/api/runs/current", { method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    // More devices than identities: refused as a start would be, and nothing changes.
    const tooMany = await patch({ users: 61 });
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as { errors: string[] }).errors[0]).toContain("at most 60");
    expect((await patch({ users: 60 })).status).toBe(200);
    await ui.waitFor(async () => ((await (await api("/api/status")).json()) as { current: { report: { users: { connected: number } } } }).current.report.users.connected === 60);
    await Bun.sleep(1500);
    const stopped = await api("/api/runs/current/stop", post({}));
    expect(stopped.status).toBe(200);
    const final = ((await stopped.json()) as { state: string; report: { stats: Record<string, { count: number; failures: number; latency_count: number; p50_ms: number }> } });
    expect(final.state).toBe("finished");
    expect(final.report.stats.connect!.count).toBe(60);
    expect(final.report.stats.publish!.count).toBeGreaterThan(60);

    // The final counters stay scrapeable, and agree with the report exactly.
    const text = await (await api("/metrics")).text();
    const families = parsePrometheus(text);
    const family = (name: string) => families.find((f) => f.name === name)!;
    expect(family("cicada_run_active").metrics[0]!.value).toBe("0");
    expect(family("cicada_latency_seconds").type).toBe("HISTOGRAM");
    /** One row's histogram on its own: the parser folds labelled histograms of a family into one, so each row is parsed apart (label dropped). */
    const histogramOf = (row: string) => {
      const lines = text.split("\n").filter((l) => l.startsWith("# HELP cicada_latency_seconds") || l.startsWith("# TYPE cicada_latency_seconds") || (l.startsWith("cicada_latency_seconds") && l.includes(`{row="${row}"`)));
      return parsePrometheus(lines.map((l) => l.replace(`row="${row}",`, "").replace(`{row="${row}"}`, "")).join("\n") + "\n")[0]!.metrics[0]!;
    };
    for (const row of ["connect", "subscribe", "publish", "disconnect"]) {
      const s = final.report.stats[row]!;
      expect(Number(family("cicada_requests_total").metrics.find((m) => m.labels?.row === row)!.value)).toBe(s.count);
      const h = histogramOf(row);
      expect(Number(h.count)).toBe(s.latency_count);
      expect(Number(h.buckets!["+Inf"] ?? h.count)).toBe(s.latency_count);
      if (s.latency_count) {
        // The median sits in the first bucket holding half the samples.
        const le = Object.entries(h.buckets!).map(([b, n]) => [Number(b), Number(n)] as const).sort((x, y) => x[0] - y[0]);
        const first = le.find(([, n]) => n >= s.latency_count / 2)!;
        expect(s.p50_ms / 1000).toBeLessThanOrEqual(first[0] * 1.001);
      }
    }

    // Each connection phase's histogram counts what the report's phases count.
    const phases = (final.report as unknown as { phases: Record<string, { count: number }> }).phases;
    for (const phase of ["tcp_connect", "tls_handshake", "connack", "suback", "puback"]) {
      expect(Number(new RegExp(`cicada_phase_seconds_count\\{phase="${phase}"\\} (\\d+)`).exec(text)?.[1])).toBe(phases[phase]!.count);
    }
    expect(phases.connack!.count).toBe(60);

    // Kept on disk: a list entry, the run by id, and its reports.
    expect(readdirSync(history)).toEqual([`${run.id}.json`]);
    expect(JSON.parse(readFileSync(join(history, `${run.id}.json`), "utf8")).state).toBe("finished");
    const list = (await (await api("/api/runs")).json()) as { id: string; label: string; users: number }[];
    expect(list.map((r) => [r.id, r.label, r.users])).toEqual([[run.id, "api test", 60]]);
    const csv = await (await api(`/api/runs/${run.id}/report/csv`)).text();
    expect(csv.split("\n")[0]).toStartWith("Name,Request Count,Failure Count");
    expect(csv).toContain(`connect,60,0,`);
    const html = await api(`/api/runs/${run.id}/report/html`);
    expect(html.headers.get("content-type")).toContain("text/html");
    expect(await html.text()).toContain("<h2>Statistics (ms)</h2>");
  }, 60_000);
});

test("every field of a start request sets its cicada run flag; the label sets none", () => {
  expect(
    startArgv({ users: 5, rate: 2.5, host: "h", port: 1883, duration: "1m", qos: 0, interval: "1s", mqtt: "5", payload_size: 64, tenant: "t", tls: false, tls_version: "1.2", tls_groups: "P-256:X25519", max_connecting: 50, insecure: true, reset_stats: false, label: "x" }),
  ).toEqual([
    "--users", "5", "--rate", "2.5", "--host", "h", "--port", "1883", "--duration", "1m", "--qos", "0", "--interval", "1s", "--mqtt", "5", "--payload-size", "64", "--tenant", "t",
    "--no-tls", "--tls-version", "1.2", "--tls-groups", "P-256:X25519", "--max-connecting", "50", "--insecure", "--reset-stats=false",
  ]);
  // Each flag the table names is one `cicada run` knows.
  for (const a of startArgv({ users: 1, rate: 1, host: "h", port: 1, duration: "1s", qos: 1, interval: "1s", mqtt: "3.1.1", payload_size: 0, tenant: "t", tls: true, tls_version: "1.3", tls_groups: "X25519", max_connecting: 0, insecure: true, reset_stats: true })) {
    if (a.startsWith("--")) expect(Object.keys(RUN_SPEC.options)).toContain(a.replace(/^--(no-)?/, "").split("=")[0]!);
  }
});
