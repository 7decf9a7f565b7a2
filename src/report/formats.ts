/**
 * The report's files: JSON (everything), CSV (the stats table, as Locust's stats CSV) and a
 * self-contained HTML page (tables and charts; no network needed to open it).
 */
import { accessSync, constants, existsSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import chartsJs from "../ui/charts.asset.js" with { type: "text" };
import { writeFileAtomic } from "../sys/fs.ts";
import type { Report } from "./summary.ts";

export const REPORT_FORMATS = ["json", "csv", "html"] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

/** The format a report path asks for by its extension, or null. */
export function formatOf(path: string): ReportFormat | null {
  const ext = extname(path).slice(1).toLowerCase();
  return (REPORT_FORMATS as readonly string[]).includes(ext) ? (ext as ReportFormat) : null;
}

const CSV_HEAD = ["Name", "Request Count", "Failure Count", "Min (ms)", "Median (ms)", "95% (ms)", "99% (ms)", "Max (ms)", "Average (ms)", "Requests/s"];

function csvCell(v: string | number): string {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function renderCsv(r: Report): string {
  const lines = [CSV_HEAD.join(",")];
  for (const [name, s] of Object.entries(r.stats)) {
    lines.push([name, s.count, s.failures, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.mean_ms, s.rate_per_s].map(csvCell).join(","));
  }
  lines.push("", ["Row", "Failure", "Occurrences"].join(","));
  for (const [row, reasons] of Object.entries(r.errors)) for (const [why, n] of Object.entries(reasons)) lines.push([row, why, n].map(csvCell).join(","));
  return `${lines.join("\n")}\n`;
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** JSON inside a <script> element: `<` escaped so no string in it can close the element. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, "\\u003c");
}

function table(head: string[], rows: (string | number)[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`)
    .join("")}</tbody></table>`;
}

export function renderHtml(r: Report, title = "cicada run"): string {
  const stats = table(
    ["Name", "# reqs", "# fails", "Min", "Median", "p95", "p99", "Max", "Avg", "rate/s"],
    Object.entries(r.stats)
      .filter(([, s]) => s.count + s.failures > 0)
      .map(([n, s]) => [n, s.count, s.failures, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.mean_ms, s.rate_per_s]),
  );
  const failures = table(["Row", "Failure", "Occurrences"], Object.entries(r.errors).flatMap(([row, reasons]) => Object.entries(reasons).map(([why, n]) => [row, why, n])));
  const config = table(["Setting", "Value"], Object.entries(r.config).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]));
  const machines = r.machines ? table(["Machine", "Host", "Users", "Connected", "Processes", "Lost"], r.machines.map((m) => [m.id, m.host, m.users, m.connected, m.processes, m.lost ? "yes" : "no"])) : "";
  const h = r.health;
  // Every value is escaped, numbers included: a report may hold what machines sent over the network.
  const e = escapeHtml;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>${uplotCss}
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2733}table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #d7dde4;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f2f5f8}.charts{display:flex;flex-wrap:wrap;gap:12px}</style></head>
<body><h1>${escapeHtml(title)}</h1>
<p>${e(r.started)} → ${e(r.ended)} (${e(r.duration_s)} s)${r.interrupted ? " — interrupted" : ""}.
Devices: ${e(r.users.connected)} connected of ${e(r.users.active)} started (target ${e(r.users.target)}).
Generator ${h.kept_up ? "kept up" : "did NOT keep up"}: loop lag p99 ${e(h.loop_lag_p99_ms)} ms, late sends ${e(h.late_sends)}, CPU ${e(h.cpu_percent)} %.</p>
<h2>Statistics (ms)</h2>${stats}
<h2>Failures</h2>${failures}
${r.certificates ? `<h2>Certificates</h2>${table(["Renewed", "Revoked", "Revoked but accepted"], [[r.certificates.renewed, r.certificates.revoked, r.certificates.revoked_but_accepted]])}` : ""}
${r.dropped_messages && Object.keys(r.dropped_messages).length ? `<h2>Dropped control messages</h2>${table(["Reason", "Messages"], Object.entries(r.dropped_messages))}` : ""}
<h2>Charts</h2><div class="charts" id="charts"></div>
${machines ? `<h2>Machines</h2>${machines}` : ""}
<h2>Settings</h2>${config}
<script>${uplotJs}</script><script>${chartsJs}</script>
<script>window.cicadaCharts.mount(document.getElementById("charts"), 560).update(${scriptJson(r.timeline ?? [])});</script>
</body></html>
`;
}

export function renderReport(r: Report, format: ReportFormat): string {
  if (format === "csv") return renderCsv(r);
  if (format === "html") return renderHtml(r);
  return `${JSON.stringify(r, null, 2)}\n`;
}

/** Writes the report atomically in the format its extension names (JSON for any other). */
export function writeReport(path: string, r: Report): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, renderReport(r, formatOf(path) ?? "json"), 0o644);
}

/**
 * Writes the report to `path`, or — when that fails at the end of a run (a full disk, a
 * directory gone) — to a file in the working directory, else the temp directory, so a run's
 * report is never lost. Returns where it went and, if not to `path`, why.
 */
export function writeReportSafely(path: string, r: Report): { path: string; error?: string } {
  try {
    writeReport(path, r);
    return { path };
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    const name = `cicada-report-${new Date().toISOString().replace(/[-:.]/g, "")}${extname(path) || ".json"}`;
    for (const dir of [process.cwd(), tmpdir()]) {
      try {
        writeReport(join(dir, name), r);
        return { path: join(dir, name), error };
      } catch {
        // try the next place
      }
    }
    throw err;
  }
}

/** The problem, if any, with writing a report at `path`: its directory (or the nearest one that exists) must be a writable directory. */
export function reportPathIssue(path: string): string | undefined {
  let dir = resolve(dirname(path));
  while (!existsSync(dir)) dir = dirname(dir);
  try {
    if (!statSync(dir).isDirectory()) return `${dir} is not a directory`;
    accessSync(dir, constants.W_OK);
  } catch {
    return `${dir} is not a writable directory`;
  }
  return undefined;
}
