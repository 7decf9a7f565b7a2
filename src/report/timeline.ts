/**
 * The run over time: one point every few seconds (devices, rates, publish latency of that
 * window), for the dashboard's charts, the HTML report and the history kept on disk.
 */
import type { Stats } from "../metrics/stats.ts";

export interface TimelinePoint {
  /** Seconds since the run started. */
  t: number;
  target: number;
  connected: number;
  /** Per second over the window since the previous point. */
  publish_per_s: number;
  recv_per_s: number;
  failures_per_s: number;
  /** Connections made (connect row), per second: the connect rate, or with --churn the reconnect rate. */
  connect_per_s?: number;
  /** Publish latency of the window (ms); 0 when nothing was acknowledged in it. */
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

/** Samples a fleet's stats into points; windows are differences of the cumulative stats. */
export class Timeline {
  readonly points: TimelinePoint[] = [];
  private prev = { at: 0, pub: 0, recv: 0, fail: 0, conn: 0, hist: [] as number[] };

  constructor(
    private readonly startedAt: number = performance.now(),
    /** At most this many points are kept (older ones are thinned to every other). */
    private readonly maxPoints = 2000,
  ) {
    this.prev.at = startedAt;
  }

  sample(stats: Stats, target: number, connected: number, now = performance.now()): TimelinePoint {
    const rows = stats.rows;
    const pub = rows.publish.count;
    const recv = rows.recv_message.count;
    const conn = rows.connect.count;
    let fail = 0;
    for (const r of Object.values(rows)) fail += r.failures;
    const dt = Math.max(1e-3, (now - this.prev.at) / 1000);
    const hist = rows.publish.latency.toSparse();
    const window = rows.publish.latency.since(this.prev.hist, hist).summary();
    const point: TimelinePoint = {
      t: round((now - this.startedAt) / 1000, 1),
      target,
      connected,
      publish_per_s: round(Math.max(0, pub - this.prev.pub) / dt),
      recv_per_s: round(Math.max(0, recv - this.prev.recv) / dt),
      failures_per_s: round(Math.max(0, fail - this.prev.fail) / dt),
      connect_per_s: round(Math.max(0, conn - this.prev.conn) / dt),
      p50_ms: window.p50_ms,
      p95_ms: window.p95_ms,
      p99_ms: window.p99_ms,
    };
    this.prev = { at: now, pub, recv, fail, conn, hist };
    this.points.push(point);
    if (this.points.length > this.maxPoints) {
      const kept = this.points.filter((_, i) => i % 2 === 0 || i === this.points.length - 1);
      this.points.splice(0, this.points.length, ...kept);
    }
    return point;
  }

  /** After a stats reset: the next window starts from zero. */
  reset(now = performance.now()): void {
    this.prev = { at: now, pub: 0, recv: 0, fail: 0, conn: 0, hist: [] };
  }
}
