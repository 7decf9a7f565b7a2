/**
 * A worker process (`cicada __swarm-worker`): runs one Swarm for a segment of the fleet and
 * ships stats deltas to its supervisor every second over IPC. It stops its devices when told,
 * and also when its supervisor goes away, so no load is ever left behind.
 */
import { raiseFileLimit } from "../../native/rlimit.ts";
import { Swarm } from "../engine/swarm.ts";
import { encodeStats } from "../metrics/snapshot.ts";
import { identityBase, StridedIdentities } from "./identities.ts";
import type { FromWorker, ToWorker, WorkerSpec, WorkerStatus } from "./messages.ts";

export const STATS_INTERVAL_MS = 1000;

export function identitiesFor(spec: Pick<WorkerSpec, "certDir" | "ranges" | "synthetic" | "stride" | "slot">): StridedIdentities {
  return new StridedIdentities(identityBase(spec.certDir, spec.synthetic), spec.ranges, spec.stride, spec.slot);
}

export function status(swarm: Swarm, v = 0): WorkerStatus {
  const s = swarm.snapshot();
  const cpu = process.cpuUsage();
  return { v, target: s.target, active: s.active, connected: s.connected, rss: process.memoryUsage().rss, cpu_us: cpu.user + cpu.system };
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
  const send = (m: FromWorker) => process.send?.(m);
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

  process.on("message", (m: ToWorker) => {
    try {
      if (m.t === "start") {
        slot = m.spec.slot;
        v = m.v;
        identities = identitiesFor(m.spec);
        swarm = new Swarm(m.spec.swarm, identities);
        swarm.start();
        ticker = setInterval(() => send({ t: "stats", slot, seq: ++seq, delta: encodeStats(swarm!.takeStats()), status: status(swarm!, v) }), STATS_INTERVAL_MS);
      } else if (m.t === "set") {
        // Ranges first: more identities let the swarm take more users.
        if (m.ranges) identities?.setRanges(m.ranges);
        if (m.users !== undefined) swarm?.setUsers(m.users);
        if (m.rate !== undefined) swarm?.setRate(m.rate);
        v = m.v;
      } else if (m.t === "stop") {
        void stop();
      }
    } catch (err) {
      send({ t: "error", slot, message: err instanceof Error ? err.message : String(err) });
    }
  });
  // The supervisor died or closed the channel: stop cleanly rather than run unsupervised.
  process.on("disconnect", () => void stop());
  return done;
}
