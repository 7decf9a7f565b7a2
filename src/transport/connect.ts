// transport/ — sockets: dialing over TCP or TLS, write batching, broker-certificate pins; it knows nothing of devices.
// Imports point down only: ARCHITECTURE.md lists the layers, test/architecture.test.ts checks them.
/**
 * Dialing: Bun.connect over TCP or TLS with one shared handler object for every socket
 * (per-connection state lives in socket.data). Nothing thrown in a callback escapes: each is
 * wrapped, and a failure costs that one connection (wrk's count-then-reconnect).
 */
import type { Socket, SocketHandler, TCPSocketConnectOptions, TLSOptions } from "bun";
import type { Link } from "./link.ts";
import { X509Certificate } from "node:crypto";
import { WsState, type WsEndpoint } from "./ws.ts";
import { concat } from "./outbox.ts";
import { TlsError, verifyChain, type Tls13Client, type Tls13Sink } from "./tls13.ts";

export interface Target {
  host: string;
  port: number;
}

/** What the engine does with socket events. */
export interface LinkEvents {
  /** TCP is up (for TLS: before the handshake). */
  opened(conn: Link): void;
  /** MQTT over WebSocket: the socket (and TLS) is up and the upgrade request sent; ready() follows the server's 101. */
  upgrading?(conn: Link): void;
  /** Ready for MQTT: TCP without TLS, or TLS after a successful handshake (over WebSocket: after the upgrade). */
  ready(conn: Link): void;
  data(conn: Link, bytes: Uint8Array): void;
  drained(conn: Link): void;
  /** The connection ended or could not be made; `reason` names why, when known. */
  closed(conn: Link, reason: string | null): void;
  /**
   * The broker presented a certificate that is not pinned for its target (see pins.ts): the
   * engine drops this attempt uncounted and dials again with full verification.
   */
  unpinned(conn: Link): void;
  /** A callback threw: counted, and that connection is closed. */
  crashed(conn: Link, err: unknown): void;
}

/** Failure reason from a socket or TLS error: its code in snake case, e.g. "econnrefused", "cert_has_expired". */
export function errorReason(err: unknown): string {
  if (!err || typeof err !== "object") return "closed";
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e.code === "string" && e.code) return e.code.toLowerCase().replace(/^err_/, "");
  const msg = typeof e.message === "string" ? e.message : String(err);
  return msg.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "").slice(0, 48) || "closed";
}

/** Ends a connection whose TLS handshake failed or whose broker certificate did not verify. */
function fail(s: Socket<Link>, conn: Link, err: Error | null): void {
  conn.failReason = errorReason(err ?? new Error("tls_handshake_failed"));
  s.end();
}

/** Counts a throw from engine code as that connection's failure; nothing escapes a callback. */
function crash(ev: LinkEvents, conn: Link, err: unknown): void {
  try {
    ev.crashed(conn, err);
  } catch {
    // The engine's own error path failed too: there is nothing left to count with.
  }
}

/**
 * One handler object for all sockets of an engine. Each callback has its own try/catch rather
 * than a shared wrapper taking a closure, so no function is allocated per packet.
 * `tls`: Bun's TLS (its handshake event); a link with `tls13` speaks cicada's own TLS over a
 * plain socket instead (tls13.ts).
 */
export function socketHandlers(ev: LinkEvents, tls: boolean, verify: boolean): SocketHandler<Link> {
  const sink = tls13Sink(ev, verify);
  const handlers: SocketHandler<Link> = {
    binaryType: "uint8array",
    open(s) {
      const conn = s.data;
      conn.socket = s;
      try {
        ev.opened(conn);
        if (conn.tls13) put(s, conn, conn.tls13.hello());
        else if (!tls) transportReady(s, ev, conn);
      } catch (err) {
        crash(ev, conn, err);
      }
    },
    data(s, bytes) {
      try {
        if (s.data.tls13) tls13Data(s, sink, s.data, bytes as Uint8Array);
        else streamData(s, ev, s.data, bytes as Uint8Array);
      } catch (err) {
        crash(ev, s.data, err);
      }
    },
    drain(s) {
      try {
        ev.drained(s.data);
      } catch (err) {
        crash(ev, s.data, err);
      }
    },
    close(s, err) {
      const conn = s.data;
      if (conn.closed) return;
      conn.closed = true;
      try {
        ev.closed(conn, err ? errorReason(err) : null);
      } catch (e) {
        crash(ev, conn, e);
      }
    },
    error(s, err) {
      // close() follows; remember why.
      if (!s.data.failReason) s.data.failReason = errorReason(err);
    },
    end(s) {
      s.end();
    },
    connectError(s, err) {
      const conn = s.data;
      if (conn.closed) return;
      conn.closed = true;
      try {
        ev.closed(conn, errorReason(err));
      } catch (e) {
        crash(ev, conn, e);
      }
    },
    timeout() {},
  };
  if (tls) {
    handlers.handshake = (s, success, authorizationError) => {
      const conn = s.data;
      try {
        if (!success) return fail(s, conn, authorizationError);
        if (!verify) return transportReady(s, ev, conn);
        // Dialled with a pin, there was no CA store in the context, so Bun reports the chain as
        // unverified: trustPeer then looks at the pin alone and never asks why.
        const peer = s.getPeerX509Certificate();
        trustPeer(
          s,
          ev,
          conn,
          peer?.raw ?? null,
          () => (authorizationError ? errorReason(authorizationError) : null),
          () => peer!.validToDate.getTime(),
        );
      } catch (err) {
        crash(ev, conn, err);
      }
    };
  }
  return handlers;
}

