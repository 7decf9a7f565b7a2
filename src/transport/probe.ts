/**
 * One dial to a broker address, for `cicada doctor`: is it reachable, how long TCP and TLS take,
 * and does its certificate verify against the devices' CA. With a device's certificate and key
 * the handshake is the mutual one the devices will do, with the TLS they will speak (Bun's, or
 * cicada's own with --tls-stack cicada). Nothing is sent after the handshake.
 */
import type { Socket, TLSOptions } from "bun";
import { X509Certificate } from "node:crypto";
import { DEFAULT_TLS_GROUPS, tlsOfferOptions, type TlsOffer } from "./connect.ts";
import { Tls13Client, TlsError, anchorsOf, groupName as tls13GroupName, verifyChain, type Tls13Sink } from "./tls13.ts";

/** With TlsOffer: the ClientHello the devices will send (--tls-version, --tls-groups). */
export interface ProbeTls extends TlsOffer {
  /** The CA the broker's certificate must chain to (PEM); without it, the chain is not checked. */
  ca?: string;
  /** A device's certificate and key, for brokers that require one. */
  cert?: string;
  key?: string;
}

export interface ProbeResult {
  ok: boolean;
  connectMs?: number;
  tlsMs?: number;
  /** The broker certificate's subject and expiry, when TLS got that far. */
  peer?: string;
  /** The TLS version the handshake settled on, e.g. TLSv1.3. */
  protocol?: string;
  /** The key-exchange group it settled on, e.g. X25519 (BoringSSL's name). */
  group?: string;
  /** What went wrong, or what was verified. */
  detail: string;
}

const reason = (err: unknown) => (err instanceof Error ? ((err as { code?: string }).code ?? err.message) : String(err));

/** The group's name from getEphemeralKeyInfo (`{ type: "ECDH", name: "X25519", size }`), when there is one. */
function groupName(info: unknown): string | undefined {
  const name = (info as { name?: unknown } | null)?.name;
  return typeof name === "string" && name ? name : undefined;
}

/** What a probe's dial shares, whichever TLS speaks: the clock, the timeout, the ways it ends before its handshake does. */
class Dial {
  readonly t0 = performance.now();
  connectMs: number | undefined;
  private readonly result = Promise.withResolvers<ProbeResult>();
  private readonly timer: ReturnType<typeof setTimeout>;

  constructor(timeoutMs: number) {
    this.timer = setTimeout(() => this.resolve({ ok: false, ...this.tcp(), detail: `no answer within ${timeoutMs} ms${this.connectMs !== undefined ? " (TCP connected, TLS did not finish)" : ""}` }), timeoutMs);
  }

  readonly resolve = (r: ProbeResult): void => this.result.resolve(r);

  tcp(): { connectMs?: number } {
    return this.connectMs !== undefined ? { connectMs: this.connectMs } : {};
  }

  opened(): void {
    this.connectMs = performance.now() - this.t0;
  }

  tlsMs(): number {
    return performance.now() - this.t0 - (this.connectMs ?? 0);
  }

  /** The socket handlers for a dial that ends before its handshake: refused, closed, an error. */
  endings() {
    return {
      close: () => this.resolve({ ok: false, ...this.tcp(), detail: this.connectMs === undefined ? "closed before connecting" : "closed during the TLS handshake (does it want a client certificate this CA signed?)" }),
      connectError: (_s: unknown, err: Error) => this.resolve({ ok: false, detail: `cannot connect: ${reason(err)}` }),
      error: (_s: unknown, err: Error) => this.resolve({ ok: false, ...this.tcp(), detail: reason(err) }),
    };
  }

  /** Connects with `connect` and waits for the outcome; the socket is closed after. */
  async run(connect: () => Promise<Socket<unknown>>): Promise<ProbeResult> {
    let socket: Socket<unknown> | undefined;
    try {
      socket = await connect();
    } catch (err) {
      this.resolve({ ok: false, detail: `cannot connect: ${reason(err)}` });
    }
    const result = await this.result.promise;
    clearTimeout(this.timer);
    socket?.end();
    return result;
  }
}

