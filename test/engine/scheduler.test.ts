import { expect, test } from "bun:test";
import { TICK_MS, TIMER_SLACK_MS, Wheel, intendedTime } from "../../src/engine/scheduler.ts";

function wheel(capacity = 4) {
  const fired: [number, number, number][] = [];
  const w = new Wheel(2, capacity, (d, k, at) => fired.push([d, k, at]), 0);
  return { w, fired };
}

test("fires each timer once, never early, in order of time", () => {
  const { w, fired } = wheel();
  w.set(0, 0, 25);
  w.set(1, 1, 5);
  w.set(2, 0, 100);
  w.tick(20);
  expect(fired).toEqual([[1, 1, 5]]);
  w.tick(30);
  expect(fired).toEqual([[1, 1, 5], [0, 0, 25]]);
  w.tick(1000);
  expect(fired.length).toBe(3);
  w.tick(2000);
  expect(fired.length).toBe(3);
});

test("re-arming moves a timer; clearing cancels it", () => {
  const { w, fired } = wheel();
  w.set(0, 0, 50);
  w.set(0, 0, 200);
  w.set(1, 0, 60);
  w.clear(1, 0);
  w.tick(100);
  expect(fired).toEqual([]);
  w.tick(200);
  expect(fired).toEqual([[0, 0, 200]]);
});

test("timers more than one turn of the wheel away wait for their turn", () => {
  const { w, fired } = wheel();
  const far = 4096 * TICK_MS * 2 + 35;
  w.set(3, 1, far);
  for (let t = 0; t < far - TICK_MS; t += 500) w.tick(t);
  expect(fired).toEqual([]);
  w.tick(far - 1);
  expect(fired).toEqual([]);
  w.tick(far + TICK_MS);
  expect(fired).toEqual([[3, 1, far]]);
});

test("grow keeps armed timers", () => {
  const { w, fired } = wheel(2);
  w.set(1, 1, 40);
  w.grow(1000);
  w.set(999, 0, 40);
  w.tick(50);
  expect(fired.sort()).toEqual([[1, 1, 40], [999, 0, 40]]);
});

test("intended send time: timer resolution and the OS's wake-up slack are forgiven, a stalled loop is not", () => {
  // Deadline 1012 is filed at grid point 1020. Ticks nominally every 10 ms from 1007: 1017, 1027.
  // 1017 is before the grid point, so 1027 is the earliest tick that could fire it.
  expect(intendedTime(1012, 1007, 1027)).toBe(1027);
  // Woken 0.4 ms late (an idle loop's usual slack): not the broker's doing, not counted.
  expect(intendedTime(1012, 1017, 1027.4)).toBe(1027.4);
  // Two ms late is lag: counted, less the 1 ms slack.
  expect(intendedTime(1012, 1017, 1029)).toBe(1029 - TIMER_SLACK_MS);
  // The loop stalled from 1007 to 1307: the send should have gone at 1027 (the 1 ms slack aside).
  expect(intendedTime(1012, 1007, 1307)).toBe(1027 + TIMER_SLACK_MS);
  // A deadline on the grid fires at the first nominal tick at or after it.
  expect(intendedTime(1200, 1007, 1307)).toBe(1207 + TIMER_SLACK_MS);
  // A deadline already past at the previous tick (the loop was behind): counted from the deadline.
  expect(intendedTime(995, 1007, 1017)).toBe(995 + TIMER_SLACK_MS);
});
