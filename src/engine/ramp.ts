/** The ramp: a token bucket that lets new devices join at the spawn rate, at most one second's worth at once. */
export class Ramp {
  private tokens = 0;

  constructor(public rate: number) {}

  /** How many devices may join after `dt` seconds, when `room` more are wanted. */
  take(dt: number, room: number): number {
    if (room <= 0) {
      this.tokens = 0;
      return 0;
    }
    this.tokens = Math.min(this.tokens + this.rate * dt, Math.max(1, this.rate));
    const n = Math.min(Math.floor(this.tokens), room);
    this.tokens -= n;
    return n;
  }

  /** Stopping or full: nothing saved up for later. */
  reset(): void {
    this.tokens = 0;
  }
}
