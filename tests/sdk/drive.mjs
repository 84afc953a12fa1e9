// Drives a generated TypeScript client against a running gateway (tests/sdk.rs): a batch
// through partial failures, a 400 that must not be retried, a throttled key whose
// Retry-After must be waited for. Prints what happened as one JSON line.
const [, , dist] = process.argv;
const { Client, GatewayError } = await import(`${dist}/index.js`);
const baseUrl = process.env.BASE_URL;
const client = new Client({ baseUrl, apiKey: process.env.API_KEY, baseDelayMs: 20, gzip: true, maxAttempts: 6 });
const events = Array.from({ length: 30 }, (_, i) => ({ pk: i % 5 === 0 ? `stubborn-${i}` : `ok-${i}`, n: i }));
const batch = await client.postV1EventsBatch(events);
let bad = null;
try {
  await client.postV1Events([{ n: 1 }]);
} catch (e) {
  if (!(e instanceof GatewayError)) throw e;
  bad = { status: e.status, attempts: e.attempts };
}
const slow = new Client({ baseUrl, apiKey: process.env.SLOW_KEY, baseDelayMs: 1 });
const t0 = Date.now();
let attempts = 0;
for (let i = 0; i < 3; i++) {
  const answer = await slow.postV1Events([{ pk: "slow" }]);
  attempts += answer.attempts;
}
console.log(JSON.stringify({ delivered: batch.delivered, failed: batch.failed, spooled: batch.spooled, bad, waited_ms: Date.now() - t0, attempts }));
