/*! ingest-gateway tracker: batches events to an ingest-gateway route, retries what the
 * gateway says to retry, keeps what is not yet sent across page loads, and sends what is
 * left with navigator.sendBeacon when the page is hidden. No dependencies.
 *
 *   const t = IngestTracker.init({ endpoint: "https://ingest.example/v1/events", apiKey: "..." });
 *   t.track({ type: "click", userId: "u-1" });
 *   await t.flush();
 */
(function (global) {
  "use strict";

  var STORE_LIMIT = 1000; // events kept in localStorage, at most (the oldest go first)
  var BEACON_BYTES = 60000; // under the 64 KiB browsers allow a page's beacons in flight
  var MAX_BACKOFF_MS = 30000;

  function uuid() {
    var c = global.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  // "5s", "250ms", "2m" or a number of milliseconds.
  function millis(v, dflt) {
    if (typeof v === "number" && isFinite(v) && v >= 0) return v;
    var m = /^(\d+)(ms|s|m)$/.exec(String(v == null ? "" : v).trim());
    if (!m) return dflt;
    return Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "s" ? 1000 : 60000);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function retryable(status) {
    return status === 429 || status === 502 || status === 503 || status === 504;
  }

  function Tracker(opts) {
    if (!opts || !opts.endpoint) throw new Error("IngestTracker.init: endpoint is required");
    this.endpoint = opts.endpoint;
    this.apiKey = opts.apiKey || "";
    this.maxBatch = Math.max(1, Math.min(500, opts.maxBatch || 50));
    this.flushInterval = millis(opts.flushInterval, 5000);
    this.onError = typeof opts.onError === "function" ? opts.onError : function () {};
    this.gzip = opts.gzip !== false && typeof global.CompressionStream === "function";
    this.storeKey = "ingestTracker:" + this.endpoint;
    this.queue = []; // events not yet acknowledged, oldest first
    this.inFlight = 0; // how many of the queue's first events are being sent
    this.sent = 0; // events acknowledged or given up, in all
    this.queued = 0; // events ever queued (including restored ones)
    this.waiters = [];
    this.sending = null;
    this.restore();
    var self = this;
    if (this.flushInterval > 0) {
      this.timer = setInterval(function () { if (self.queue.length) self.flush(); }, this.flushInterval);
    }
    if (global.document && global.addEventListener) {
      this.onHide = function () { self.beacon(); };
      global.document.addEventListener("visibilitychange", function () {
        if (global.document.visibilityState === "hidden") self.onHide();
      });
      global.addEventListener("pagehide", this.onHide);
    }
    if (this.queue.length) this.flush();
  }

  Tracker.prototype.restore = function () {
    try {
      var saved = JSON.parse(global.localStorage.getItem(this.storeKey) || "[]");
      if (Array.isArray(saved)) {
        this.queue = saved.slice(-STORE_LIMIT);
        this.queued = this.queue.length;
      }
    } catch (e) { /* no storage, or not ours: start empty */ }
  };

  Tracker.prototype.persist = function () {
    try {
      if (this.queue.length) {
        global.localStorage.setItem(this.storeKey, JSON.stringify(this.queue.slice(-STORE_LIMIT)));
      } else {
        global.localStorage.removeItem(this.storeKey);
      }
    } catch (e) { /* full or unavailable: the events stay in memory */ }
  };

  // Queues one event (a plain object); it gets an eventId if it has none.
  Tracker.prototype.track = function (event) {
    var e = {};
    for (var k in event) if (Object.prototype.hasOwnProperty.call(event, k)) e[k] = event[k];
    if (e.eventId == null) e.eventId = uuid();
    this.queue.push(e);
    this.queued++;
    if (this.queue.length > STORE_LIMIT && this.inFlight < this.queue.length - STORE_LIMIT) {
      // Bounded: the oldest events not in flight are dropped, and reported.
      var dropped = this.queue.splice(this.inFlight, this.queue.length - STORE_LIMIT);
      this.sent += dropped.length;
      this.onError({ status: 0, message: "queue full: oldest events dropped", events: dropped });
    }
    this.persist();
    if (this.queue.length - this.inFlight >= this.maxBatch) this.flush();
    return e.eventId;
  };

  // Resolves once every event queued so far was acknowledged (or given up, see onError).
  Tracker.prototype.flush = function () {
    var self = this;
    var target = this.queued;
    var done = new Promise(function (resolve) {
      if (self.sent >= target) resolve();
      else self.waiters.push({ target: target, resolve: resolve });
    });
    if (!this.sending) {
      this.sending = this.drain().then(function () { self.sending = null; }, function () { self.sending = null; });
    }
    return done;
  };

  Tracker.prototype.settle = function (n) {
    this.queue.splice(0, n);
    this.inFlight = 0;
    this.sent += n;
    this.persist();
    var sent = this.sent;
    this.waiters = this.waiters.filter(function (w) {
      if (sent >= w.target) { w.resolve(); return false; }
      return true;
    });
  };

  Tracker.prototype.drain = async function () {
    var attempt = 0;
    while (this.queue.length) {
      var batch = this.queue.slice(0, this.maxBatch);
      this.inFlight = batch.length;
      var wait = null;
      try {
        var res = await this.post(batch);
        if (res.ok) {
          attempt = 0;
          this.settle(batch.length);
          continue;
        }
        if (retryable(res.status)) {
          var after = Number(res.headers.get("retry-after"));
          wait = isFinite(after) && after > 0 ? after * 1000 : null;
        } else {
          var body = null;
          try { body = await res.json(); } catch (e) { /* not JSON */ }
          this.settle(batch.length);
          this.onError({ status: res.status, body: body, events: batch });
          continue;
        }
      } catch (e) {
        // A network error (or a CORS refusal, which looks the same): retried.
      }
      this.inFlight = 0;
      attempt++;
      var backoff = Math.min(MAX_BACKOFF_MS, 250 * Math.pow(2, attempt));
      await sleep(wait != null ? wait : backoff / 2 + Math.random() * backoff / 2);
    }
  };

  Tracker.prototype.post = async function (batch) {
    var json = JSON.stringify({ events: batch });
    var headers = { "content-type": "application/json" };
    if (this.apiKey) headers["x-api-key"] = this.apiKey;
    var body = json;
    if (this.gzip) {
      var stream = new Blob([json]).stream().pipeThrough(new global.CompressionStream("gzip"));
      body = await new Response(stream).arrayBuffer();
      headers["content-encoding"] = "gzip";
    }
    return global.fetch(this.endpoint, { method: "POST", headers: headers, body: body, mode: "cors" });
  };

  // The page is going away: what is queued and not in flight leaves as beacons (text/plain,
  // the key in the query string). Events in flight stay stored: the next page load resends
  // them if their request did not finish (eventId tells the copies apart).
  Tracker.prototype.beacon = function () {
    if (!global.navigator || typeof global.navigator.sendBeacon !== "function") return;
    var url = this.endpoint + (this.endpoint.indexOf("?") < 0 ? "?" : "&") +
      "api_key=" + encodeURIComponent(this.apiKey);
    var rest = this.queue.slice(this.inFlight);
    var sent = 0;
    while (sent < rest.length) {
      var n = Math.min(this.maxBatch, rest.length - sent);
      var json = JSON.stringify({ events: rest.slice(sent, sent + n) });
      while (n > 1 && json.length > BEACON_BYTES) {
        n = Math.ceil(n / 2);
        json = JSON.stringify({ events: rest.slice(sent, sent + n) });
      }
      var blob = new Blob([json], { type: "text/plain;charset=UTF-8" });
      if (!global.navigator.sendBeacon(url, blob)) break;
      sent += n;
    }
    if (sent) {
      this.queue.splice(this.inFlight, sent);
      this.sent += sent;
      this.persist();
    }
  };

  global.IngestTracker = {
    init: function (opts) { return new Tracker(opts); },
  };
})(typeof window !== "undefined" ? window : globalThis);
