/**
 * cicada's own TLS 1.3 client (RFC 8446), for `--tls-stack cicada`: mutual TLS over a plain
 * Bun.connect socket, the handshake and the record layer in TypeScript, the cryptography in
 * node:crypto (BoringSSL underneath).
 *
 * Why: Bun's TLS sockets keep ~13 KB of native state per connection and ~3.7 KB more for each
 * device's own certificate context (README, "Where a held device's memory goes"), most of it
 * what a connection needs only during its handshake. Once this client's handshake is over, a
 * connection holds its two traffic keys and IVs, two sequence numbers and nothing else: the
 * device's key, the certificates and the key exchange are garbage as soon as the handshake ends.
 *
 * What it speaks: TLS 1.3 only; TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384; key
 * exchange X25519, P-256 or P-384 (the first of --tls-groups is the key share sent, and a
 * HelloRetryRequest for another of them is answered); client certificates with ECDSA (P-256,
 * P-384), RSA (RSA-PSS) or Ed25519 keys; KeyUpdate. No session resumption, no 0-RTT: a load
 * generator's device connects afresh like a device after a reboot. The broker's CertificateVerify
 * is always checked (it proves the broker holds its certificate's key); whether the certificate
 * itself is trusted (a pin, or the CA and the host name) is the dialer's decision, with
 * verifyChain below (see pins.ts and connect.ts).
 *
 * Over 400 lines because it is one protocol: the handshake, the key schedule and the record
 * layer share each connection's state, and the certificate checks and the byte readers they use
 * are small and used nowhere else.
 */
import {
  X509Certificate,
  constants,
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
  type ECDH,
  type KeyObject,
} from "node:crypto";
import { isIP } from "node:net";
import { concat } from "./outbox.ts";

/** A handshake or record the client cannot accept; `message` is the failure's reason (tls_…). */
export class TlsError extends Error {}

// Record content types (§5.1) and handshake message types (§4).
const CHANGE_CIPHER_SPEC = 20;
const ALERT = 21;
const HANDSHAKE = 22;
const APPLICATION_DATA = 23;
const CLIENT_HELLO = 1;
const SERVER_HELLO = 2;
const NEW_SESSION_TICKET = 4;
const ENCRYPTED_EXTENSIONS = 8;
const CERTIFICATE = 11;
const CERTIFICATE_REQUEST = 13;
const CERTIFICATE_VERIFY = 15;
const FINISHED = 20;
const KEY_UPDATE = 24;
const MESSAGE_HASH = 254;
// Extensions (§4.2).
const EXT_SERVER_NAME = 0;
const EXT_SUPPORTED_GROUPS = 10;
const EXT_SIGNATURE_ALGORITHMS = 13;
const EXT_SUPPORTED_VERSIONS = 43;
const EXT_COOKIE = 44;
const EXT_KEY_SHARE = 51;
const TLS13 = 0x0304;
/** A ServerHello with this random is a HelloRetryRequest (§4.1.3). */
const HRR_RANDOM = Buffer.from("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c", "hex");
const MAX_PLAINTEXT = 16384;
/** §5.2: a TLSCiphertext may carry at most 2^14 + 256 bytes. */
const MAX_CIPHERTEXT = MAX_PLAINTEXT + 256;
const TAG = 16;
/** The AEAD's options, one object for every record. */
const GCM = { authTagLength: TAG } as const;
/** A handshake message past this is refused (a certificate chain is a few KB). */
const MAX_HANDSHAKE = 64 * 1024;

interface Suite {
  id: number;
  cipher: "aes-128-gcm" | "aes-256-gcm";
  keyLen: number;
  hash: "sha256" | "sha384";
  hashLen: number;
}
/** The cipher suites offered, in order (node:crypto under Bun has no ChaCha20-Poly1305). */
const SUITES: readonly Suite[] = [
  { id: 0x1301, cipher: "aes-128-gcm", keyLen: 16, hash: "sha256", hashLen: 32 },
  { id: 0x1302, cipher: "aes-256-gcm", keyLen: 32, hash: "sha384", hashLen: 48 },
];

/** Key-exchange groups this client computes: the names --tls-groups takes (BoringSSL's), with their code points. */
export const TLS13_GROUPS: Readonly<Record<string, number>> = { X25519: 0x001d, "P-256": 0x0017, "P-384": 0x0018 };
const ECDH_CURVE: Readonly<Record<number, string>> = { 0x0017: "prime256v1", 0x0018: "secp384r1" };
/** X25519's SubjectPublicKeyInfo before the 32 key bytes (RFC 8410). */
const X25519_SPKI = Buffer.from("302a300506032b656e032100", "hex");

