// Drives Debian's Chromium through the WebSocket scenario (tests/browser.rs): one page
// streams events through `new WebSocket(...)` (the key in the query string, as browsers
// cannot set headers) and waits for each acknowledgement; a handshake with a bad key is
// refused. Prints one JSON object with what the page saw.
//   GATEWAY=http://127.0.0.1:G KEY=... node ws.mjs
import { launch } from "./launch.mjs";

const { GATEWAY, KEY } = process.env;
const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  page.on("console", (m) => console.error(`[page] ${m.text()}`));
  await page.goto(`${GATEWAY}/healthz`);
  const url = `${GATEWAY.replace(/^http/, "ws")}/v1/stream?api_key=${KEY}`;
  const result = await page.evaluate(async ({ url, n }) => {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("the handshake failed"));
    });
    const acks = [];
    const done = new Promise((resolve) => {
      ws.onmessage = (m) => {
        acks.push(JSON.parse(m.data));
        if (acks.length === n) resolve();
      };
    });
    for (let i = 0; i < n; i++) ws.send(JSON.stringify({ action: "track", id: `browser-${i}` }));
    await done;
    const closed = new Promise((resolve) => { ws.onclose = (e) => resolve(e.code); });
    ws.close(1000);
    const bad = await new Promise((resolve) => {
      const w = new WebSocket(url.replace(/api_key=[^&]+/, "api_key=not-a-real-key-0000000000"));
      w.onopen = () => resolve("open");
      w.onerror = () => resolve("refused");
    });
    return { acks, closed: await closed, bad };
  }, { url, n: 20 });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