/** The socket (and TLS) is up: MQTT may start, or over WebSocket the upgrade request goes first. */
function transportReady(s: Socket<Link>, ev: LinkEvents, conn: Link): void {
  if (!conn.ws) return ev.ready(conn);
  ev.upgrading?.(conn);
  send(s, conn, conn.ws.request);
}

/** The byte stream under MQTT: over WebSocket its frames' payload, else MQTT itself. */
function streamData(s: Socket<Link>, ev: LinkEvents, conn: Link, bytes: Uint8Array): void {
  if (conn.ws) wsData(s, ev, conn, bytes);
  else ev.data(conn, bytes);
}

/** Bytes of the stream under MQTT written outside the outbox (the upgrade request, a pong): sealed first under cicada's TLS. */
function send(s: Socket<Link>, conn: Link, bytes: Uint8Array): void {
  put(s, conn, conn.tls13 ? conn.tls13.seal(bytes) : bytes);
}

/** Wire bytes, after any the socket has not taken yet (the outbox's `pending`, written on drain). */
function put(s: Socket<Link>, conn: Link, wire: Uint8Array): void {
  if (conn.pending) {
    conn.pending = concat([conn.pending, wire]);
    return;
  }
  const n = s.write(wire);
  if (n >= 0 && n < wire.length) conn.pending = wire.subarray(n);
}

/** What cicada's TLS client does with a socket: its handshake flights go out, its end of the handshake is checked here, its data goes up. */
function tls13Sink(ev: LinkEvents, verify: boolean): Tls13Sink<Socket<Link>> {
  return {
    send: (s, bytes) => put(s, s.data, bytes),
    established: (s) => tls13Established(s, ev, s.data, s.data.tls13!, verify),
    data: (s, bytes) => streamData(s, ev, s.data, bytes),
  };
}

/** Inbound bytes under cicada's TLS; a TLS failure (an alert, a bad record) ends that connection with its reason. */
function tls13Data(s: Socket<Link>, sink: Tls13Sink<Socket<Link>>, conn: Link, bytes: Uint8Array): void {
  try {
    conn.tls13!.read(bytes, sink, s);
  } catch (err) {
    if (!(err instanceof TlsError)) throw err;
    // The broker's close_notify is a close like a TCP FIN, not a failure.
    if (err.message !== "tls_closed") conn.failReason = err.message;
    s.end();
  }
}

/**
 * cicada's TLS handshake is over and the broker proved it holds its certificate's key: the same
 * decision as Bun's handshake event below, a pinned certificate or the CA and the host name.
 */
function tls13Established(s: Socket<Link>, ev: LinkEvents, conn: Link, tls: Tls13Client, verify: boolean): void {
  const chain = tls.peer!;
  const anchors = tls.anchors;
  tls.peer = null;
  tls.anchors = null;
  if (!verify) return transportReady(s, ev, conn);
  const leaf = chain[0]!;
  trustPeer(
    s,
    ev,
    conn,
    leaf,
    () => verifyChain(chain, anchors ?? [], tls.host),
    () => new X509Certificate(leaf).validToDate.getTime(),
  );
}

/**
 * The broker's certificate (`leaf`, DER) once a handshake is done, whichever TLS did it (pins.ts):
 * dialled with a pin, it must be a pinned one, or the dial is redone with the CA; dialled with the
 * CA, the chain must have verified (`problem` says why not, and the connection fails with it),
 * and then it is pinned until `notAfter`. MQTT (or the WebSocket upgrade) follows.
 */
function trustPeer(s: Socket<Link>, ev: LinkEvents, conn: Link, leaf: Uint8Array | null, problem: () => string | null, notAfter: () => number): void {
  const pins = conn.pins;
  if (pins && conn.pinned) {
    if (!leaf || !pins.has(leaf)) return ev.unpinned(conn);
    pins.matched++;
  } else {
    const why = problem();
    if (why) {
      conn.failReason = why;
      s.end();
      return;
    }
    if (pins && leaf) pins.add(leaf, notAfter());
  }
  transportReady(s, ev, conn);
}

