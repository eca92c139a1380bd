// Drives the status page in headless Chromium for tests/status_page.rs:
// reports the players shown for a service as the test moves a player in
// and out, and any console error. One JSON object per line on stdout;
// the test answers on stdin.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, service, screenshot] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const errors = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  const cell = `#second tr[data-id="${service}"] td[data-k="players"]`;
  const players = () => page.textContent(cell);
  const until = (n) => page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want, [cell, String(n)], { timeout: 15000 });
  await page.waitForSelector(cell);
  say({ event: "loaded", players: await players() });
  for (const want of [1, 0]) {
    await lines.next(); // the test moved a player
    await until(want);
    say({ event: "players", players: await players(), live: await page.textContent("#live") });
  }
  if (screenshot) {
    // Chromium without the fonts a page names can stall a screenshot;
    // the picture is a keepsake, not a check.
    await page.screenshot({ path: screenshot, fullPage: true, timeout: 10000 })
      .catch((e) => say({ event: "note", note: "no screenshot: " + String(e).split("\n")[0] }));
  }
  say({ event: "done", errors });
} catch (e) {
  say({ event: "failed", error: String(e), errors });
} finally {
  await browser.close();
  // The stdin reader would keep node alive.
  process.exit(0);
}