/** Signature schemes (§4.2.3): how each is verified with node:crypto. */
interface Scheme {
  hash: string | null;
  pss: boolean;
}
const SCHEMES: Readonly<Record<number, Scheme>> = {
  0x0403: { hash: "sha256", pss: false }, // ecdsa_secp256r1_sha256
  0x0503: { hash: "sha384", pss: false }, // ecdsa_secp384r1_sha384
  0x0603: { hash: "sha512", pss: false }, // ecdsa_secp521r1_sha512
  0x0804: { hash: "sha256", pss: true }, // rsa_pss_rsae_sha256
  0x0805: { hash: "sha384", pss: true },
  0x0806: { hash: "sha512", pss: true },
  0x0807: { hash: null, pss: false }, // ed25519
  0x0809: { hash: "sha256", pss: true }, // rsa_pss_pss_sha256
  0x080a: { hash: "sha384", pss: true },
  0x080b: { hash: "sha512", pss: true },
};
/**
 * What signature_algorithms offers: the schemes above for CertificateVerify, and RSA PKCS#1
 * (0x0401, 0x0501, 0x0601), which TLS 1.3 allows only in certificates, where CAs still use it.
 */
const OFFERED_SCHEMES = [0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0809, 0x080a, 0x080b, 0x0401, 0x0501, 0x0601];

/** TLS alert descriptions (§6), for the failure's reason. */
const ALERTS: Readonly<Record<number, string>> = {
  0: "close_notify",
  10: "unexpected_message",
  20: "bad_record_mac",
  22: "record_overflow",
  40: "handshake_failure",
  42: "bad_certificate",
  43: "unsupported_certificate",
  44: "certificate_revoked",
  45: "certificate_expired",
  46: "certificate_unknown",
  47: "illegal_parameter",
  48: "unknown_ca",
  49: "access_denied",
  50: "decode_error",
  51: "decrypt_error",
  70: "protocol_version",
  71: "insufficient_security",
  80: "internal_error",
  90: "user_canceled",
  109: "missing_extension",
  110: "unsupported_extension",
  112: "unrecognized_name",
  116: "certificate_required",
  120: "no_application_protocol",
};

/** A group's name (TLS13_GROUPS'), e.g. for a probe's report. */
export function groupName(code: number): string | undefined {
  return Object.keys(TLS13_GROUPS).find((k) => TLS13_GROUPS[k] === code);
}

/** Why `groups` (colon-separated) is not a list this client computes, or null when it is. */
export function tls13GroupsProblem(groups: string): string | null {
  const unknown = groups.split(":").filter((g) => !(g in TLS13_GROUPS));
  return unknown.length ? `names a group --tls-stack cicada does not compute (${unknown.join(", ")}; it computes ${Object.keys(TLS13_GROUPS).join(", ")})` : null;
}

/** What one handshake needs: the device's identity and the broker's name. */
export interface Tls13Options {
  /** The device's certificate (PEM; intermediates after it are sent too) and private key (PEM); empty: none (a broker that asks gets an empty Certificate). */
  cert: string;
  key: string;
  /** The broker's host: sent as SNI unless it is an IP address. */
  host: string;
  /** Key-exchange groups in order of preference, colon-separated (TLS13_GROUPS' names). */
  groups: string;
}

/** Where the client's output goes; one shared object for every connection, with the caller's context. */
export interface Tls13Sink<C> {
  /** Bytes for the wire (handshake flights, alerts, KeyUpdate). */
  send(ctx: C, bytes: Uint8Array): void;
  /** The handshake is done: the broker's certificates are in `peer`; application data may flow. */
  established(ctx: C): void;
  /** Application data from the broker. */
  data(ctx: C, bytes: Uint8Array): void;
}

/** The key exchange's own half, until the ServerHello. */
interface Share {
  group: number;
  x25519?: KeyObject;
  ecdh?: ECDH;
  pub: Uint8Array;
}

/** State only the handshake needs; dropped (with the device's key) once it is over. */
class Handshake {
  readonly random = randomBytes(32);
  share: Share;
  /** Handshake messages so far, whole (type and length included), for the transcript hash. */
  readonly transcript: Uint8Array[] = [];
  /** Handshake bytes received but not yet a whole message. */
  buf: Uint8Array | null = null;
  suite: Suite | null = null;
  /** The suite a HelloRetryRequest named, which the ServerHello must keep (null: no retry asked). */
  retrySuite: Suite | null = null;
  /** The master secret (§7.1), and the handshake traffic secrets. */
  master: Buffer | null = null;
  clientSecret: Buffer | null = null;
  serverSecret: Buffer | null = null;
  /** CertificateRequest's context and the schemes it allows (null: the broker asked for no certificate). */
  requestContext: Uint8Array | null = null;
  requestSchemes: number[] = [];
  peerKey: KeyObject | null = null;
  /** What comes next from the server: 0 EncryptedExtensions, 1 CertificateRequest/Certificate, 2 CertificateVerify, 3 Finished. */
  expect = 0;

  constructor(
    readonly opts: Tls13Options,
    readonly groups: number[],
  ) {
    this.share = keyShare(groups[0]!);
  }
}

