#!/usr/bin/env bun
/**
 * Draws the README's picture of a run watched in Prometheus (docs/prometheus.png):
 *   bun scripts/prometheus-picture.ts [--devices 2000] [--seconds 90] [--out docs/prometheus.png]
 * It starts mosquitto (mutual TLS) and Prometheus on loopback, runs `cicada run --metrics` with
 * that many mTLS devices, then opens Prometheus' own graph page in headless Chromium with four of
 * the Grafana dashboard's queries and saves a screenshot. Needs mosquitto, prometheus and
 * chromium (`bash scripts/install-deps.sh --test`). With ImageMagick's `convert` on PATH, the
 * PNG is cut to 64 colours to stay small.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { freePort, startBroker, startPrometheus } from "./lib/testbed.ts";

const { values: o } = parseArgs({
  options: {
    devices: { type: "string", default: "2000" },
    seconds: { type: "string", default: "90" },
    out: { type: "string", default: "docs/prometheus.png" },
  },
});
const devices = Number(o.devices);
const seconds = Number(o.seconds);
const out = resolve(o.out!);
const MAIN = resolve(import.meta.dir, "../src/cli/main.ts");
const say = (line: string) => process.stderr.write(`prometheus-picture: ${line}\n`);

/** Four of the Grafana dashboard's panels, over 30 s windows to suit a short run; the phases' p99 over the run so far. */
const PANELS = [
  'sum(rate(cicada_requests_total{row="publish"}[30s]))',
  "sum(cicada_devices_connected)",
  "histogram_quantile(0.99, sum by (le, phase) (cicada_phase_seconds_bucket))",
  "sum by (machine, slot) (cicada_process_resident_memory_bytes) / 1048576",
];

const tmp = mkdtempSync(join(tmpdir(), "cicada-picture-"));
try {
  const certDir = join(tmp, "cert");
  say(`making ${devices} device certificates`);
  const certs = Bun.spawnSync([process.execPath, MAIN, "certs", "create", "--devices", String(devices), "--certs", certDir], { stdout: "ignore", stderr: "inherit" });
  if (certs.exitCode !== 0) throw new Error("cicada certs create failed");
  await using broker = await startBroker({ certDir, stateDir: tmp, verbose: false });
  const metrics = await freePort();
  await using prom = await startPrometheus({ stateDir: tmp, targets: [`127.0.0.1:${metrics}`], intervalS: 1 });
  say(`running ${devices} devices for ${seconds} s, scraped by ${prom.url}`);
  const run = Bun.spawn(
    [process.execPath, MAIN, "run", "--certs", certDir, "--port", String(broker.port), "--users", String(devices), "--rate", "200", "--duration", `${seconds}s`, "--interval", "2s", "--metrics", `127.0.0.1:${metrics}`],
    { stdout: "ignore", stderr: "inherit" },
  );
  // The picture is taken near the end, while the run still goes.
  await Bun.sleep((seconds - 5) * 1000);
  const query = PANELS.map((expr, i) => `g${i}.expr=${encodeURIComponent(expr)}&g${i}.tab=0&g${i}.stacked=0&g${i}.range_input=${seconds}s`).join("&");
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
    // Two panels a row, each query above its graph; the page's chrome (navigation, buttons,
    // controls, history) left out. The style is in place before the graphs draw at its widths.
    const css = `.navbar, .query-history, .execute_btn, .expression_select, .eval_stats, .nav-tabs, .prometheus_input_group, .stacked_btn, .btn, #add_graph, .col-lg-2, a[name=remove] { display: none !important; }
      body { padding-top: 0 !important; } .graph_wrapper { width: 50%; float: left; padding: 2px 8px; } .col-lg-10 { max-width: 100%; flex: 0 0 100%; }
      .expression_input { height: 2.2em !important; font-size: 13px; }`;
    await page.addInitScript((text: string) => {
      document.addEventListener("DOMContentLoaded", () => document.head.appendChild(Object.assign(document.createElement("style"), { textContent: text })));
    }, css);
    await page.goto(`${prom.url}/graph?${query}`);
    await page.waitForLoadState("networkidle");
    await Bun.sleep(3000);
    await page.screenshot({ path: out, fullPage: true });
  } finally {
    await browser.close();
  }
  await run.exited;
  if (Bun.which("convert")) Bun.spawnSync(["convert", out, "-colors", "64", out]);
  say(`wrote ${out} (${Math.round(statSync(out).size / 1024)} KiB)`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
