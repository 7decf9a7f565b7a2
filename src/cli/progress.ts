/** Progress lines for long work: redrawn in place on a TTY, a plain line every few seconds otherwise. */

export class Progress {
  private last = 0;
  private drawn = false;
  private readonly tty: boolean;
  private readonly every: number;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    opts: { intervalMs?: number } = {},
  ) {
    this.tty = !!out.isTTY;
    this.every = opts.intervalMs ?? (this.tty ? 250 : 5000);
  }

  /** Shows `line` if enough time has passed since the last one (or `force`). */
  update(line: string, force = false): void {
    const now = performance.now();
    if (!force && now - this.last < this.every) return;
    this.last = now;
    if (this.tty) {
      this.out.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else {
      this.out.write(`${line}\n`);
    }
  }

  /** Ends an in-place line so later output starts on a fresh one. */
  done(): void {
    if (this.drawn) this.out.write("\n");
    this.drawn = false;
  }
}

/** 12345.6 → "12,346". */
export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Seconds → "1m05s" / "12.3s". */
export function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}