/** Per-connection TLS state. After the handshake: keys, IVs, sequence numbers and a partial record. */
export class Tls13Client {
  private hs: Handshake | null;
  private suite: Suite = SUITES[0]!;
  /**
   * Both directions' traffic keys in one buffer (one object per connection, not six): the read
   * side's key, IV and secret (kept for KeyUpdate, §4.6.3), then the write side's. Null until
   * the ServerHello.
   */
  private keys: Buffer | null = null;
  /** Bumped at each change of read keys: a key change must end its record. */
  private readEpoch = 0;
  private readSeq = 0;
  private writeSeq = 0;
  /** Bytes of a record not yet complete. */
  private rx: Uint8Array | null = null;
  /** Post-handshake messages split over records. */
  private post: Uint8Array | null = null;
  /** The broker's certificate chain (DER, leaf first), until the dialer has checked it. */
  peer: Uint8Array[] | null = null;
  /** The CAs the dialer checks `peer` against (null: a pin decides, or nothing); dropped after the check. */
  anchors: readonly X509Certificate[] | null = null;
  /** The broker's host, for the dialer's check of its certificate's names. */
  readonly host: string;
  /** The key-exchange group the handshake used (its code point; 0 before the ServerHello). */
  group = 0;
  established = false;

  constructor(opts: Tls13Options) {
    this.host = opts.host;
    const groups = opts.groups.split(":").map((g) => TLS13_GROUPS[g]!);
    if (groups.some((g) => g === undefined)) throw new TlsError("tls_unsupported_group");
    this.hs = new Handshake(opts, groups);
  }

  /** The first flight: the ClientHello record. */
  hello(): Uint8Array {
    const hs = this.hs!;
    const msg = clientHello(hs, null);
    hs.transcript.push(msg);
    return record(HANDSHAKE, msg, 0x0301);
  }

  /**
   * Takes bytes from the socket: handshake messages are answered through `sink.send`,
   * application data goes to `sink.data`. Throws TlsError when the connection must fail.
   */
  read<C>(bytes: Uint8Array, sink: Tls13Sink<C>, ctx: C): void {
    let buf = bytes;
    if (this.rx) {
      buf = concat([this.rx, bytes]);
      this.rx = null;
    }
    let off = 0;
    while (buf.length - off >= 5) {
      const type = buf[off]!;
      const len = (buf[off + 3]! << 8) | buf[off + 4]!;
      if (len > MAX_CIPHERTEXT) throw new TlsError("tls_record_overflow");
      if (buf.length - off < 5 + len) break;
      const header = buf.subarray(off, off + 5);
      const body = buf.subarray(off + 5, off + 5 + len);
      off += 5 + len;
      this.record(type, header, body, sink, ctx);
    }
    if (off < buf.length) this.rx = buf.slice(off);
  }

  /** Application data as records for the wire. */
  seal(data: Uint8Array): Uint8Array {
    if (data.length <= MAX_PLAINTEXT) return this.encrypt(APPLICATION_DATA, data);
    const parts: Uint8Array[] = [];
    for (let at = 0; at < data.length; at += MAX_PLAINTEXT) parts.push(this.encrypt(APPLICATION_DATA, data.subarray(at, at + MAX_PLAINTEXT)));
    return concat(parts);
  }

  private record<C>(type: number, header: Uint8Array, body: Uint8Array, sink: Tls13Sink<C>, ctx: C): void {
    if (type === CHANGE_CIPHER_SPEC && !this.established) return; // middlebox compatibility (§D.4): ignored
    if (!this.keys) {
      // Before the ServerHello's keys: plaintext handshake or alert only.
      if (type === ALERT) return alert(body);
      if (type !== HANDSHAKE) throw new TlsError("tls_unexpected_message");
      return this.handshakeBytes(body, sink, ctx);
    }
    if (type !== APPLICATION_DATA) throw new TlsError("tls_unexpected_message");
    const plain = this.decrypt(header, body);
    // TLSInnerPlaintext: content, then its real type, then zero padding.
    let end = plain.length - 1;
    while (end >= 0 && plain[end] === 0) end--;
    if (end < 0) throw new TlsError("tls_unexpected_message");
    const inner = plain[end]!;
    const content = plain.subarray(0, end);
    if (inner === APPLICATION_DATA) {
      if (!this.established) throw new TlsError("tls_unexpected_message");
      if (content.length) sink.data(ctx, content);
    } else if (inner === HANDSHAKE) {
      if (this.hs) this.handshakeBytes(content, sink, ctx);
      else this.postHandshake(content, sink, ctx);
    } else if (inner === ALERT) alert(content);
    else throw new TlsError("tls_unexpected_message");
  }

  // ---- the handshake ------------------------------------------------------------------------

  private handshakeBytes<C>(bytes: Uint8Array, sink: Tls13Sink<C>, ctx: C): void {
    const hs = this.hs!;
    const epoch = this.readEpoch;
    hs.buf = eachMessage(hs.buf, bytes, (msg, more) => {
      this.message(msg, sink, ctx);
      if (this.readEpoch === epoch) return true;
      // A key change (after the ServerHello, after the server's Finished) must end its record (§5.1).
      if (more) throw new TlsError("tls_unexpected_message");
      return false;
    });
  }

