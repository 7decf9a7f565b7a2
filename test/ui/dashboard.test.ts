/**
 * The dashboard in real headless Chromium (Debian's chromium driven by playwright-core):
 * start a run of a few hundred devices from the form against the real test broker, watch
 * the stats table and the charts fill, reload and find everything still there, stop it.
 * A screenshot is kept in test/artifacts/.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { makeCerts } from "../helpers/swarm.ts";
import { HAVE_MOSQUITTO, startBroker } from "../helpers/testbed.ts";
import { tempDir } from "../helpers/tmp.ts";
import { startUi } from "../helpers/ui.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn("skipping dashboard tests: chromium is not installed (apt-get install chromium)");
const ARTIFACTS = join(import.meta.dir, "../artifacts");
/** A label that would run script if the page ever wrote it as HTML. */
const HOSTILE = `<img src=x onerror="window.__injected=1">run`;

describe.skipIf(!HAVE_MOSQUITTO || !HAVE_CHROMIUM)("dashboard in Chromium", () => {
  test("start from the form, live table and charts, reload keeps the history, stop; labels are escaped", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 300);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    await using ui = await startUi(["--certs", certDir, "--port", String(broker.port), "--history", join(tmp.path, "runs"), "--interval", "1s..2s", "--workers", "2"]);
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1800 } });
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(`${ui.url}/`);
      // The form starts from the server's own settings.
      await page.waitForFunction(() => (document.querySelector("#start input[name=port]") as HTMLInputElement).value !== "");
      expect(await page.inputValue("#start input[name=port]")).toBe(String(broker.port));
      await page.fill("#start input[name=users]", "300");
      await page.fill("#start input[name=rate]", "150");
      await page.fill("#start input[name=duration]", "2m");
      await page.fill("#start input[name=label]", HOSTILE);
      await page.click("#start-btn");

      await page.waitForSelector("#state[data-state=running]");
      const connects = () => page.textContent("#stats tr[data-row=connect] td:nth-child(2)");
      await page.waitForFunction(() => document.querySelector("#stats tr[data-row=connect] td:nth-child(2)")?.textContent === "300", null, { timeout: 20_000 });
      expect(await connects()).toBe("300");
      await page.waitForFunction(() => Number(document.querySelector("#stats tr[data-row=publish] td:nth-child(2)")?.textContent ?? 0) > 300, null, { timeout: 20_000 });
      // Charts: four uPlot canvases, fed by points every 2 s.
      await page.waitForFunction(() => Number(document.querySelector("#charts")?.getAttribute("data-points")) >= 3, null, { timeout: 20_000 });
      expect(await page.locator("#charts .chart canvas").count()).toBe(4);
      expect(await page.textContent("#summary")).toContain("300 / 300 connected");
      // Every publish accounted for, on the page as in the report.
      expect(await page.textContent("#publishes")).toMatch(/^Publishes: \d+ sent = \d+ acked \+ \d+ failed \+ \d+ in flight/);
      expect(await page.textContent("#throughput")).toMatch(/^Throughput over the run: sent [\d.]+ msg\/s \([\d.]+ MB\/s\) · acked [\d.]+ msg\/s/);
      expect(await page.locator("#workers tbody tr").count()).toBe(2);
      // The label is shown as text: no element made of it, no script run.
      expect(await page.textContent("#run-label")).toBe(HOSTILE);
      expect(await page.locator("#run-label img, #history img").count()).toBe(0);
      // Publishing paused from the page: the devices stay, the publish count stops; resumed, it goes on.
      const published = async () => Number(await page.textContent("#stats tr[data-row=publish] td:nth-child(2)"));
      await page.click("#pause");
      await page.waitForSelector("#pause[data-publish=off]");
      expect(await page.textContent("#pause")).toBe("Resume publishing");
      // Acks of what had left already, then each worker's once-a-second stats and the page's once-a-second poll.
      await Bun.sleep(3000);
      const paused = await published();
      await Bun.sleep(2500);
      expect(await published()).toBe(paused);
      await page.fill("#set-msg-rate", "600");
      await page.click("#apply");
      await page.click("#pause");
      await page.waitForSelector("#pause[data-publish=on]");
      await page.waitForFunction((n) => Number(document.querySelector("#stats tr[data-row=publish] td:nth-child(2)")?.textContent ?? 0) > n + 600, paused, { timeout: 10_000 });
      expect(await page.textContent("#summary")).toContain("300 / 300 connected");

      const before = Number(await page.getAttribute("#charts", "data-points"));

      // A reload loses nothing: the timeline and the run come back from the server.
      await page.reload();
      await page.waitForFunction((n) => Number(document.querySelector("#charts")?.getAttribute("data-points")) >= n, before, { timeout: 10_000 });
      expect(await connects()).toBe("300");
      await page.waitForSelector("#history tbody tr");
      expect(await page.textContent("#history tbody tr td:nth-child(3)")).toBe(HOSTILE);
      expect(await page.evaluate(() => (window as unknown as { __injected?: number }).__injected)).toBeUndefined();

      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });

      await page.click("#stop");
      await page.waitForSelector("#state[data-state=idle]", { timeout: 20_000 });
      await page.waitForFunction(() => document.querySelector("#history tbody tr td:nth-child(4)")?.textContent === "finished", null, { timeout: 10_000 });
      expect(await page.textContent("#stats tr[data-row=disconnect] td:nth-child(2)")).toBe("300");
      expect(pageErrors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 90_000);

  test("a scenario picked on the form by name; its own rows join the stats table as they are counted", async () => {
    using tmp = tempDir();
    const certDir = join(tmp.path, "cert");
    await makeCerts(certDir, 10);
    await using broker = await startBroker({ certDir, stateDir: tmp.path });
    const dir = join(tmp.path, "scenarios");
    mkdirSync(dir);
    writeFileSync(join(dir, "pinger.ts"), `import { defineScenario } from "cicada/scenario";\nexport default defineScenario({ name: "pinger", every: [{ interval: "200ms", run(d) { d.publish(d.clientId + "/attrs", "{}"); d.measure("ping", 2); } }] });\n`);
    await using ui = await startUi(["--certs", certDir, "--port", String(broker.port), "--history", join(tmp.path, "runs"), "--scenarios", dir]);
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
    try {
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(`${ui.url}/`);
      // The server's scenarios are offered by name.
      await page.waitForFunction(() => document.querySelectorAll("#scenario-names option").length === 1);
      expect(await page.getAttribute("#scenario-names option", "value")).toBe("pinger");
      await page.fill("#start input[name=users]", "10");
      await page.fill("#start input[name=duration]", "20s");
      await page.fill("#start input[name=scenario]", "pinger");
      await page.click("#start-btn");
      await page.waitForSelector("#state[data-state=running]");
      await page.waitForFunction(() => Number(document.querySelector("#stats tr[data-row=ping] td:nth-child(2)")?.textContent ?? 0) > 20, null, { timeout: 20_000 });
      const pings = Number(await page.textContent("#stats tr[data-row=ping] td:nth-child(2)"));
      const publishes = Number(await page.textContent("#stats tr[data-row=publish] td:nth-child(2)"));
      expect(Math.abs(pings - publishes)).toBeLessThanOrEqual(10);
      await page.click("#stop");
      await page.waitForSelector("#state[data-state=idle]", { timeout: 20_000 });
      expect(pageErrors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 60_000);
});
