/**
 * One dial to a broker address, for `cicada doctor`: is it reachable, how long TCP and TLS take,
 * and does its certificate verify against the devices' CA. With a device's certificate and key
 * the handshake is the mutual one the devices will do. Nothing is sent after the handshake.
 */
import type { Socket, TLSOptions } from "bun";
import { tlsOfferOptions, type TlsOffer } from "./connect.ts";

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

/** Dials host:port (TLS when `tls` is given) and answers within `timeoutMs`; never throws. */
export async function probeBroker(host: string, port: number, tls: ProbeTls | null, timeoutMs = 5000): Promise<ProbeResult> {
  const t0 = performance.now();
  let connectMs: number | undefined;
  const { promise, resolve } = Promise.withResolvers<ProbeResult>();
  const timer = setTimeout(() => resolve({ ok: false, ...(connectMs !== undefined ? { connectMs } : {}), detail: `no answer within ${timeoutMs} ms${connectMs !== undefined ? " (TCP connected, TLS did not finish)" : ""}` }), timeoutMs);
  const options: TLSOptions | undefined = tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: false, serverName: host, ...tlsOfferOptions(tls) } : undefined;
  let socket: Socket | undefined;
  try {
    socket = await Bun.connect({
      hostname: host,
      port,
      ...(options ? { tls: options } : {}),
      socket: {
        open() {
          connectMs = performance.now() - t0;
          if (!tls) resolve({ ok: true, connectMs, detail: "reachable (plain TCP)" });
        },
        handshake(s, success, authorizationError) {
          const tlsMs = performance.now() - t0 - (connectMs ?? 0);
          const x = s.getPeerX509Certificate();
          const peer = x ? `${x.subject.replace(/\n/g, ", ")}, valid until ${x.validTo}` : undefined;
          const protocol = success ? s.getTLSVersion() : "";
          const group = success ? groupName(s.getEphemeralKeyInfo()) : undefined;
          const base = { connectMs: connectMs ?? 0, tlsMs, ...(peer ? { peer } : {}), ...(protocol ? { protocol } : {}), ...(group ? { group } : {}) };
          if (!success) return resolve({ ok: false, ...base, detail: `TLS handshake failed: ${reason(authorizationError)}` });
          if (!tls?.ca) return resolve({ ok: true, ...base, detail: "TLS handshake done (no CA given: the broker's certificate was not checked)" });
          if (authorizationError) return resolve({ ok: false, ...base, detail: `the broker's certificate does not verify against the CA: ${reason(authorizationError)}` });
          resolve({ ok: true, ...base, detail: "the broker's certificate verifies against the CA" });
        },
        data() {},
        close() {
          resolve({ ok: false, ...(connectMs !== undefined ? { connectMs } : {}), detail: connectMs === undefined ? "closed before connecting" : "closed during the TLS handshake (does it want a client certificate this CA signed?)" });
        },
        connectError(_s, err) {
          resolve({ ok: false, detail: `cannot connect: ${reason(err)}` });
        },
        error(_s, err) {
          resolve({ ok: false, ...(connectMs !== undefined ? { connectMs } : {}), detail: reason(err) });
        },
      },
    });
  } catch (err) {
    resolve({ ok: false, detail: `cannot connect: ${reason(err)}` });
  }
  const result = await promise;
  clearTimeout(timer);
  socket?.end();
  return result;
}