  private message<C>(msg: Uint8Array, sink: Tls13Sink<C>, ctx: C): void {
    const hs = this.hs!;
    const type = msg[0]!;
    const body = new Reader(msg, 4);
    if (!hs.suite) {
      if (type !== SERVER_HELLO) throw new TlsError("tls_unexpected_message");
      return this.serverHello(hs, msg, body, sink, ctx);
    }
    switch (hs.expect) {
      case 0:
        if (type !== ENCRYPTED_EXTENSIONS) throw new TlsError("tls_unexpected_message");
        hs.transcript.push(msg);
        hs.expect = 1;
        return;
      case 1:
        if (type === CERTIFICATE_REQUEST && hs.requestContext === null) {
          hs.transcript.push(msg);
          return certificateRequest(hs, body);
        }
        if (type !== CERTIFICATE) throw new TlsError("tls_unexpected_message");
        hs.transcript.push(msg);
        this.peer = serverCertificates(body);
        hs.peerKey = peerKey(this.peer[0]!);
        hs.expect = 2;
        return;
      case 2: {
        if (type !== CERTIFICATE_VERIFY) throw new TlsError("tls_unexpected_message");
        const scheme = body.u16();
        const signature = body.vec(2);
        body.end();
        if (!checkSignature(hs.peerKey!, scheme, signed("server", transcriptHash(hs)), signature)) throw new TlsError("tls_bad_server_signature");
        hs.transcript.push(msg);
        hs.expect = 3;
        return;
      }
      case 3: {
        if (type !== FINISHED) throw new TlsError("tls_unexpected_message");
        const expected = finished(hs.suite, hs.serverSecret!, transcriptHash(hs));
        if (!equal(msg.subarray(4), expected)) throw new TlsError("tls_bad_finished");
        hs.transcript.push(msg);
        return this.clientFinish(hs, sink, ctx);
      }
    }
  }

  private serverHello<C>(hs: Handshake, msg: Uint8Array, r: Reader, sink: Tls13Sink<C>, ctx: C): void {
    r.u16(); // legacy_version
    const random = r.bytes(32);
    r.vec(1); // legacy_session_id_echo: ours was empty
    const suiteId = r.u16();
    if (r.u8() !== 0) throw new TlsError("tls_illegal_parameter");
    const suite = SUITES.find((s) => s.id === suiteId);
    if (!suite) throw new TlsError("tls_illegal_parameter");
    let version = 0;
    let theirs: { group: number; key: Uint8Array | null } | null = null;
    let cookie: Uint8Array | null = null;
    const retry = equal(random, HRR_RANDOM);
    const exts = new Reader(r.vec(2));
    r.end();
    while (exts.left()) {
      const type = exts.u16();
      const data = new Reader(exts.vec(2));
      if (type === EXT_SUPPORTED_VERSIONS) version = data.u16();
      else if (type === EXT_KEY_SHARE) theirs = { group: data.u16(), key: retry ? null : data.vec(2) };
      else if (type === EXT_COOKIE && retry) cookie = data.vec(2);
    }
    // Without supported_versions 1.3 the broker chose TLS 1.2 or older, which this client does not speak.
    if (version !== TLS13) throw new TlsError("tls_version_not_1_3");
    if (retry) return this.retry(hs, msg, suite, theirs?.group ?? hs.share.group, cookie, sink, ctx);
    if (!theirs?.key || theirs.group !== hs.share.group) throw new TlsError("tls_illegal_parameter");
    // The suite a HelloRetryRequest named stays (§4.1.4).
    if (hs.retrySuite && hs.retrySuite.id !== suite.id) throw new TlsError("tls_illegal_parameter");
    hs.suite = suite;
    this.suite = suite;
    this.group = theirs.group;
    hs.transcript.push(msg);
    const shared = agree(hs.share, theirs.key);
    // §7.1: early secret (no PSK), then the handshake secret from the key exchange.
    const zeros = Buffer.alloc(suite.hashLen);
    const early = hmac(suite.hash, zeros, zeros);
    const hsSecret = hmac(suite.hash, deriveSecret(suite, early, "derived", emptyHash(suite)), shared);
    const th = transcriptHash(hs);
    hs.clientSecret = deriveSecret(suite, hsSecret, "c hs traffic", th);
    hs.serverSecret = deriveSecret(suite, hsSecret, "s hs traffic", th);
    hs.master = hmac(suite.hash, deriveSecret(suite, hsSecret, "derived", emptyHash(suite)), zeros);
    this.setRead(hs.serverSecret);
    this.setWrite(hs.clientSecret);
  }

