// Drives Debian's Chromium through the browser test's scenario (tests/browser.rs): a page on
// one origin uses /sdk/tracker.js against the gateway on another origin. Prints one JSON
// object with what the pages saw; the Rust test checks it and what reached S3.
//   PAGE=http://127.0.0.1:P/page.html EVIL_PAGE=http://localhost:P/page.html \
//   GATEWAY=http://127.0.0.1:G KEY=... node run.mjs
import { launch } from "./launch.mjs";

const { PAGE, EVIL_PAGE, GATEWAY, KEY } = process.env;
const endpoint = `${GATEWAY}/v1/events`;
const result = {};

const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (m) => console.error(`[page] ${m.text()}`));
  await page.goto(PAGE);
  await page.waitForFunction(() => typeof window.IngestTracker === "object");

  // 1. Tracked events, batched and gzip'd, and a flush that resolves once all are in.
  result.flush = await page.evaluate(async ({ endpoint, key }) => {
    const errors = [];
    window.t = IngestTracker.init({ endpoint, apiKey: key, maxBatch: 5, flushInterval: "60s",
      onError: (e) => errors.push(e.status) });
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push(t.track({ type: "click", marker: `flush-${i}` }));
    await t.flush();
    return { ids, errors, left: t.queue.length, gzip: t.gzip };
  }, { endpoint, key: KEY });

  // 2. A page reads the gateway's 403, body and all.
  result.forbidden = await page.evaluate(async (endpoint) => {
    const r = await fetch(endpoint, { method: "POST", body: "{}",
      headers: { "content-type": "application/json", "x-api-key": "not-a-real-key-0000000000" } });
    return { status: r.status, body: await r.json(), type: r.headers.get("x-amzn-errortype"),
      requestId: r.headers.get("x-amzn-requestid") };
  }, endpoint);

  // 3. The network fails: events wait in localStorage, then go once it is back.
  await page.route(`${endpoint}*`, (route) => route.abort());
  result.offline = await page.evaluate(async () => {
    t.track({ type: "view", marker: "offline-0" });
    t.track({ type: "view", marker: "offline-1" });
    window.pending = t.flush();
    await new Promise((r) => setTimeout(r, 800));
    const stored = JSON.parse(localStorage.getItem(t.storeKey) || "[]").map((e) => e.marker);
    return { stored };
  });
  await page.unroute(`${endpoint}*`);
  result.online = await page.evaluate(async () => {
    await window.pending;
    return { left: t.queue.length, stored: localStorage.getItem(t.storeKey) };
  });

  // 4. Events still queued when the page goes away leave as beacons.
  result.hidden = await page.evaluate(() => {
    for (let i = 0; i < 3; i++) t.track({ type: "view", marker: `beacon-${i}` });
    return { queued: t.queue.length };
  });
  await page.goto("about:blank");
  await new Promise((r) => setTimeout(r, 1000));

  // 5. A page of an origin the gateway does not allow cannot read its answers.
  const evil = await context.newPage();
  await evil.goto(EVIL_PAGE);
  result.evil = await evil.evaluate(async ({ endpoint, key }) => {
    try {
      const r = await fetch(endpoint, { method: "POST",
        headers: { "content-type": "application/json", "x-api-key": key },
        body: JSON.stringify({ events: [{ type: "click", marker: "evil" }] }) });
      return { read: true, status: r.status };
    } catch (e) {
      return { read: false, error: String(e) };
    }
  }, { endpoint, key: KEY });
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
