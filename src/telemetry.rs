//! Logs and metrics: JSON logs through `tracing`, Prometheus metrics through `metrics`.
//! Metric names live here; labels are bounded (route and status, never keys or paths).

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names.
pub mod names {
    pub const REQUESTS: &str = "gateway_requests_total";
    pub const REQUEST_SECONDS: &str = "gateway_request_duration_seconds";
    pub const UPSTREAM_CALLS: &str = "gateway_upstream_calls_total";
    pub const UPSTREAM_FAILURES: &str = "gateway_upstream_failures_total";
    pub const BATCH_RECORDS: &str = "gateway_batch_records";
    pub const BATCH_REQUESTS: &str = "gateway_batch_requests";
    pub const BATCH_WAIT_SECONDS: &str = "gateway_batch_wait_seconds";
    pub const BATCH_QUEUE_DEPTH: &str = "gateway_batch_queue_depth";
    pub const AGGREGATED_RECORDS: &str = "gateway_kpl_user_records_total";
    pub const AGGREGATES: &str = "gateway_kpl_aggregated_records_total";
    pub const RETRIES: &str = "gateway_upstream_retries_total";
    pub const KEY_MISS_CHECKS: &str = "gateway_key_miss_checks_total";
    pub const QUOTA_LEASES: &str = "gateway_quota_leases_total";
    pub const FLEET_NODES: &str = "gateway_fleet_nodes";
    pub const FLEET_STORE_CALLS: &str = "gateway_fleet_store_calls_total";
    pub const AUTHORIZER_DECISIONS: &str = "gateway_authorizer_decisions_total";
    pub const JWKS_FETCHES: &str = "gateway_authorizer_jwks_fetches_total";
    pub const AUTHORIZER_CACHE: &str = "gateway_authorizer_cache_total";
    pub const AUTHORIZER_LAMBDA_SECONDS: &str = "gateway_authorizer_lambda_duration_seconds";
    pub const UPSTREAM_READY: &str = "gateway_upstream_ready";
    pub const RESPONSE_CACHE: &str = "gateway_response_cache_total";
    pub const WEBSOCKET_CONNECTIONS: &str = "gateway_websocket_connections";
    pub const WEBSOCKET_MESSAGES: &str = "gateway_websocket_messages_total";
    pub const RESPONSE_CACHE_EVICTIONS: &str = "gateway_response_cache_evictions_total";
    pub const FAILED_ITEMS: &str = "gateway_failed_records_total";
    pub const BISECTED_CALLS: &str = "gateway_upstream_bisected_calls_total";
    pub const CONNECTIONS_OPEN: &str = "gateway_connections_open";
    pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
    pub const SPOOL_RECORDS: &str = "gateway_spool_records";
    pub const SPOOL_BYTES: &str = "gateway_spool_bytes";
    pub const SPOOL_APPENDED: &str = "gateway_spool_appended_records_total";
    pub const SPOOL_REPLAYED: &str = "gateway_spool_replayed_records_total";
    pub const SPOOL_REFUSED: &str = "gateway_spool_refused_requests_total";
    pub const SPOOL_DEAD: &str = "gateway_spool_dead_lettered_records_total";
}

/// Installs JSON logging (level from `RUST_LOG`, default `info`) once per process.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process's recorder: `metrics` has one global recorder per process by design.
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The Prometheus recorder, installed on first use (a process has one recorder) with the
/// default buckets, unless [`install`] came first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| recorder(&LATENCY_BUCKETS, &SIZE_BUCKETS))
        .as_ref()
}

/// Installs the recorder with the configuration's buckets; false if one was installed
/// already (its buckets stay: they change at a restart).
pub fn install(latency: &[f64], size: &[f64]) -> bool {
    let mut installed = false;
    PROMETHEUS.get_or_init(|| {
        installed = true;
        recorder(latency, size)
    });
    installed
}

/// Latency histogram buckets, in seconds, unless configured (`telemetry.latency_buckets`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Batch size buckets, unless configured (`telemetry.size_buckets`).
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

fn recorder(latency: &[f64], size: &[f64]) -> Option<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, bounds) in [
        (names::REQUEST_SECONDS, latency),
        (names::BATCH_RECORDS, size),
        (names::BATCH_REQUESTS, size),
        (names::BATCH_WAIT_SECONDS, latency),
        (names::AUTHORIZER_LAMBDA_SECONDS, latency),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), bounds)
            .ok()?;
    }
    builder.install_recorder().ok()
}