type Handshook = Pick<ProbeResult, "connectMs" | "tlsMs" | "peer" | "protocol" | "group">;

/** A handshake that succeeded: no CA to check against, or the broker's chain checked against it (`problem`: why it does not verify, null when it does). */
function verdict(base: Handshook, ca: string | undefined, problem: () => string | null): ProbeResult {
  if (!ca) return { ok: true, ...base, detail: "TLS handshake done (no CA given: the broker's certificate was not checked)" };
  const why = problem();
  if (why) return { ok: false, ...base, detail: `the broker's certificate does not verify against the CA: ${why}` };
  return { ok: true, ...base, detail: "the broker's certificate verifies against the CA" };
}

/** The broker certificate's subject and expiry, as a probe line shows them. */
function describe(x: { subject: string; validTo: string }): string {
  return `${x.subject.replace(/\n/g, ", ")}, valid until ${x.validTo}`;
}

/** Dials host:port (TLS when `tls` is given) and answers within `timeoutMs`; never throws. */
export async function probeBroker(host: string, port: number, tls: ProbeTls | null, timeoutMs = 5000): Promise<ProbeResult> {
  if (tls?.tlsStack === "cicada") return probeOwnTls(host, port, tls, timeoutMs);
  const d = new Dial(timeoutMs);
  const options: TLSOptions | undefined = tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: false, serverName: host, ...tlsOfferOptions(tls) } : undefined;
  return d.run(() =>
    Bun.connect({
      hostname: host,
      port,
      ...(options ? { tls: options } : {}),
      socket: {
        open() {
          d.opened();
          if (!tls) d.resolve({ ok: true, connectMs: d.connectMs!, detail: "reachable (plain TCP)" });
        },
        handshake(s, success, authorizationError) {
          const tlsMs = d.tlsMs();
          const x = s.getPeerX509Certificate();
          const protocol = success ? s.getTLSVersion() : "";
          const group = success ? groupName(s.getEphemeralKeyInfo()) : undefined;
          const base = { connectMs: d.connectMs ?? 0, tlsMs, ...(x ? { peer: describe(x) } : {}), ...(protocol ? { protocol } : {}), ...(group ? { group } : {}) };
          if (!success) return d.resolve({ ok: false, ...base, detail: `TLS handshake failed: ${reason(authorizationError)}` });
          d.resolve(verdict(base, tls?.ca, () => (authorizationError ? reason(authorizationError) : null)));
        },
        data() {},
        ...d.endings(),
      },
    }),
  );
}

/** The handshake the devices do with cicada's own TLS client (--tls-stack cicada), over a plain socket. */
async function probeOwnTls(host: string, port: number, tls: ProbeTls, timeoutMs: number): Promise<ProbeResult> {
  let client: Tls13Client;
  try {
    client = new Tls13Client({ cert: tls.cert ?? "", key: tls.key ?? "", host, groups: tls.tlsGroups ?? DEFAULT_TLS_GROUPS });
  } catch (err) {
    return { ok: false, detail: `TLS handshake failed: ${reason(err)}` };
  }
  const d = new Dial(timeoutMs);
  const sink: Tls13Sink<Socket<unknown>> = {
    send: (s, bytes) => void s.write(bytes),
    established: () => {
      const chain = client.peer!;
      const group = tls13GroupName(client.group);
      const base = { connectMs: d.connectMs ?? 0, tlsMs: d.tlsMs(), peer: describe(new X509Certificate(chain[0]!)), protocol: "TLSv1.3", ...(group ? { group } : {}) };
      d.resolve(verdict(base, tls.ca, () => verifyChain(chain, anchorsOf(tls.ca!), host)));
    },
    data: () => {},
  };
  return d.run(() =>
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          d.opened();
          s.write(client.hello());
        },
        data(s, bytes) {
          try {
            client.read(bytes, sink, s);
          } catch (err) {
            if (!(err instanceof TlsError)) throw err;
            d.resolve({ ok: false, connectMs: d.connectMs ?? 0, detail: `TLS handshake failed: ${err.message}` });
          }
        },
        ...d.endings(),
      },
    }),
  );
}
