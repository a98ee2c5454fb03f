// The trace view's first screen for a big trace, in Debian's chromium: `rounds`
// fresh pages load /trace/{id}; each reports the time from the view starting to
// the first screen of rows being in the page (window.__meshtraceFirstScreenMs)
// and from navigation to rows. Usage: node tests/node/ui_bench.mjs BASE TRACE ROUNDS
import { chromium } from "playwright-core";

const [base, trace, rounds] = [process.argv[2], process.argv[3], Number(process.argv[4] || 10)];
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const view = [];
const nav = [];
try {
  for (let i = 0; i < rounds; i++) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const t0 = Date.now();
    await page.goto(`${base}/trace/${trace}`);
    await page.waitForSelector(".wf-row", { timeout: 60_000 });
    nav.push(Date.now() - t0);
    view.push(await page.evaluate(() => window.__meshtraceFirstScreenMs));
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ view, nav }));