/** Inbound bytes over WebSocket: the upgrade response, then frames whose payload is the MQTT stream. */
function wsData(s: Socket<Link>, ev: LinkEvents, conn: Link, bytes: Uint8Array): void {
  const ws = conn.ws!;
  try {
    let rest: Uint8Array | null = bytes;
    if (!ws.open) {
      rest = ws.upgrade(bytes);
      if (!rest) return;
      ev.ready(conn);
      if (rest.length === 0 || conn.closed) return;
    }
    ws.unwrap(
      rest,
      (payload) => {
        if (!conn.closed) ev.data(conn, payload);
      },
      (frame) => send(s, conn, frame),
    );
  } catch (err) {
    // A refused upgrade, a close frame or a framing error: that connection's failure.
    if (err instanceof Error && err.message.startsWith("ws_")) {
      conn.failReason = err.message;
      s.end();
      return;
    }
    throw err;
  }
}

/**
 * Whose TLS the devices speak (--tls-stack): Bun's TLS sockets (BoringSSL; TLS 1.2 and 1.3), or
 * cicada's own TLS 1.3 client over plain sockets (tls13.ts), which holds a fraction of the
 * memory per connection once the handshake is over.
 */
export const TLS_STACKS = ["bun", "cicada"] as const;
export type TlsStack = (typeof TLS_STACKS)[number];

/** The TLS versions --tls-version may name; absent, the client offers both and the broker picks. */
export const TLS_VERSIONS = ["1.2", "1.3"] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/** BoringSSL's SSL_OP_NO_TLSv1_3 and SSL_OP_NO_TLSv1_2 (node:crypto's constants): the other version switched off. */
const NO_TLS_1_3 = 0x20000000;
const NO_TLS_1_2 = 0x08000000;

/**
 * The key-exchange groups a device offers when --tls-groups is not given: what OpenSSL-based
 * clients (paho-mqtt under Python, mosquitto_pub) and embedded TLS stacks offer. Bun's own
 * default puts the post-quantum hybrid X25519MLKEM768 first, whose 1,216-byte key share every
 * ClientHello would then carry and compute, for a broker that most often cannot use it.
 */
export const DEFAULT_TLS_GROUPS = "X25519:P-256:P-384";

/** A --tls-groups list's form: names separated by colons (which names the TLS library knows, config/ checks). */
export const TLS_GROUPS_FORMAT = /^[A-Za-z0-9_-]+(:[A-Za-z0-9_-]+)*$/;

/** What a device's ClientHello offers: --tls-version (absent: 1.2 and 1.3) and --tls-groups (absent: DEFAULT_TLS_GROUPS), and whose TLS sends it (--tls-stack, absent: Bun's). */
export interface TlsOffer {
  tlsStack?: TlsStack;
  tlsVersion?: TlsVersion;
  /** Key-exchange groups in order of preference, colon-separated (BoringSSL's names: X25519, P-256, X25519MLKEM768, …). */
  tlsGroups?: string;
}

/** Bun.connect's TLS options for `offer`: `secureOptions` switches off the other version, `ecdhCurve` lists the groups. */
export function tlsOfferOptions(offer: TlsOffer): { secureOptions?: number; ecdhCurve: string } {
  const ecdhCurve = offer.tlsGroups ?? DEFAULT_TLS_GROUPS;
  if (offer.tlsVersion === "1.2") return { secureOptions: NO_TLS_1_3, ecdhCurve };
  if (offer.tlsVersion === "1.3") return { secureOptions: NO_TLS_1_2, ecdhCurve };
  return { ecdhCurve };
}

export interface DialOptions {
  target: Target;
  /** Local source address (127.0.0.x) to spread ports across. */
  source?: string;
  tls?: TLSOptions;
  /** MQTT over WebSocket at this path (after TLS, for wss); the Host header is the target's. */
  ws?: Omit<WsEndpoint, "host">;
}

/** Dials connections for one engine, all sharing one handler object. */
export class Transport {
  readonly handlers: SocketHandler<Link>;

  constructor(
    private readonly ev: LinkEvents,
    tls: boolean,
    verify = true,
  ) {
    this.handlers = socketHandlers(ev, tls, verify);
  }

  /** Opens a connection for `conn`; every outcome arrives through the LinkEvents. */
  dial(conn: Link, opts: DialOptions): void {
    conn.ws = opts.ws ? new WsState({ ...opts.ws, host: `${opts.target.host}:${opts.target.port}` }) : null;
    // `localAddress` is accepted by Bun.connect though missing from its types (bun 1.4).
    const options = {
      hostname: opts.target.host,
      port: opts.target.port,
      data: conn,
      socket: this.handlers,
      ...(opts.tls ? { tls: opts.tls } : {}),
      ...(opts.source ? { localAddress: opts.source } : {}),
    };
    try {
      Bun.connect<Link>(options as TCPSocketConnectOptions<Link>).catch((err: unknown) => this.failed(conn, err));
    } catch (err) {
      // Bad options (e.g. an unreadable key) throw synchronously.
      this.failed(conn, err);
    }
  }

  private failed(conn: Link, err: unknown): void {
    // connectError usually reported it already.
    if (conn.closed) return;
    conn.closed = true;
    try {
      this.ev.closed(conn, errorReason(err));
    } catch (e) {
      crash(this.ev, conn, e);
    }
  }
}
