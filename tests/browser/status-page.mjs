// Opens clerk-sync's status page in headless Chromium (the system's, not a downloaded one) the
// way an operator would, and prints what the browser rendered as one JSON object on stdout.
// Driven by tests/api/status_page.rs, which judges the report; this script only fails when the
// browser cannot be driven at all.
//
//   node status-page.mjs URL PASSWORD SCREENSHOT_PATH REPLAY_SVIX_ID
//
// Environment: CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const [url, password, screenshotPath, replaySvixId] = process.argv.slice(2);
if (!url || !password || !screenshotPath || !replaySvixId) {
  console.error("usage: node status-page.mjs URL PASSWORD SCREENSHOT_PATH REPLAY_SVIX_ID");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const origin = new URL(url).origin;
const report = {};

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 30_000,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  report.browserVersion = browser.version();

  // Without credentials: what a browser gets before its user types the token.
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    const seen = [];
    page.on("response", async (response) =>
      seen.push({
        status: response.status(),
        challenge: (await response.headerValue("www-authenticate")) ?? null,
      }),
    );
    // Headless Chromium has nobody to ask for a password: the navigation fails.
    const error = await page.goto(url, { timeout: 10_000 }).then(
      () => null,
      (e) => e.message.split("\n")[0],
    );
    report.withoutCredentials = { responses: seen, error };
    await context.close();
  }

  // With the token as Basic auth's password, answered to the 401 challenge as a person would.
  const context = await browser.newContext({
    httpCredentials: { username: "operator", password },
    viewport: { width: 1280, height: 900 },
    colorScheme: "light",
  });
  context.setDefaultTimeout(10_000);
  const requests = [];
  await context.route("**/*", (route) => {
    const requested = route.request().url();
    requests.push(requested);
    // The page must need nothing from elsewhere: anything off this origin is refused (and
    // reported, so the test fails on it).
    return new URL(requested).origin === origin ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));

  const response = await page.goto(url, { waitUntil: "load" });
  report.status = response.status();
  report.contentType = (await response.headerValue("content-type")) ?? null;
  report.page = await page.evaluate(() => {
    const text = (selector) => document.querySelector(selector)?.textContent?.trim() ?? null;
    const rows = (selector) =>
      [...document.querySelectorAll(selector)].map((row) =>
        [...row.querySelectorAll("td")].map((cell) => cell.textContent.trim()),
      );
    const chart = document.querySelector("svg.chart");
    const chartBox = chart?.getBoundingClientRect();
    const bars = [...document.querySelectorAll("svg.chart rect.seg")].map((bar) => {
      const box = bar.getBoundingClientRect();
      return {
        outcome: bar.dataset.outcome,
        count: Number(bar.dataset.count),
        minute: Number(bar.dataset.minute),
        width: box.width,
        height: box.height,
        fill: getComputedStyle(bar).fill,
      };
    });
    const card = document.querySelector(".card");
    return {
      title: document.title,
      heading: text("h1"),
      text: document.body.innerText,
      databaseHealth: text("#database-health"),
      clerkHealth: text("#clerk-health"),
      usersLive: text("#users-live"),
      usersSoftDeleted: text("#users-soft-deleted"),
      lagMedian: text("#lag-median"),
      lagMax: text("#lag-max"),
      failedCount: text("#failed-count"),
      chart: chartBox ? { width: chartBox.width, height: chartBox.height } : null,
      bars,
      legend: [...document.querySelectorAll(".legend li")].map((li) => li.textContent.trim()),
      latestRows: rows("#latest tbody tr"),
      failedRows: rows("#failed tbody tr"),
      replayButtons: document.querySelectorAll("#failed form button").length,
      scriptElements: document.querySelectorAll("script").length,
      injectedScriptRan: Boolean(window.__pwned),
      // The inline stylesheet applied (a Content-Security-Policy blocking it would leave the
      // browser's defaults).
      cardBorderTop: card ? getComputedStyle(card).borderTopWidth : null,
    };
  });
  await page.screenshot({ path: screenshotPath, fullPage: true });
  report.screenshot = screenshotPath;

  // Replay a failed event with its button, as an operator would.
  const button = page.locator(`#failed tr[data-svix-id="${replaySvixId}"] button`);
  await Promise.all([page.waitForURL(/[?&]replayed=/), button.click()]);
  report.afterReplay = {
    url: page.url(),
    flash: (await page.locator("#flash").textContent({ timeout: 5_000 }).catch(() => null))?.trim() ?? null,
    failedRows: await page.$$eval("#failed tbody tr", (rows) => rows.map((r) => r.dataset.svixId)),
  };

  report.requests = requests;
  report.consoleErrors = consoleErrors;
  await context.close();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