  /** A HelloRetryRequest: the broker wants a key share in another group we offered (§4.1.4). */
  private retry<C>(hs: Handshake, msg: Uint8Array, suite: Suite, group: number, cookie: Uint8Array | null, sink: Tls13Sink<C>, ctx: C): void {
    if (hs.retrySuite || !hs.groups.includes(group) || group === hs.share.group) throw new TlsError("tls_illegal_parameter");
    hs.suite = null;
    // The transcript restarts with a synthetic message_hash of the first ClientHello (§4.4.1).
    const first = createHash(suite.hash).update(hs.transcript[0]!).digest();
    hs.transcript.length = 0;
    hs.transcript.push(concat([Uint8Array.of(MESSAGE_HASH, 0, 0, first.length), first]), msg);
    hs.share = keyShare(group);
    const hello = clientHello(hs, cookie);
    hs.transcript.push(hello);
    hs.retrySuite = suite;
    sink.send(ctx, record(HANDSHAKE, hello, 0x0303));
  }

  /** After the server's Finished: our certificate, its proof and our Finished; then application keys. */
  private clientFinish<C>(hs: Handshake, sink: Tls13Sink<C>, ctx: C): void {
    const suite = hs.suite!;
    const th = transcriptHash(hs);
    const clientApp = deriveSecret(suite, hs.master!, "c ap traffic", th);
    const serverApp = deriveSecret(suite, hs.master!, "s ap traffic", th);
    const flight: Uint8Array[] = [];
    if (hs.requestContext !== null) {
      const certs = pemBlocks(hs.opts.cert, "CERTIFICATE");
      const certMsg = clientCertificate(hs.requestContext, certs);
      hs.transcript.push(certMsg);
      flight.push(certMsg);
    }
    // Without a certificate the Certificate message is empty and nothing is signed (§4.4.2).
    if (hs.requestContext !== null && hs.opts.cert) {
      let key: KeyObject;
      try {
        key = createPrivateKey(hs.opts.key);
      } catch {
        throw new TlsError("tls_bad_client_key");
      }
      const scheme = schemeFor(key, hs.requestSchemes);
      const proof = signWith(key, scheme, signed("client", transcriptHash(hs)));
      const verifyMsg = handshakeMessage(CERTIFICATE_VERIFY, concat([u16(scheme), u16(proof.length), proof]));
      hs.transcript.push(verifyMsg);
      flight.push(verifyMsg);
    }
    const fin = handshakeMessage(FINISHED, finished(suite, hs.clientSecret!, transcriptHash(hs)));
    flight.push(fin);
    const out = this.encrypt(HANDSHAKE, concat(flight));
    this.hs = null;
    this.setRead(serverApp);
    this.setWrite(clientApp);
    this.established = true;
    sink.send(ctx, out);
    sink.established(ctx);
  }

  /** After the handshake: NewSessionTicket (ignored: no resumption) and KeyUpdate. */
  private postHandshake<C>(bytes: Uint8Array, sink: Tls13Sink<C>, ctx: C): void {
    this.post = eachMessage(this.post, bytes, (msg) => {
      const type = msg[0]!;
      if (type === NEW_SESSION_TICKET) return true;
      if (type !== KEY_UPDATE || msg.length !== 5 || msg[4]! > 1) throw new TlsError("tls_unexpected_message");
      this.setRead(expandLabel(this.suite, this.secret(0), "traffic upd", EMPTY, this.suite.hashLen));
      if (msg[4] === 1) {
        // update_requested: answer with our own KeyUpdate, then switch our keys.
        sink.send(ctx, this.encrypt(HANDSHAKE, handshakeMessage(KEY_UPDATE, Uint8Array.of(0))));
        this.setWrite(expandLabel(this.suite, this.secret(this.side()), "traffic upd", EMPTY, this.suite.hashLen));
      }
      return true;
    });
  }

  // ---- records ------------------------------------------------------------------------------

  /** Bytes of one direction in `keys`: key, IV, secret. */
  private side(): number {
    return this.suite.keyLen + 12 + this.suite.hashLen;
  }

  private secret(at: number): Buffer {
    return this.keys!.subarray(at + this.suite.keyLen + 12, at + this.side());
  }

  /** Keys and IV from `secret` (§7.3) into the direction at `at` (0: read, side(): write). */
  private setKeys(at: number, secret: Buffer): void {
    const { keyLen } = this.suite;
    this.keys ??= Buffer.alloc(2 * this.side());
    this.keys.set(expandLabel(this.suite, secret, "key", EMPTY, keyLen), at);
    this.keys.set(expandLabel(this.suite, secret, "iv", EMPTY, 12), at + keyLen);
    this.keys.set(secret, at + keyLen + 12);
  }

  private setRead(secret: Buffer): void {
    this.setKeys(0, secret);
    this.readEpoch++;
    this.readSeq = 0;
  }

  private setWrite(secret: Buffer): void {
    this.setKeys(this.side(), secret);
    this.writeSeq = 0;
  }

