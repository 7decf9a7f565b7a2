/** The fleet as one in-process swarm: `--workers 1`, and the engine inside every worker process. */
import type { IdentitySource, Publishing, SwarmConfig } from "../engine/config.ts";
import { Swarm } from "../engine/swarm.ts";
import type { LifecycleHooks } from "../lifecycle/types.ts";
import type { LoadedScenario } from "../scenario/load.ts";
import type { Fleet, FleetSnapshot } from "./fleet.ts";
import { status } from "./worker.ts";

export class InProcessFleet implements Fleet {
  private readonly swarm: Swarm;

  constructor(cfg: SwarmConfig, identities: IdentitySource, lifecycle: LifecycleHooks | null = null, scenario: LoadedScenario | null = null) {
    this.swarm = new Swarm(cfg, identities, undefined, lifecycle, scenario);
  }

  start(): void {
    this.swarm.start();
  }
  setUsers(n: number): void {
    this.swarm.setUsers(n);
  }
  setRate(r: number): void {
    this.swarm.setRate(r);
  }

  setPublishing(p: Partial<Publishing>): void {
    this.swarm.setPublishing(p);
  }
  resetStats(): void {
    this.swarm.takeStats();
  }
  hurry(): void {
    this.swarm.hurry();
  }
  snapshot(): FleetSnapshot {
    const s = this.swarm.snapshot();
    return { target: s.target, active: s.active, connected: s.connected, inflight: s.inflight, stats: this.swarm.stats, workers: [{ ...status(this.swarm), slot: 0, pid: process.pid, restarts: 0, alive: true }], restarts: 0 };
  }
  async stop(): Promise<FleetSnapshot> {
    const before = this.snapshot();
    await this.swarm.stop();
    return { ...this.snapshot(), target: before.target, active: before.active, connected: before.connected };
  }
}

