// Opens the hub's status page in headless Chromium for tests/status_page.rs
// and reports what the charts drew from before the page was opened, and
// the players table. One JSON object on stdout.
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const errors = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("traffic").dataset.seconds !== undefined,
    null, { timeout: 15000 });
  const chart = (id) => page.evaluate((id) => ({ ...document.getElementById(id).dataset }), id);
  const rows = await page.$$eval("#people tbody tr", (trs) => trs.map((tr) =>
    Object.fromEntries([...tr.querySelectorAll("td")].map((td) => [td.dataset.k, td.textContent]))));
  process.stdout.write(JSON.stringify({
    event: "done", traffic: await chart("traffic"), players: await chart("players"), rows, errors,
  }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ event: "failed", error: String(e), errors }) + "\n");
} finally {
  await browser.close();
}
