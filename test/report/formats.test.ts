/** The HTML report escapes every value it shows: a federated report holds what machines sent. */
import { expect, test } from "bun:test";
import { renderHtml } from "../../src/report/formats.ts";
import { buildReport, renderTable, type Report } from "../../src/report/summary.ts";
import { Stats } from "../../src/metrics/stats.ts";

const EVIL = `<img src=x onerror=alert(1)>`;

test("every value in the HTML report is escaped, numbers included", () => {
  const stats = new Stats();
  stats.rows.publish.ok(3);
  stats.rows.publish.fail(EVIL);
  const base = buildReport({
    config: { label: EVIL },
    started: new Date(0),
    ended: new Date(10_000),
    interrupted: false,
    users: { target: 1, active: 1, connected: 1 },
    stats,
    cpuMicros: 0,
    rssBytes: 0,
  });
  // What a forged machine state could have put where numbers belong.
  const hostile = {
    ...base,
    duration_s: EVIL,
    users: { target: EVIL, active: EVIL, connected: EVIL },
    health: { ...base.health, loop_lag_p99_ms: EVIL, late_sends: EVIL, cpu_percent: EVIL },
    machines: [{ id: EVIL, host: EVIL, pid: 1, lost: false, users: EVIL, ranges: [], connected: EVIL, processes: EVIL, cpu_us: 0, rss: 0, dropped: 0 }],
    dropped_messages: { [EVIL]: 1 },
  } as unknown as Report;
  const html = renderHtml(hostile);
  expect(html).not.toContain("<img");
  expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;");
  // Only the report's own scripts: three elements (uPlot, the chart helper, the mount call).
  expect(html.match(/<script>/g)?.length).toBe(3);
});

test("the revoke verdict speaks only of certificates tried against the broker", () => {
  const report = (fill: (s: Stats) => void) => {
    const stats = new Stats();
    fill(stats);
    return renderTable(buildReport({ config: {}, started: new Date(0), ended: new Date(1000), interrupted: false, users: { target: 1, active: 1, connected: 1 }, stats, cpuMicros: 0, rssBytes: 0 }));
  };
  expect(report((s) => s.rows.revoke.ok(5))).toContain("every revoked certificate was refused (1 tried)");
  const none = report((s) => {
    s.rows.revoke.fail("signer_error");
    s.rows.revoke.fail("signer_error");
  });
  expect(none).not.toContain("every revoked certificate was refused");
  expect(none).toContain("no revoked certificate was tried against the broker: 2 revokes failed before (signer_error 2)");
  expect(report((s) => s.rows.revoke.fail("revoked_but_accepted"))).toContain("1 REVOKED BUT STILL ACCEPTED");
});
