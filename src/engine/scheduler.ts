/**
 * One timer wheel per process: every device timer (publish, keepalive, connect timeout,
 * reconnect) is an entry in a hashed wheel of TICK_MS slots, driven by a single interval.
 * Cancelling is free: each (device, kind) has one deadline in a Float64Array, and an entry
 * whose deadline moved is dropped when its slot comes up (or re-filed if the deadline is later).
 */

/** Timer kinds in the scheduler wheel. */
export const Timer = { PUBLISH: 0, KEEPALIVE: 1, TIMEOUT: 2, RECONNECT: 3, ACK: 4, SCENARIO: 5 } as const;
/** Kinds every swarm has; a scenario's adds SCENARIO (engine/scenario.ts), so the built-in device pays nothing for it. */
export const TIMER_KINDS = 5;

export const TICK_MS = 10;
const SLOTS = 4096; // ~41 s per turn at 10 ms: one turn covers the default 30 s publish interval.

export type Clock = () => number;

export class Wheel {
  /** deadline[kind * capacity + device], Infinity when not armed. */
  private deadlines: Float64Array;
  private readonly slots: number[][] = Array.from({ length: SLOTS }, () => []);
  private cursor: number;
  private capacity: number;

  /**
   * @param kinds number of timer kinds per device
   * @param fire called with (device, kind, deadline) when a timer is due
   */
  constructor(
    private readonly kinds: number,
    capacity: number,
    private readonly fire: (device: number, kind: number, deadline: number) => void,
    startMs: number,
  ) {
    this.capacity = capacity;
    this.deadlines = new Float64Array(kinds * capacity).fill(Infinity);
    this.cursor = Math.floor(startMs / TICK_MS);
  }

  /** Grows to hold at least `capacity` devices. */
  grow(capacity: number): void {
    if (capacity <= this.capacity) return;
    const next = new Float64Array(this.kinds * capacity).fill(Infinity);
    for (let k = 0; k < this.kinds; k++) next.set(this.deadlines.subarray(k * this.capacity, (k + 1) * this.capacity), k * capacity);
    // Entries store device*kinds+kind, independent of capacity, so the slots stay valid.
    this.deadlines = next;
    this.capacity = capacity;
  }

  /** Arms (or re-arms) timer `kind` of `device` for time `at` (ms, same clock as tick()). */
  set(device: number, kind: number, at: number): void {
    this.deadlines[kind * this.capacity + device] = at;
    // The first tick at or after `at`: a timer never fires early, and at most TICK_MS late.
    let tick = Math.ceil(at / TICK_MS);
    if (tick <= this.cursor) tick = this.cursor + 1;
    this.slots[tick % SLOTS]!.push(device * this.kinds + kind);
  }

  clear(device: number, kind: number): void {
    this.deadlines[kind * this.capacity + device] = Infinity;
  }

  /** Clears every timer of `device`. */
  clearAll(device: number): void {
    for (let k = 0; k < this.kinds; k++) this.deadlines[k * this.capacity + device] = Infinity;
  }

  deadline(device: number, kind: number): number {
    return this.deadlines[kind * this.capacity + device]!;
  }

  /** Fires every timer due at or before `now`. */
  tick(now: number): void {
    const target = Math.floor(now / TICK_MS);
    while (this.cursor < target) {
      this.cursor++;
      const slot = this.slots[this.cursor % SLOTS]!;
      if (slot.length === 0) continue;
      this.slots[this.cursor % SLOTS] = [];
      for (let i = 0; i < slot.length; i++) {
        const entry = slot[i]!;
        const device = Math.floor(entry / this.kinds);
        const kind = entry - device * this.kinds;
        const idx = kind * this.capacity + device;
        const due = this.deadlines[idx]!;
        if (due === Infinity) continue;
        const dueTick = Math.ceil(due / TICK_MS);
        if (dueTick > this.cursor) {
          // Due in a later turn of the wheel: file it again. Otherwise it was re-armed and
          // set() already filed the entry that will fire; this one is stale.
          if (dueTick - this.cursor >= SLOTS) this.slots[dueTick % SLOTS]!.push(entry);
          continue;
        }
        this.deadlines[idx] = Infinity;
        this.fire(device, kind, due);
      }
    }
  }
}

/**
 * How late the OS may wake a timer without it counting against the broker: an idle loop's
 * interval timer fires ~0.2 ms late here (bench/latency.bench.ts), which the publish row used
 * to count on top of the round trip. The loop's own lag is reported apart (health.loop_lag).
 */
export const TIMER_SLACK_MS = 1;

/**
 * When a timer with this deadline should have fired, given the previous tick ran at `prevTick`
 * and this one at `now`. The wheel files a timer at the TICK_MS grid point at or after its
 * deadline, so the earliest tick that could fire it is the first one, counting every TICK_MS
 * from the previous tick, at or after that point. Timer resolution and the OS's wake-up slack
 * (TIMER_SLACK_MS) are thus not counted as latency; a stalled event loop is, less that slack
 * (coordinated omission).
 */
export function intendedTime(deadline: number, prevTick: number, now: number): number {
  const grid = Math.ceil(deadline / TICK_MS) * TICK_MS;
  // Lateness past the intended time counts, less the slack: scheduled = min(now, intended + slack).
  if (grid <= prevTick) return Math.min(now, deadline + TIMER_SLACK_MS);
  const nominal = prevTick + Math.ceil((grid - prevTick) / TICK_MS) * TICK_MS;
  return Math.min(now, nominal + TIMER_SLACK_MS);
}

/**
 * Ms since the epoch on a clock the processes of one machine share for leases: the wall clock
 * when this process started, advanced by the monotonic clock since. A wall-clock step (NTP)
 * during a run cannot lapse or stretch a lease; a process stopped with SIGSTOP still sees the
 * time it was stopped.
 */
export function leaseClock(): number {
  return performance.timeOrigin + performance.now();
}