/// How often histogram samples are folded into their buckets. The recorder keeps every sample
/// until then, so without it memory grows with the request count.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into buckets every [`UPKEEP_INTERVAL`], until the process
/// ends (needs a tokio runtime).
pub fn spawn_upkeep() {
    if let Some(handle) = prometheus() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// One route's per-request metrics, registered once so that the request path neither builds
/// label strings nor looks up the registry. Counters by status are registered on first use.
///
/// A route's series are registered at its first request, not up front: a large API whose
/// routes are mostly idle exports only the ones in use (and an idle route costs a few
/// bytes, not its status table).
pub struct RouteMetrics {
    route: String,
    latency: std::sync::OnceLock<metrics::Histogram>,
    /// Calls and failures, for routes with an upstream.
    upstream: Option<(metrics::Counter, metrics::Counter)>,
    /// By status code minus 100, made at the first request.
    statuses: std::sync::OnceLock<Box<[std::sync::OnceLock<metrics::Counter>]>>,
    /// Labels beside the route's (a stage's `stage` and `canary`).
    extra: Vec<metrics::Label>,
}

impl RouteMetrics {
    pub fn new(route: &str, action: Option<&'static str>) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            latency: std::sync::OnceLock::new(),
            upstream: action.map(|action| {
                (
                    metrics::counter!(names::UPSTREAM_CALLS, "action" => action),
                    metrics::counter!(names::UPSTREAM_FAILURES, "action" => action),
                )
            }),
            statuses: std::sync::OnceLock::new(),
            extra: Vec::new(),
        }
    }

    /// The same with more labels on its request series (count and latency).
    pub fn labelled(mut self, labels: Vec<(&'static str, String)>) -> RouteMetrics {
        self.extra = labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        self
    }

    fn labels(&self) -> Vec<metrics::Label> {
        let mut labels = route_labels(&self.route);
        labels.extend(self.extra.iter().cloned());
        labels
    }

    pub fn request_done(&self, status: u16, seconds: f64) {
        let register = || {
            let mut labels = self.labels();
            labels.push(metrics::Label::new("status", status.to_string()));
            metrics::counter!(names::REQUESTS, labels)
        };
        let statuses = self
            .statuses
            .get_or_init(|| (100..600).map(|_| std::sync::OnceLock::new()).collect());
        match statuses.get(usize::from(status).wrapping_sub(100)) {
            Some(cell) => cell.get_or_init(register).increment(1),
            None => register().increment(1),
        }
        self.latency
            .get_or_init(|| metrics::histogram!(names::REQUEST_SECONDS, self.labels()))
            .record(seconds);
    }

    /// The route's label.
    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn upstream_call(&self, ok: bool) {
        if let Some((calls, failures)) = &self.upstream {
            calls.increment(1);
            if !ok {
                failures.increment(1);
            }
        }
    }
}

/// A batch left for the upstream: its size and how long its first record waited.
pub fn batch_flushed(route: &str, requests: usize, records: usize, waited: std::time::Duration) {
    let labels = route_labels(route);
    metrics::histogram!(names::BATCH_RECORDS, labels.clone()).record(records as f64);
    metrics::histogram!(names::BATCH_REQUESTS, labels.clone()).record(requests as f64);
    metrics::histogram!(names::BATCH_WAIT_SECONDS, labels).record(waited.as_secs_f64());
}

/// User records packed into KPL aggregated records.
pub fn batch_aggregated(route: &str, user_records: usize, aggregates: usize) {
    let labels = route_labels(route);
    metrics::counter!(names::AGGREGATED_RECORDS, labels.clone()).increment(user_records as u64);
    metrics::counter!(names::AGGREGATES, labels).increment(aggregates as u64);
}

/// The gauge of requests waiting in a route's batch queue, registered once a request has
/// waited (an idle route's depth is 0 and not exported).
pub fn batch_queue_depth(route: &str) -> LazyGauge {
    LazyGauge(std::sync::Arc::new((
        route.to_string(),
        std::sync::OnceLock::new(),
    )))
}

/// A per-route gauge registered at its first value other than 0.
#[derive(Debug, Clone)]
pub struct LazyGauge(std::sync::Arc<(String, std::sync::OnceLock<metrics::Gauge>)>);

impl LazyGauge {
    pub fn set(&self, value: f64) {
        let (route, gauge) = &*self.0;
        match gauge.get() {
            Some(g) => g.set(value),
            None if value == 0.0 => {}
            None => gauge
                .get_or_init(|| metrics::gauge!(names::BATCH_QUEUE_DEPTH, route_labels(route)))
                .set(value),
        }
    }
}

/// Connections open on a listener (`main` or `admin`).
pub fn connections_open(listener: &'static str, open: usize) {
    metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => listener).set(open as f64);
}

/// A connection closed as soon as it was accepted, past a limit (`total`, `per_address`).
pub fn connection_refused(listener: &'static str, reason: &'static str) {
    metrics::counter!(names::CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason)
        .increment(1);
}

/// Whether a route's upstream was found (1) or not (0) by the last check.
pub fn upstream_ready(route: &str, ready: bool) {
    metrics::gauge!(names::UPSTREAM_READY, route_labels(route)).set(f64::from(u8::from(ready)));
}

