import { expect, test } from "bun:test";
import { StatsInbox, StatsOutbox } from "../../src/cluster/stats-ledger.ts";
import { addEncoded, encodeStats, packStats, unpackStats } from "../../src/metrics/snapshot.ts";
import { Stats } from "../../src/metrics/stats.ts";

/** A machine counting for `steps` seconds over a channel that loses messages and acknowledgements. */
function simulate(steps: number, lose: (step: number, what: "msg" | "ack") => boolean, random: () => number) {
  const source = new Stats();
  const merged = new Stats();
  const outbox = new StatsOutbox();
  const inbox = new StatsInbox();
  for (let step = 0; step < steps; step++) {
    for (let i = 0, n = Math.floor(random() * 50); i < n; i++) source.rows.publish.ok(random() * 200);
    if (random() < 0.3) source.rows.connect.fail("timeout");
    const span = outbox.next(encodeStats(source));
    if (span) {
      const lost = lose(step, "msg");
      outbox.delivered(!lost);
      if (!lost) {
        const wire = JSON.parse(JSON.stringify({ ...span, stats: packStats(span.stats) }));
        const add = inbox.accept({ ...wire, stats: unpackStats(wire.stats) });
        if (add) addEncoded(merged, add);
      }
    }
    if (!lose(step, "ack")) outbox.ack(inbox.applied);
  }
  // The channel heals: a few quiet seconds deliver everything.
  for (let step = 0; step < 5; step++) {
    const span = outbox.next(encodeStats(source));
    if (span) {
      outbox.delivered(true);
      const add = inbox.accept(span);
      if (add) addEncoded(merged, add);
    }
    outbox.ack(inbox.applied);
  }
  return { source, merged, outbox };
}

function lcg(seed: number) {
  return () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

test("every count arrives exactly once despite lost messages, lost acknowledgements and an outage", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const random = lcg(seed);
    // 20 % of messages and acks lost at random, and everything lost in steps 100-160 (an outage).
    const { source, merged, outbox } = simulate(300, (step) => (step >= 100 && step < 160) || random() < 0.2, random);
    expect(outbox.pending).toBe(0);
    expect(merged.rows.publish.count).toBe(source.rows.publish.count);
    expect(merged.rows.connect.failures).toBe(source.rows.connect.failures);
    expect(merged.rows.publish.latency.count).toBe(source.rows.publish.latency.count);
    for (const p of [50, 99, 99.9]) expect(merged.rows.publish.latency.percentileMs(p)).toBe(source.rows.publish.latency.percentileMs(p));
  }
});

test("acknowledgements arriving one message late still let every message count", () => {
  const random = lcg(9);
  const source = new Stats();
  const merged = new Stats();
  const outbox = new StatsOutbox();
  const inbox = new StatsInbox();
  let applied = 0;
  for (let step = 0; step < 100; step++) {
    for (let i = 0; i < 10; i++) source.rows.publish.ok(random() * 10);
    const span = outbox.next(encodeStats(source))!;
    outbox.delivered(true);
    const add = inbox.accept(span);
    if (add) {
      addEncoded(merged, add);
      applied++;
    }
    outbox.ack(step % 2 ? inbox.applied : Math.max(0, inbox.applied - 1)); // every other ack is stale
    expect(merged.rows.publish.count).toBe(source.rows.publish.count);
  }
  expect(applied).toBe(100);
});
