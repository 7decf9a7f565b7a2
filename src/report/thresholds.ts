/**
 * CI thresholds on a report: `--threshold 'publish.p99_ms<500'`. A run that breaks one exits 3
 * and lists what broke, with the value it had.
 */
import { CUSTOM_ROW, ROWS } from "../metrics/stats.ts";
import type { Integrity, Report, SubscribersReport } from "./summary.ts";

const ROW_METRICS = ["count", "failures", "failure_rate", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "rate_per_s"] as const;
export const INTEGRITY_METRICS = ["published", "acked", "delivered", "lost", "duplicated", "reordered", "commands_sent", "commands_received", "commands_lost"] as const;
const SUBSCRIBER_METRICS = ["delivered", "delivered_per_s", "bytes_per_s", "published", "e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms"] as const;
const HEALTH_METRICS = ["late_sends", "backpressure_skips", "protocol_errors", "command_gaps", "timer_errors", "no_matching_subscribers", "sessions_resumed", "topic_alias_bytes_saved", "ramp_held_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "cpu_percent", "rss_bytes"] as const;
const OPS = {
  "<=": (a: number, b: number) => a <= b,
  ">=": (a: number, b: number) => a >= b,
  "==": (a: number, b: number) => a === b,
  "!=": (a: number, b: number) => a !== b,
  "<": (a: number, b: number) => a < b,
  ">": (a: number, b: number) => a > b,
} as const;
type Op = keyof typeof OPS;

export interface Threshold {
  expr: string;
  /** A stats row, or "health". */
  scope: string;
  metric: string;
  op: Op;
  value: number;
}

export interface Broken {
  expr: string;
  actual: number;
}

const SYNTAX = /^\s*([a-z_]+)\.([a-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$/i;

/** Rows counted by a consumer (--subscribers or --verify): what came out of the broker, and its publish → delivery latency. */
const DELIVERY_ROWS = ["deliver", "e2e"] as const;

/** Parses one threshold; a string describing the problem when it is not one. */
/** @param scenarioRows the run has a scenario: its own row names are allowed */
export function parseThreshold(expr: string, scenarioRows = false): Threshold | string {
  const m = SYNTAX.exec(expr);
  if (!m) return `"${expr}" is not ROW.METRIC<OP>NUMBER, e.g. publish.p99_ms<500 or connect.failure_rate<0.01`;
  const [, scope, metric, op, value] = m as unknown as [string, string, string, Op, string];
  if (scope === "health") {
    if (!(HEALTH_METRICS as readonly string[]).includes(metric)) return `"${expr}": health has ${HEALTH_METRICS.join(", ")}`;
  } else if (scope === "integrity") {
    if (!(INTEGRITY_METRICS as readonly string[]).includes(metric)) return `"${expr}": integrity has ${INTEGRITY_METRICS.join(", ")} (with --verify)`;
  } else if (scope === "subscribers") {
    if (!(SUBSCRIBER_METRICS as readonly string[]).includes(metric)) return `"${expr}": subscribers has ${SUBSCRIBER_METRICS.join(", ")} (with --subscribers)`;
  } else {
    // A scenario's own rows (d.measure, d.fail) are known only once it runs: any such name may be held to account, and a row the run never had fails.
    if (!(ROWS as readonly string[]).includes(scope) && !(DELIVERY_ROWS as readonly string[]).includes(scope) && !(scenarioRows && CUSTOM_ROW.test(scope))) return `"${expr}": no row "${scope}" (rows: ${[...ROWS, ...DELIVERY_ROWS].join(", ")}, ${scenarioRows ? "a scenario's own rows, " : ""}and health, integrity, subscribers)`;
    if (!(ROW_METRICS as readonly string[]).includes(metric)) return `"${expr}": a row has ${ROW_METRICS.join(", ")}`;
  }
  return { expr: expr.trim(), scope, metric, op, value: Number(value) };
}

function actual(report: Report, t: Threshold): number {
  if (t.scope === "health") return Number(report.health[t.metric as keyof Report["health"]]);
  // Without --verify there is nothing to hold it to: NaN breaks every comparison, so the threshold fails, as it should.
  if (t.scope === "integrity") return report.integrity ? Number(report.integrity[t.metric as keyof Integrity]) : NaN;
  if (t.scope === "subscribers") return report.subscribers ? Number(report.subscribers[t.metric as keyof SubscribersReport]) : NaN;
  const row = report.stats[t.scope];
  // deliver and e2e exist only with a consumer (--subscribers or --verify).
  if (!row) return NaN;
  if (t.metric === "failure_rate") return row.count + row.failures ? row.failures / (row.count + row.failures) : 0;
  return Number(row[t.metric as keyof typeof row]);
}

/** The thresholds the report breaks. */
export function checkThresholds(report: Report, thresholds: readonly Threshold[]): Broken[] {
  const broken: Broken[] = [];
  for (const t of thresholds) {
    const a = actual(report, t);
    if (!OPS[t.op](a, t.value)) broken.push({ expr: t.expr, actual: a });
  }
  return broken;
}