/// A request presented a key the snapshot did not know: what the store check did
/// (`reloaded`, `unchanged`, `remembered` as missing, or `over_budget`).
pub fn key_miss_check(result: &'static str) {
    metrics::counter!(names::KEY_MISS_CHECKS, "result" => result).increment(1);
}

/// Quota lease calls to the fleet store, by result (`granted`, `spent`, `failed`,
/// `returned`).
pub fn quota_lease(result: &'static str) {
    metrics::counter!(names::QUOTA_LEASES, "result" => result).increment(1);
}

/// Calls to the fleet store's tables, by operation (each attempt counts).
pub fn fleet_store_call(operation: &'static str) {
    metrics::counter!(names::FLEET_STORE_CALLS, "operation" => operation).increment(1);
}

/// The live nodes of the fleet, as this node counted them.
pub fn fleet_nodes(n: u32) {
    metrics::gauge!(names::FLEET_NODES).set(f64::from(n));
}

/// Items sent again after a transient failure.
pub fn retried(action: &'static str, items: usize) {
    metrics::counter!(names::RETRIES, "action" => action).increment(items as u64);
}

/// Calls the service refused for what one of their records held, split in two to find it.
pub fn bisected(action: &'static str) {
    metrics::counter!(names::BISECTED_CALLS, "action" => action).increment(1);
}

/// Items that failed for good (reported to the client as not accepted).
pub fn failed_items(action: &'static str, items: usize) {
    metrics::counter!(names::FAILED_ITEMS, "action" => action).increment(items as u64);
}

/// A route's spool: what waits on disk, what went in and out, and requests refused.
#[derive(Debug, Clone)]
pub struct SpoolMetrics {
    pub records: metrics::Gauge,
    pub bytes: metrics::Gauge,
    pub appended: metrics::Counter,
    pub replayed: metrics::Counter,
    pub refused: metrics::Counter,
    pub dead_lettered: metrics::Counter,
}

impl SpoolMetrics {
    pub fn new(route: &str) -> SpoolMetrics {
        let r = || route_labels(route);
        SpoolMetrics {
            records: metrics::gauge!(names::SPOOL_RECORDS, r()),
            bytes: metrics::gauge!(names::SPOOL_BYTES, r()),
            appended: metrics::counter!(names::SPOOL_APPENDED, r()),
            replayed: metrics::counter!(names::SPOOL_REPLAYED, r()),
            refused: metrics::counter!(names::SPOOL_REFUSED, r()),
            dead_lettered: metrics::counter!(names::SPOOL_DEAD, r()),
        }
    }
}

/// A cached route's lookup: `hit`, `miss` or `invalidated`.
pub fn response_cache(route: &str, result: &'static str) {
    let mut labels = route_labels(route);
    labels.push(metrics::Label::new("result", result));
    metrics::counter!(names::RESPONSE_CACHE, labels).increment(1);
}

/// WebSocket connections opened (+1) or closed (-1).
pub fn websocket_connections(delta: i64) {
    metrics::gauge!(names::WEBSOCKET_CONNECTIONS).increment(delta as f64);
}

/// A WebSocket message's outcome, by route key and status.
pub fn websocket_message(route_key: &str, status: u16) {
    metrics::counter!(names::WEBSOCKET_MESSAGES, "route_key" => route_key.to_string(), "status" => status.to_string()).increment(1);
}

/// An answer a cached route dropped for room.
pub fn response_cache_evicted(route: &str) {
    metrics::counter!(names::RESPONSE_CACHE_EVICTIONS, route_labels(route)).increment(1);
}

/// Route labels other than the route's own name, by route name (`telemetry.route_label`),
/// set when a gateway is built; `None`: no route label.
static RELABELED: std::sync::RwLock<Option<HashMap<String, Option<String>>>> =
    std::sync::RwLock::new(None);

/// Sets what the `route` label of each route's series holds: its group, or nothing. Series
/// registered after this call carry it (a route's own, at its first request).
pub fn relabel_routes(labels: impl IntoIterator<Item = (String, Option<String>)>) {
    let mut map = RELABELED.write().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    for (route, label) in labels {
        if label.as_deref() == Some(route.as_str()) {
            map.remove(&route);
        } else {
            map.insert(route, label);
        }
    }
}

/// The labels of a route's series: `route="METHOD /path"`, its group, or none.
fn route_labels(route: &str) -> Vec<metrics::Label> {
    let map = RELABELED.read().unwrap_or_else(|p| p.into_inner());
    match map.as_ref().and_then(|m| m.get(route)) {
        None => vec![metrics::Label::new("route", route.to_string())],
        Some(Some(label)) => vec![metrics::Label::new("route", label.clone())],
        Some(None) => Vec::new(),
    }
}