  private decrypt(header: Uint8Array, body: Uint8Array): Buffer {
    if (body.length < TAG + 1) throw new TlsError("tls_bad_record_mac");
    const { keyLen } = this.suite;
    const d = createDecipheriv(this.suite.cipher, this.keys!.subarray(0, keyLen), nonce(this.keys!, keyLen, this.readSeq++), GCM);
    d.setAAD(header);
    d.setAuthTag(body.subarray(body.length - TAG));
    const plain = d.update(body.subarray(0, body.length - TAG));
    try {
      d.final();
    } catch {
      throw new TlsError("tls_bad_record_mac");
    }
    return plain;
  }

  /** One record: the header, `data` and its content type encrypted in place (one update call), the tag. */
  private encrypt(type: number, data: Uint8Array): Uint8Array {
    const n = data.length;
    const len = n + 1 + TAG;
    const out = new Uint8Array(5 + len);
    out[0] = APPLICATION_DATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = len >> 8;
    out[4] = len & 0xff;
    out.set(data, 5);
    out[5 + n] = type;
    const at = this.side();
    const { keyLen } = this.suite;
    const c = createCipheriv(this.suite.cipher, this.keys!.subarray(at, at + keyLen), nonce(this.keys!, at + keyLen, this.writeSeq++), GCM);
    c.setAAD(out.subarray(0, 5));
    out.set(c.update(out.subarray(5, 6 + n)), 5);
    c.final();
    out.set(c.getAuthTag(), 6 + n);
    return out;
  }
}

// ---- certificate checks ---------------------------------------------------------------------

/**
 * Whether the broker's chain (DER, leaf first) leads to one of `anchors` and names `host`; the
 * reason it does not, in the words Bun's TLS uses (cert_has_expired, tls_cert_altname_invalid, …),
 * or null when it does. Checked: each signature up the chain, validity dates, that each issuer is
 * a CA, the host name or IP address against the leaf's names. Not checked: revocation (CRL, OCSP),
 * as by Bun's sockets; path length and name constraints.
 */
export function verifyChain(chain: readonly Uint8Array[], anchors: readonly X509Certificate[], host: string, now = Date.now()): string | null {
  let certs: X509Certificate[];
  try {
    certs = chain.map((der) => new X509Certificate(der));
  } catch {
    return "tls_bad_certificate";
  }
  const leaf = certs[0];
  if (!leaf) return "tls_no_certificate";
  let cur = leaf;
  for (let depth = 0; depth < 10; depth++) {
    if (now < cur.validFromDate.getTime()) return "cert_not_yet_valid";
    if (now > cur.validToDate.getTime()) return "cert_has_expired";
    if (anchors.some((a) => a.raw.equals(cur.raw))) return hostProblem(leaf, host);
    // An issuer by name (and key identifier), then by signature: a name that matches over a
    // signature that does not is a forgery or a corrupted certificate, not an unknown CA.
    const named = anchors.filter((a) => cur.checkIssued(a));
    if (named.length) {
      const anchor = named.find((a) => cur.verify(a.publicKey));
      if (!anchor) return "cert_signature_failure";
      if (now > anchor.validToDate.getTime()) return "cert_has_expired";
      if (now < anchor.validFromDate.getTime()) return "cert_not_yet_valid";
      return hostProblem(leaf, host);
    }
    const next = certs.find((c) => c !== cur && cur.checkIssued(c));
    if (!next) {
      if (cur.checkIssued(cur)) return depth === 0 ? "depth_zero_self_signed_cert" : "self_signed_cert_in_chain";
      return "unable_to_get_issuer_cert_locally";
    }
    if (!next.ca) return "invalid_ca";
    if (!cur.verify(next.publicKey)) return "cert_signature_failure";
    cur = next;
  }
  return "cert_chain_too_long";
}

function hostProblem(leaf: X509Certificate, host: string): string | null {
  const ok = isIP(host) ? leaf.checkIP(host) : leaf.checkHost(host);
  return ok ? null : "tls_cert_altname_invalid";
}

/** The CA certificates in a PEM bundle. */
export function anchorsOf(pem: string): X509Certificate[] {
  return pemBlocks(pem, "CERTIFICATE").map((der) => new X509Certificate(der));
}

// ---- messages -------------------------------------------------------------------------------

/**
 * Whole handshake messages (type, 3-byte length, body) from `held` (the bytes an earlier record
 * left) and `bytes`, each to `take` with whether more bytes follow it; `take` returns false to stop
 * there. Returns what is left of a message not yet whole, or null.
 */
