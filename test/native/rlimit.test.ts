import { expect, test } from "bun:test";
import { getFileLimit, raiseFileLimit } from "../../native/rlimit.ts";
import { sh } from "../helpers/tmp.ts";

test.skipIf(process.platform !== "linux")("the open-file limit is read and raised to the hard limit", async () => {
  const before = getFileLimit();
  expect(before.ok).toBe(true);
  if (!before.ok) return;
  const hard = Number((await sh(["sh", "-c", "ulimit -Hn"])).stdout.trim());
  if (Number.isFinite(hard)) expect(before.value.hard).toBe(hard);
  const after = await raiseFileLimit();
  expect(after.ok).toBe(true);
  if (after.ok) expect(after.value.soft).toBe(after.value.hard);
});

test.skipIf(process.platform !== "linux")("a child process started from a shell with a lower limit gets it raised", async () => {
  // The shell lowers its soft limit; cicada's raise brings the child's back up to the hard limit.
  const script = `import { raiseFileLimit } from "${import.meta.dir}/../../native/rlimit.ts"; const r = await raiseFileLimit(); console.log(JSON.stringify(r));`;
  const r = await sh(["sh", "-c", `ulimit -Sn 1024 && ${process.execPath} -e '${script}'`]);
  const res = JSON.parse(r.stdout.trim());
  expect(res.ok).toBe(true);
  expect(res.value.soft).toBe(res.value.hard);
  expect(res.value.soft).toBeGreaterThan(1024);
});
