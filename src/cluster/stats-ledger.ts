/**
 * Stats between machines and the controller, exactly once over a carrier that drops
 * messages (Redis pub/sub, and outages of it). A machine numbers what it counts each second
 * and resends everything not yet acknowledged, merged, in every message; the controller adds
 * a message only if it continues what it has already added, and acknowledges in its beat.
 * A lost message is covered by the next, and the usual message carries one or two seconds
 * of buckets rather than the run's whole histograms.
 */
import { type EncodedStats, diffEncoded, isEmptyEncoded, sumEncoded } from "../metrics/snapshot.ts";

/** Stats of the counting steps `from`..`to` (numbered from 1 since the run or the stats epoch began). */
export interface Span {
  from: number;
  to: number;
  stats: EncodedStats;
}

/** Machine side: what was counted and not yet acknowledged. */
export class StatsOutbox {
  private entries: Span[] = [];
  private counter = 0;
  private prev: EncodedStats | null = null;
  /** The last message's newest step did not reach the controller: the next delta joins that step. */
  private undelivered = false;

  /** Starts over (a new run or stats epoch): totals count from zero, numbering from 1. */
  reset(): void {
    this.entries = [];
    this.counter = 0;
    this.prev = null;
    this.undelivered = false;
  }

  /** Takes the running totals, records what they gained, and returns everything unacknowledged (null: nothing). */
  next(totals: EncodedStats): Span | null {
    const delta = diffEncoded(totals, this.prev);
    this.prev = totals;
    if (!isEmptyEncoded(delta)) {
      const last = this.entries[this.entries.length - 1];
      const n = ++this.counter;
      if (last && this.undelivered) {
        last.stats = sumEncoded(last.stats, delta);
        last.to = n;
      } else this.entries.push({ from: n, to: n, stats: delta });
    }
    if (!this.entries.length) return null;
    let stats = this.entries[0]!.stats;
    for (let i = 1; i < this.entries.length; i++) stats = sumEncoded(stats, this.entries[i]!.stats);
    return { from: this.entries[0]!.from, to: this.entries[this.entries.length - 1]!.to, stats };
  }

  /** Whether the message just sent reached a subscriber (PUBLISH's receiver count > 0). */
  delivered(ok: boolean): void {
    this.undelivered = !ok;
  }

  /** The controller has added everything up to step `to`. */
  ack(to: number): void {
    this.entries = this.entries.filter((e) => e.to > to);
  }

  get pending(): number {
    return this.entries.length;
  }
}

/** Controller side, one per machine: accepts each step exactly once. */
export class StatsInbox {
  /** Last step added; 0: none yet. */
  applied = 0;
  private last: Span | null = null;

  reset(): void {
    this.applied = 0;
    this.last = null;
  }

  /** What to add for this message, or null if it repeats what was added or skips a step it has not seen. */
  accept(span: Span): EncodedStats | null {
    if (span.to <= this.applied) return null;
    let add: EncodedStats | null = null;
    if (span.from === this.applied + 1) add = span.stats;
    // Sent before our acknowledgement arrived: the same steps as last time and more.
    else if (this.last && span.from === this.last.from) add = diffEncoded(span.stats, this.last.stats);
    if (!add) return null;
    this.last = span;
    this.applied = span.to;
    return add;
  }
}
