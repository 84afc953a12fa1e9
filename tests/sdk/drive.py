"""Drives a generated Python client against a running gateway (tests/sdk.rs), as drive.mjs."""

import json
import os
import time

from ingest_gateway_client import Client, GatewayError

base_url = os.environ["BASE_URL"]
client = Client(base_url, api_key=os.environ["API_KEY"], base_delay=0.02, gzip=True, max_attempts=6)
events = [{"pk": ("stubborn-%d" % i) if i % 5 == 0 else ("ok-%d" % i), "n": i} for i in range(30)]
batch = client.post_v1_events_batch(events)
bad = None
try:
    client.post_v1_events([{"n": 1}])
except GatewayError as e:
    bad = {"status": e.status, "attempts": e.attempts}
slow = Client(base_url, api_key=os.environ["SLOW_KEY"], base_delay=0.001)
t0 = time.monotonic()
attempts = 0
for _ in range(3):
    attempts += slow.post_v1_events([{"pk": "slow"}]).attempts
print(json.dumps({
    "delivered": batch.delivered,
    "failed": batch.failed,
    "spooled": batch.spooled,
    "bad": bad,
    "waited_ms": int((time.monotonic() - t0) * 1000),
    "attempts": attempts,
}))