function eachMessage(held: Uint8Array | null, bytes: Uint8Array, take: (msg: Uint8Array, more: boolean) => boolean): Uint8Array | null {
  const buf = held ? concat([held, bytes]) : bytes;
  let off = 0;
  while (buf.length - off >= 4) {
    const len = (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!;
    if (len > MAX_HANDSHAKE) throw new TlsError("tls_handshake_too_large");
    if (buf.length - off < 4 + len) break;
    const msg = buf.subarray(off, off + 4 + len);
    off += 4 + len;
    if (!take(msg, off < buf.length)) return null;
  }
  if (off === buf.length) return null;
  if (buf.length - off > MAX_HANDSHAKE) throw new TlsError("tls_handshake_too_large");
  return buf.slice(off);
}

const EMPTY = new Uint8Array(0);

function clientHello(hs: Handshake, cookie: Uint8Array | null): Uint8Array {
  const exts: Uint8Array[] = [];
  const host = hs.opts.host;
  if (!isIP(host)) {
    const name = Buffer.from(host, "ascii");
    exts.push(extension(EXT_SERVER_NAME, concat([u16(name.length + 3), Uint8Array.of(0), u16(name.length), name])));
  }
  exts.push(extension(EXT_SUPPORTED_VERSIONS, Uint8Array.of(2, 0x03, 0x04)));
  exts.push(extension(EXT_SUPPORTED_GROUPS, concat([u16(hs.groups.length * 2), ...hs.groups.map(u16)])));
  exts.push(extension(EXT_SIGNATURE_ALGORITHMS, concat([u16(OFFERED_SCHEMES.length * 2), ...OFFERED_SCHEMES.map(u16)])));
  const share = concat([u16(hs.share.group), u16(hs.share.pub.length), hs.share.pub]);
  exts.push(extension(EXT_KEY_SHARE, concat([u16(share.length), share])));
  if (cookie) exts.push(extension(EXT_COOKIE, concat([u16(cookie.length), cookie])));
  const extBytes = concat(exts);
  const suites = concat([u16(SUITES.length * 2), ...SUITES.map((s) => u16(s.id))]);
  // legacy_version 1.2, random, an empty legacy_session_id, the suites, null compression.
  return handshakeMessage(CLIENT_HELLO, concat([u16(0x0303), hs.random, Uint8Array.of(0), suites, Uint8Array.of(1, 0), u16(extBytes.length), extBytes]));
}

function certificateRequest(hs: Handshake, r: Reader): void {
  hs.requestContext = r.vec(1).slice();
  const exts = new Reader(r.vec(2));
  r.end();
  while (exts.left()) {
    const type = exts.u16();
    const data = new Reader(exts.vec(2));
    if (type !== EXT_SIGNATURE_ALGORITHMS) continue;
    const list = new Reader(data.vec(2));
    while (list.left()) hs.requestSchemes.push(list.u16());
  }
}

function serverCertificates(r: Reader): Uint8Array[] {
  if (r.vec(1).length !== 0) throw new TlsError("tls_illegal_parameter"); // request context: empty from a server
  const list = new Reader(r.vec(3));
  r.end();
  const certs: Uint8Array[] = [];
  while (list.left()) {
    certs.push(list.vec(3).slice());
    list.vec(2); // per-certificate extensions (OCSP, SCT): not used
  }
  if (certs.length === 0) throw new TlsError("tls_no_certificate");
  return certs;
}

function clientCertificate(context: Uint8Array, certs: readonly Uint8Array[]): Uint8Array {
  const entries = concat(certs.flatMap((der) => [u24(der.length), der, u16(0)]));
  return handshakeMessage(CERTIFICATE, concat([Uint8Array.of(context.length), context, u24(entries.length), entries]));
}

function handshakeMessage(type: number, body: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(type), u24(body.length), body]);
}

function extension(type: number, data: Uint8Array): Uint8Array {
  return concat([u16(type), u16(data.length), data]);
}

function record(type: number, data: Uint8Array, version: number): Uint8Array {
  return concat([Uint8Array.of(type), u16(version), u16(data.length), data]);
}

function alert(body: Uint8Array): never {
  const desc = body[1] ?? -1;
  if (desc === 0) throw new TlsError("tls_closed");
  throw new TlsError(`tls_alert_${ALERTS[desc] ?? desc}`);
}

// ---- key exchange and signatures --------------------------------------------------------------

function keyShare(group: number): Share {
  if (group === TLS13_GROUPS.X25519) {
    const { publicKey, privateKey } = generateKeyPairSync("x25519");
    const spki = publicKey.export({ format: "der", type: "spki" });
    return { group, x25519: privateKey, pub: spki.subarray(spki.length - 32) };
  }
  const ecdh = createECDH(ECDH_CURVE[group]!);
  return { group, ecdh, pub: ecdh.generateKeys() };
}

function agree(share: Share, peer: Uint8Array): Buffer {
  try {
    if (share.x25519) {
      if (peer.length !== 32) throw new Error();
      return diffieHellman({ privateKey: share.x25519, publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI, peer]), format: "der", type: "spki" }) });
    }
    // NIST curves: the shared secret is the x coordinate (§7.4.2), which computeSecret returns.
    return share.ecdh!.computeSecret(peer);
  } catch {
    throw new TlsError("tls_illegal_parameter");
  }
}

function peerKey(der: Uint8Array): KeyObject {
  try {
    return new X509Certificate(der).publicKey;
  } catch {
    throw new TlsError("tls_bad_certificate");
  }
}

