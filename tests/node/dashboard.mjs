// Drives the aggregator's dashboard in headless Chromium (Debian's, through
// playwright-core) while a run goes on: the page refuses nobody with the
// token and everybody without it; a run's settled count changes on the page
// without a reload; a worker is listed with what it runs; /metrics answers;
// the run ends in the recent runs with a link to its report. Saves a
// screenshot taken mid-run. Prints what it saw as JSON; exits 1 on a fault.
//
//   node dashboard.mjs URL TOKEN SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, token, screenshot] = process.argv.slice(2);
const fail = (what) => {
  console.error(`dashboard: ${what}`);
  process.exit(1);
};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const denied = await page.request.get(`${url}/api/state`);
  if (denied.status() !== 401) fail(`/api/state without the token answered ${denied.status()}`);

  await page.goto(`${url}/?token=${encodeURIComponent(token)}`);
  const settled = "#runs tr[data-run] td.settled";
  await page.waitForSelector(settled, { timeout: 60_000 });
  const first = await page.textContent(settled);
  // The same page, never reloaded: its own fetches change what it shows.
  await page.waitForFunction(
    ([selector, before]) => document.querySelector(selector)?.textContent !== before,
    [settled, first],
    { timeout: 60_000 },
  );
  const second = await page.textContent(settled);
  await page.waitForSelector("#workers tr[data-worker]", { timeout: 30_000 });
  const worker = await page.textContent("#workers tr[data-worker]");
  await page.screenshot({ path: screenshot, fullPage: true });

  if (page.url().includes("token=")) fail(`the token stayed in the page's URL: ${page.url()}`);
  const metrics = await (await page.request.get(`${url}/metrics`, { headers: { Authorization: `Bearer ${token}` } })).text();
  for (const family of ["testfleet_tests_finished_total", "testfleet_busy_slots", "testfleet_queue_depth", "testfleet_run_duration_seconds_bucket"]) {
    if (!metrics.includes(family)) fail(`/metrics lacks ${family}`);
  }

  await page.waitForSelector("#recent tr[data-run] a", { timeout: 120_000 });
  const verdict = await page.textContent("#recent tr[data-run] td:nth-child(3)");
  const href = await page.getAttribute("#recent tr[data-run] a", "href");
  const report = await page.request.get(new URL(href, url).toString());
  if (!report.ok() || !(await report.text()).includes("<html")) fail(`the report link ${href} answered ${report.status()}`);
  console.log(JSON.stringify({ first, second, worker, verdict, report: href }));
} finally {
  await browser.close();
}
