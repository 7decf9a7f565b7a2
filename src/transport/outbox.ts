/**
 * Write batching. Bun's socket.write() sends at once and Bun has no cork(), so packets queued
 * during one tick or one inbound read go out in a single write per socket at flush(); bytes the
 * kernel does not take wait for the socket's drain event, and nothing more is written before them.
 */
import type { Link } from "./link.ts";
import { wsFrame } from "./ws.ts";

/** `parts` joined into one array (the one part itself when there is one). */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export class Outbox {
  private dirty: Link[] = [];
  bytesWritten = 0;

  /** Queues `bytes` on `conn` for the next flush. */
  send(conn: Link, bytes: Uint8Array): void {
    if (conn.closed) return;
    conn.queue.push(bytes);
    if (!conn.dirty) {
      conn.dirty = true;
      this.dirty.push(conn);
    }
  }

  /** One write per connection with queued packets. */
  flush(now: number): void {
    const list = this.dirty;
    if (list.length === 0) return;
    this.dirty = [];
    for (let i = 0; i < list.length; i++) {
      const conn = list[i]!;
      conn.dirty = false;
      if (conn.closed || !conn.socket || conn.queue.length === 0) {
        conn.queue.length = 0;
        continue;
      }
      let bytes = concat(conn.queue);
      conn.queue = [];
      // Over WebSocket the batch is one frame; under cicada's TLS, records.
      if (conn.ws) bytes = wsFrame(bytes);
      if (conn.tls13) bytes = conn.tls13.seal(bytes);
      if (conn.pending) {
        // Still waiting for drain: keep order, write when the socket can take it.
        conn.pending = concat([conn.pending, bytes]);
        continue;
      }
      this.write(conn, bytes, now);
    }
  }

  /** The socket can take more: retry what it left. */
  drain(conn: Link, now: number): void {
    const p = conn.pending;
    if (!p || !conn.socket) return;
    conn.pending = null;
    this.write(conn, p, now);
  }

  private write(conn: Link, bytes: Uint8Array, now: number): void {
    const n = conn.socket!.write(bytes);
    conn.lastTx = now;
    if (n < 0) return; // socket already closed; its close event follows
    this.bytesWritten += n;
    conn.pending = n < bytes.length ? bytes.subarray(n) : null;
  }
}