/** The content a CertificateVerify signs (§4.4.3). */
function signed(side: "server" | "client", hash: Buffer): Buffer {
  return Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from(`TLS 1.3, ${side} CertificateVerify\0`, "latin1"), hash]);
}

function checkSignature(key: KeyObject, scheme: number, data: Buffer, signature: Uint8Array): boolean {
  const s = SCHEMES[scheme];
  if (!s) throw new TlsError("tls_illegal_parameter");
  try {
    if (s.pss) return verify(s.hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    return verify(s.hash, data, key, signature);
  } catch {
    return false;
  }
}

/** The scheme our key signs with, among those the broker's CertificateRequest allows. */
function schemeFor(key: KeyObject, allowed: number[]): number {
  const type = key.asymmetricKeyType;
  let scheme = 0;
  if (type === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    scheme = curve === "prime256v1" ? 0x0403 : curve === "secp384r1" ? 0x0503 : curve === "secp521r1" ? 0x0603 : 0;
  } else if (type === "rsa") scheme = 0x0804;
  else if (type === "rsa-pss") scheme = 0x0809;
  else if (type === "ed25519") scheme = 0x0807;
  if (!scheme) throw new TlsError("tls_unsupported_client_key");
  if (allowed.length && !allowed.includes(scheme)) throw new TlsError("tls_no_common_signature_scheme");
  return scheme;
}

function signWith(key: KeyObject, scheme: number, data: Buffer): Buffer {
  const s = SCHEMES[scheme]!;
  if (s.pss) return sign(s.hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  return sign(s.hash, data, key);
}

// ---- the key schedule (§7.1) ---------------------------------------------------------------------

function hmac(hash: string, key: Uint8Array, data: Uint8Array): Buffer {
  return createHmac(hash, key).update(data).digest();
}

/** HKDF-Expand-Label, for lengths up to one hash (all TLS 1.3 asks for): one HMAC block. */
function expandLabel(suite: Suite, secret: Uint8Array, label: string, context: Uint8Array, length: number): Buffer {
  const name = Buffer.from(`tls13 ${label}`, "latin1");
  const info = concat([u16(length), Uint8Array.of(name.length), name, Uint8Array.of(context.length), context, Uint8Array.of(1)]);
  return hmac(suite.hash, secret, info).subarray(0, length);
}

function deriveSecret(suite: Suite, secret: Uint8Array, label: string, hash: Uint8Array): Buffer {
  return expandLabel(suite, secret, label, hash, suite.hashLen);
}

function emptyHash(suite: Suite): Buffer {
  return createHash(suite.hash).digest();
}

function transcriptHash(hs: Handshake): Buffer {
  const h = createHash((hs.suite ?? SUITES[0]!).hash);
  for (const m of hs.transcript) h.update(m);
  return h.digest();
}

function finished(suite: Suite, base: Uint8Array, hash: Uint8Array): Buffer {
  return hmac(suite.hash, expandLabel(suite, base, "finished", EMPTY, suite.hashLen), hash);
}

/** The per-record nonce (§5.3): the IV (12 bytes of `keys` at `at`) XOR the sequence number, big-endian in the last 8 bytes. */
const NONCE = Buffer.alloc(12);
function nonce(keys: Buffer, at: number, seq: number): Buffer {
  keys.copy(NONCE, 0, at, at + 12);
  let s = seq;
  for (let i = 11; i >= 4 && s > 0; i--) {
    NONCE[i] = NONCE[i]! ^ (s & 0xff);
    s = Math.floor(s / 256);
  }
  return NONCE;
}

// ---- bytes ------------------------------------------------------------------------------------

/** Reads TLS's length-prefixed fields; a field past the end is a decode error. */
class Reader {
  constructor(
    private readonly buf: Uint8Array,
    private at = 0,
  ) {}

  left(): number {
    return this.buf.length - this.at;
  }

  u8(): number {
    if (this.at + 1 > this.buf.length) throw new TlsError("tls_decode_error");
    return this.buf[this.at++]!;
  }

  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  bytes(n: number): Uint8Array {
    if (this.at + n > this.buf.length) throw new TlsError("tls_decode_error");
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  /** A field with a `width`-byte length in front. */
  vec(width: 1 | 2 | 3): Uint8Array {
    let n = 0;
    for (let i = 0; i < width; i++) n = (n << 8) | this.u8();
    return this.bytes(n);
  }

  end(): void {
    if (this.at !== this.buf.length) throw new TlsError("tls_decode_error");
  }
}

function u16(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

function u24(n: number): Uint8Array {
  return Uint8Array.of(n >> 16, (n >> 8) & 0xff, n & 0xff);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** The DER bodies of a PEM text's blocks of one label. */
function pemBlocks(pem: string, label: string): Buffer[] {
  const out: Buffer[] = [];
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, "g");
  for (let m = re.exec(pem); m; m = re.exec(pem)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
  return out;
}
