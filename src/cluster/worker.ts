/**
 * A worker process (`cicada __swarm-worker`): runs one Swarm for a segment of the fleet and
 * ships stats deltas to its supervisor every second over IPC. It stops its devices when told,
 * and also when its supervisor goes away, so no load is ever left behind.
 */
import { raiseFileLimit } from "../../native/rlimit.ts";
import { Swarm } from "../engine/swarm.ts";
import { encodeStats } from "../metrics/snapshot.ts";
import { openIdentityBase, StridedIdentities, type IdentityBase } from "./identities.ts";
import type { LifecycleAnswer, LifecycleHooks, LifecycleKind } from "../lifecycle/types.ts";
import type { FromWorker, ToWorker, WorkerSpec, WorkerStatus } from "./ipc-protocol.ts";
import { loadScenario } from "../scenario/load.ts";
import { fdUsage } from "../sys/fds.ts";

export const STATS_INTERVAL_MS = 1000;

/** This worker's identities, fetched ahead when they come from a Redis store; `base` when the caller opened them already. */
export async function identitiesFor(spec: Pick<WorkerSpec, "certDir" | "ranges" | "synthetic" | "stride" | "slot" | "store" | "names">, base?: IdentityBase): Promise<StridedIdentities> {
  const ids = new StridedIdentities(base ?? (await openIdentityBase(spec.certDir, spec.synthetic, spec.store, spec.names)), spec.ranges, spec.stride, spec.slot);
  await ids.prefetch();
  return ids;
}

export function status(swarm: Swarm, v = 0): WorkerStatus {
  const s = swarm.snapshot();
  const cpu = process.cpuUsage();
  const fds = fdUsage();
  return { v, target: s.target, active: s.active, connected: s.connected, inflight: s.inflight, rss: process.memoryUsage().rss, cpu_us: cpu.user + cpu.system, fds: fds.open, fd_limit: fds.limit };
}

/** Renew/revoke requests sent to the supervisor, answered by number. */
class LifecycleOverIpc implements LifecycleHooks {
  private next = 0;
  private readonly pending = new Map<number, (a: LifecycleAnswer) => void>();
  constructor(
    private readonly slot: () => number,
    private readonly send: (m: FromWorker) => void,
  ) {}
  request(kind: LifecycleKind, id: string, certPem: string): Promise<LifecycleAnswer> {
    const req = ++this.next;
    const { promise, resolve } = Promise.withResolvers<LifecycleAnswer>();
    this.pending.set(req, resolve);
    this.send({ t: "lifecycle", slot: this.slot(), req, kind, id, certPem });
    return promise;
  }
  answer(req: number, a: LifecycleAnswer): void {
    this.pending.get(req)?.(a);
    this.pending.delete(req);
  }
}

export async function runWorkerProcess(): Promise<number> {
  await raiseFileLimit();
  // The supervisor coordinates shutdown: Ctrl-C in a terminal reaches the whole process group.
  process.on("SIGINT", () => {});
  let swarm: Swarm | null = null;
  let identities: StridedIdentities | null = null;
  let slot = -1;
  let seq = 0;
  let v = 0;
  let ticker: ReturnType<typeof setInterval> | null = null;
  let pendingLease: number | undefined;
  const send = (m: FromWorker) => process.send?.(m);
  const lifecycle = new LifecycleOverIpc(() => slot, send);
  const { promise: done, resolve: finish } = Promise.withResolvers<number>();

  const stop = async () => {
    if (ticker) clearInterval(ticker);
    ticker = null;
    if (swarm) {
      // Report the devices as they were when told to stop, with the disconnects counted after.
      const before = status(swarm);
      await swarm.stop();
      send({ t: "stopped", slot, seq: ++seq, delta: encodeStats(swarm.takeStats()), status: { ...status(swarm, v), target: before.target, active: before.active, connected: before.connected } });
    }
    // Let the last message leave, then let go of the channel so the process can exit.
    setTimeout(() => {
      process.disconnect?.();
      finish(0);
    }, 50);
  };

  const handle = async (m: ToWorker) => {
    if (m.t === "start") {
      slot = m.spec.slot;
      identities = await identitiesFor(m.spec);
      v = m.v;
      // The scenario the supervisor named, by path on this machine and by content: a changed file is refused.
      const sc = m.spec.swarm.scenario;
      const scenario = sc ? await loadScenario(sc.path, sc.sha256) : null;
      swarm = new Swarm(m.spec.swarm, identities, undefined, m.spec.swarm.lifecycle ? lifecycle : null, scenario);
      const lease = pendingLease ?? m.lease;
      if (lease !== undefined) swarm.setLease(lease);
      swarm.start();
      ticker = setInterval(() => send({ t: "stats", slot, seq: ++seq, delta: encodeStats(swarm!.takeStats()), status: status(swarm!, v) }), STATS_INTERVAL_MS);
    } else if (m.t === "set") {
      // Ranges and names first (fetched ahead from a store): more identities let the swarm take more users.
      if ((m.ranges || m.names) && identities) {
        if (m.ranges) identities.setRanges(m.ranges);
        if (m.names) identities.learn(m.names);
        await identities.prefetch();
      }
      if (m.users !== undefined) swarm?.setUsers(m.users);
      if (m.rate !== undefined) swarm?.setRate(m.rate);
      if (m.publishing) swarm?.setPublishing(m.publishing);
      v = m.v;
    } else if (m.t === "lease") {
      swarm?.setLease(m.until);
    } else if (m.t === "stop") {
      await stop();
    }
  };
  // One message at a time, in order: a start that is still fetching identities holds back the sets after it.
  let queue = Promise.resolve();
  process.on("message", (m: ToWorker) => {
    // Answers do not wait behind a start that is still fetching identities.
    if (m.t === "lifecycle") return lifecycle.answer(m.req, m.answer);
    // A lease does not wait either: a start still fetching identities applies it when it is done.
    if (m.t === "lease") return swarm ? swarm.setLease(m.until) : void (pendingLease = m.until);
    if (m.t === "hurry") return swarm?.hurry();
    queue = queue.then(() =>
      handle(m).catch((err) => {
        send({ t: "error", slot, message: err instanceof Error ? err.message : String(err) });
      }),
    );
  });
  // The supervisor died or closed the channel: stop cleanly rather than run unsupervised.
  process.on("disconnect", () => void stop());
  return done;
}
