//! Partial failures: a stub Kinesis throttles some records; only those are retried, and a
//! record still failing at the route's deadline is a 5xx naming the failure, never a 200.

mod support;

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use ingest_gateway::server;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
timeout = "1s"
"#;

const TEMPLATE: &str = r#"{"StreamName": "s", "Records": [#foreach($e in $input.path('$.events'))#set($j = $input.json("$.events[$foreach.index]")){"Data": "$util.base64Encode($j)", "PartitionKey": "$e.pk"}#if($foreach.hasNext),#end#end]}"#;

async fn post(
    gw: &std::sync::Arc<ingest_gateway::pipeline::Gateway>,
    body: &Json,
) -> (u16, Option<String>, Json) {
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = server::app(gw.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn only_failed_records_are_retried_until_accepted() {
    let stub = support::stub_kinesis().await;
    let gw = support::in_process(CONFIG, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let events = json!({"events": [
        {"pk": "ok-1", "n": 1}, {"pk": "flaky-2", "n": 2}, {"pk": "ok-3", "n": 3}, {"pk": "flaky-4", "n": 4}
    ]});
    let (status, _, body) = post(&gw, &events).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["FailedRecordCount"], 0);
    let records = body["Records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert!(
        records.iter().all(|r| r["SequenceNumber"].is_string()),
        "{body}"
    );
    assert_eq!(
        stub.calls.load(Ordering::SeqCst),
        2,
        "one call, then one retry"
    );
    assert_eq!(
        stub.records.load(Ordering::SeqCst),
        6,
        "4 records, then only the 2 that failed"
    );
}

#[tokio::test]
async fn records_failing_past_the_deadline_are_a_5xx_that_names_them() {
    let stub = support::stub_kinesis().await;
    let gw = support::in_process(CONFIG, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let events = json!({"events": [{"pk": "ok-1"}, {"pk": "always-2"}, {"pk": "ok-3"}]});
    let started = std::time::Instant::now();
    let (status, retry, body) = post(&gw, &events).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "within the route's 1 s timeout"
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        body["message"],
        "1 of 3 records were not accepted (ProvisionedThroughputExceededException); the others were"
    );
    assert_eq!(body["FailedRecordCount"], 1);
    assert!(body["Records"][0]["SequenceNumber"].is_string());
    assert_eq!(
        body["Records"][1]["ErrorCode"],
        "ProvisionedThroughputExceededException"
    );
    assert!(body["Records"][2]["SequenceNumber"].is_string());
    let calls = stub.calls.load(Ordering::SeqCst);
    assert!(calls >= 3, "retried with backoff: {calls} calls");
    assert_eq!(
        stub.records.load(Ordering::SeqCst),
        3 + (calls - 1),
        "only the failing record was retried"
    );
}

const BATCHED: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
timeout = "5s"
batch = { linger = "100ms", max_records = 500 }
"#;

#[tokio::test]
async fn concurrent_requests_share_upstream_calls_and_get_their_own_results() {
    let stub = support::stub_kinesis().await;
    let gw = support::in_process(BATCHED, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let gw = gw.clone();
        // Client 7 sends a record the upstream throttles once.
        let second = if i == 7 {
            "flaky-7b".to_string()
        } else {
            format!("ok-{i}b")
        };
        let body = json!({"events": [{"pk": format!("ok-{i}a"), "i": i}, {"pk": second, "i": i}]});
        tasks.push(tokio::spawn(async move { post(&gw, &body).await }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let records = body["Records"].as_array().unwrap();
        assert_eq!(records.len(), 2, "each client gets exactly its records");
        assert!(
            records.iter().all(|r| r["SequenceNumber"].is_string()),
            "{body}"
        );
        assert_eq!(body["FailedRecordCount"], 0);
    }
    let calls = stub.calls.load(Ordering::SeqCst);
    eprintln!("80 records from 40 concurrent requests: {calls} upstream calls");
    assert!(
        calls <= 4,
        "80 records from 40 requests took {calls} upstream calls"
    );
    assert_eq!(
        stub.records.load(Ordering::SeqCst),
        81,
        "80 records, plus the one retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_queue_answers_503_at_once_instead_of_growing() {
    let config = BATCHED.replace(
        r#"batch = { linger = "100ms", max_records = 500 }"#,
        r#"batch = { linger = "1ms", max_records = 1, queue = 2 }"#,
    );
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_secs(1)).await;
    let gw = support::in_process(&config, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let gw = gw.clone();
        let body = json!({"events": [{"pk": format!("ok-{i}")}]});
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = post(&gw, &body).await;
            (r, started.elapsed())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let ((status, retry, body), took) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert_eq!(body, json!({"message": "Service Unavailable"}));
                assert_eq!(retry.as_deref(), Some("1"));
                assert!(
                    took < std::time::Duration::from_millis(500),
                    "refused at once, not queued: {took:?}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!("{ok} accepted, {refused} refused with 503");
    assert!(refused > 0, "the bounded queue pushed back");
    assert!(ok >= 16, "calls in flight and the queue were served: {ok}");
    assert_eq!(ok + refused, 60);
}

/// The real binary driven far past what its batcher can take: refused requests get 503 with
/// `Retry-After` at once, memory stays bounded, and every acknowledged record reached the
/// upstream exactly once while no refused one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_bounded_memory_and_no_acked_record_lost() {
    const THREADS: usize = 64;
    const PER_THREAD: usize = 30;
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(100)).await;
    let config = BATCHED.replace(
        r#"batch = { linger = "100ms", max_records = 500 }"#,
        r#"batch = { linger = "1ms", max_records = 2, queue = 4 }"#,
    );
    let project = support::Project::custom("overload", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let pad = "p".repeat(1000);
    let results: Vec<(String, u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (gw, pad) = (&gw, &pad);
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let pk = format!("ok-{t}-{i}");
                            let body = json!({"events": [{"pk": pk, "pad": pad}]}).to_string();
                            let r = gw.post_json("/v1/events", &body);
                            let retry = r.header("retry-after").map(str::to_string);
                            (pk, r.status, retry)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let peak_mib = gw.peak_rss_kib() / 1024;

    let mut acked = Vec::new();
    let mut refused = 0;
    for (pk, status, retry) in results {
        match status {
            200 => acked.push(pk),
            503 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("{pk}: unexpected status {other}"),
        }
    }
    eprintln!(
        "{} acked, {refused} refused with 503, peak RSS {peak_mib} MiB",
        acked.len()
    );
    assert!(
        refused > THREADS * PER_THREAD / 4,
        "the gateway pushed back"
    );
    assert!(!acked.is_empty());
    assert!(peak_mib < 100, "peak RSS {peak_mib} MiB");

    // Exactly the acknowledged records reached the upstream, each once.
    let mut upstream = stub.accepted.lock().unwrap().clone();
    upstream.sort();
    acked.sort();
    assert_eq!(upstream, acked);
}

/// Past a route's `queue_bytes`, requests wait with their bodies unread until earlier ones
/// are answered, instead of being refused; one that waits past `body_read_timeout` gets 503
/// with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_routes_queue_bytes_wait_for_room_then_are_refused() {
    use std::time::{Duration, Instant};
    let stub = support::stub_kinesis_with_latency(Duration::from_millis(1500)).await;
    let config = format!(
        "[server]\nbody_read_timeout = \"2s\"\n{}",
        BATCHED.replace(
            r#"batch = { linger = "100ms", max_records = 500 }"#,
            r#"batch = { linger = "1ms", queue_bytes = 5000 }"#,
        )
    );
    let project = support::Project::custom("room", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let pad = "p".repeat(4000);
    let started = Instant::now();
    // A, B and C, one after another: A fills the room, B waits for A's 1.5 s call and is
    // answered after its own, C would wait past its 2 s.
    let results: Vec<(u16, Option<String>, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|pk| {
                let (gw, pad) = (&gw, &pad);
                let h = scope.spawn(move || {
                    let body = json!({"events": [{"pk": pk, "pad": pad}]}).to_string();
                    let r = gw.post_json("/v1/events", &body);
                    let retry = r.header("retry-after").map(str::to_string);
                    (r.status, retry, started.elapsed())
                });
                std::thread::sleep(Duration::from_millis(150));
                h
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let [(a, _, a_at), (b, _, b_at), (c, c_retry, _)] = results.as_slice() else {
        panic!("three answers")
    };
    assert_eq!((*a, *b), (200, 200), "{results:?}");
    assert!(
        *b_at >= *a_at + Duration::from_millis(1000),
        "B waited for A's call, then made its own: {results:?}"
    );
    assert_eq!(*c, 503, "{results:?}");
    assert_eq!(c_retry.as_deref(), Some("1"));
    // Each of A and B in a call of its own; C's record never left.
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    let mut accepted = stub.accepted.lock().unwrap().clone();
    accepted.sort();
    assert_eq!(accepted, ["a", "b"]);
}

/// SIGTERM under steady load: `/readyz` fails at once while requests are still served for
/// `shutdown_delay`; then connections are refused, in-flight batches flush, and the process
/// exits cleanly. Every request acknowledged with 200 reached the upstream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_no_acked_record() {
    const CLIENTS: usize = 8;
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(20)).await;
    let config = format!(
        "[server]\nshutdown_delay = \"1s\"\nshutdown_grace = \"10s\"\n{}",
        BATCHED.replace(r#"linger = "100ms""#, r#"linger = "20ms""#)
    );
    let project = support::Project::custom("drain", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let addr = gw.addr.clone();
    let accepted = stub.accepted.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let started = std::time::Instant::now();
        let term_at = std::sync::OnceLock::new();
        let (clients, ready_seen_failing, exit) = std::thread::scope(|scope| {
            let clients = steady_load(scope, &addr, CLIENTS, &stop, started, |c, i| {
                format!("ok-{c}-{i}")
            });
            std::thread::sleep(std::time::Duration::from_millis(500));
            let ready = support::request(&addr, "GET", "/readyz", &[], b"");
            assert_eq!(ready.status, 200);
            term_at.set(started.elapsed()).unwrap();
            gw.terminate();
            // Within the delay: not ready, still serving.
            let mut failing = false;
            for _ in 0..20 {
                let r = support::try_request(&addr, "GET", "/readyz", &[], b"");
                if r.is_some_and(|r| r.status == 503) {
                    failing = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let (exit, log) = gw.stop();
            stop.store(true, Ordering::SeqCst);
            let clients = joined(clients);
            assert!(!log.contains("panicked"), "{log}");
            (clients, failing, exit)
        });
        (clients, ready_seen_failing, exit, *term_at.get().unwrap())
    })
    .await
    .unwrap();
    let (results, ready_seen_failing, exit, term_at) = outcome;
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(ready_seen_failing, "/readyz failed during the delay");
    let during_delay = results
        .iter()
        .filter(|(_, status, at)| {
            *status == 200 && *at > term_at + std::time::Duration::from_millis(200)
        })
        .count();
    let other: Vec<u16> = results
        .iter()
        .map(|(_, s, _)| *s)
        .filter(|s| *s != 200)
        .collect();
    let delivered = accepted.lock().unwrap().clone();
    assert!(
        other.is_empty(),
        "every answered request was accepted: {other:?}"
    );
    assert!(
        during_delay > 0,
        "requests were still served during the delay"
    );
    let acked = assert_acked_delivered_once(&results, &delivered);
    eprintln!(
        "{acked} acked ({during_delay} after SIGTERM), {} delivered",
        delivered.len()
    );
}

/// Steady load from 8 clients: a second, then `down()`, ten seconds, `up()`, three more
/// seconds. Returns every result and when the outage ended.
fn load_through_outage(
    addr: &str,
    down: impl FnOnce(),
    up: impl FnOnce(),
) -> (Sent, std::time::Duration) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::time::Instant::now();
    let mut ended = std::time::Duration::ZERO;
    let results = std::thread::scope(|scope| {
        let clients = steady_load(scope, addr, 8, &stop, started, |c, i| format!("ok-{c}-{i}"));
        std::thread::sleep(std::time::Duration::from_secs(1));
        down();
        std::thread::sleep(std::time::Duration::from_secs(10));
        up();
        ended = started.elapsed();
        std::thread::sleep(std::time::Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        joined(clients)
    });
    (results, ended)
}

/// One client's results: partition key, status, when the answer came.
type Sent = Vec<(String, u16, std::time::Duration)>;

/// `clients` threads posting one event each request, keyed by `key(client, i)`, until `stop`
/// is set or a connection is refused.
fn steady_load<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    addr: &'s str,
    clients: usize,
    stop: &'s std::sync::atomic::AtomicBool,
    started: std::time::Instant,
    key: impl Fn(usize, usize) -> String + Send + Sync + Copy + 's,
) -> Vec<std::thread::ScopedJoinHandle<'s, Sent>> {
    (0..clients)
        .map(|c| {
            scope.spawn(move || {
                let mut results = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let pk = key(c, i);
                    let body = json!({"events": [{"pk": pk}]}).to_string();
                    let r = support::try_request(
                        addr,
                        "POST",
                        "/v1/events",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    );
                    match r {
                        Some(r) => results.push((pk, r.status, started.elapsed())),
                        // Refused: the listener is closed.
                        None => break,
                    }
                }
                results
            })
        })
        .collect()
}

fn joined(handles: Vec<std::thread::ScopedJoinHandle<'_, Sent>>) -> Sent {
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

/// Every acknowledged key reached the upstream exactly once; returns how many were acked.
fn assert_acked_delivered_once(results: &Sent, delivered: &[String]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for d in delivered {
        *counts.entry(d.as_str()).or_insert(0) += 1;
    }
    let acked: Vec<&String> = results
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(pk, _, _)| pk)
        .collect();
    for pk in &acked {
        assert_eq!(
            counts.get(pk.as_str()),
            Some(&1),
            "acked {pk} reached the upstream once"
        );
    }
    acked.len()
}

/// Steady load with 30% of the records throttled on their first attempt: only those are
/// retried, every request is acknowledged, and every acknowledged record is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_throttled_under_load_loses_nothing_acked() {
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(10)).await;
    let config = BATCHED.replace(r#"linger = "100ms""#, r#"linger = "10ms""#);
    let project = support::Project::custom("throttled", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let accepted = stub.accepted.clone();
    let retried_before = stub.records.load(Ordering::SeqCst);
    let results = tokio::task::spawn_blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let started = std::time::Instant::now();
        let results = std::thread::scope(|scope| {
            // The stub refuses a "flaky-" record the first time it sees it.
            let clients = steady_load(scope, &gw.addr, 8, &stop, started, |c, i| {
                if (c * 7 + i) % 10 < 3 {
                    format!("flaky-{c}-{i}")
                } else {
                    format!("ok-{c}-{i}")
                }
            });
            std::thread::sleep(std::time::Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
            joined(clients)
        });
        gw.stop_cleanly();
        results
    })
    .await
    .unwrap();
    let delivered = accepted.lock().unwrap().clone();
    let flaky = results
        .iter()
        .filter(|(pk, _, _)| pk.starts_with("flaky-"))
        .count();
    let acked = assert_acked_delivered_once(&results, &delivered);
    let sent_to_stub = stub.records.load(Ordering::SeqCst) - retried_before;
    eprintln!(
        "{} requests, {acked} acked, {flaky} throttled once, {} delivered, {sent_to_stub} records sent",
        results.len(),
        delivered.len()
    );
    assert!(results.len() > 50, "steady load: {}", results.len());
    assert_eq!(acked, results.len(), "all acknowledged after retries");
    assert!(flaky * 4 > results.len(), "about 30% were throttled");
    assert_eq!(
        sent_to_stub,
        results.len() + flaky,
        "only the throttled records were sent again"
    );
}

/// Steady load through a 10-second upstream outage (every call fails with 500): requests in
/// the outage get a 5xx with `Retry-After` once the retry deadline passes, never a 200; the
/// gateway recovers by itself; every acknowledged record was delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_outage_under_load_acks_nothing_it_did_not_deliver() {
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(10)).await;
    let config = BATCHED
        .replace(r#"linger = "100ms""#, r#"linger = "10ms""#)
        .replace(r#"timeout = "5s""#, r#"timeout = "2s""#);
    let project = support::Project::custom("outage", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let (accepted, outage) = (stub.accepted.clone(), stub.outage.clone());
    let (results, outage_ended) = tokio::task::spawn_blocking(move || {
        let run = load_through_outage(
            &gw.addr,
            || outage.store(true, Ordering::SeqCst),
            || outage.store(false, Ordering::SeqCst),
        );
        gw.stop_cleanly();
        run
    })
    .await
    .unwrap();
    let delivered = accepted.lock().unwrap().clone();
    let acked = assert_acked_delivered_once(&results, &delivered);
    let failed: Vec<u16> = results
        .iter()
        .map(|(_, s, _)| *s)
        .filter(|s| *s != 200)
        .collect();
    let recovered = results
        .iter()
        .filter(|(_, s, at)| *s == 200 && *at > outage_ended + std::time::Duration::from_secs(2))
        .count();
    eprintln!(
        "{} requests, {acked} acked, {} failed ({:?}), {recovered} acked after recovery, {} delivered",
        results.len(),
        failed.len(),
        failed.iter().collect::<std::collections::BTreeSet<_>>(),
        delivered.len()
    );
    assert!(!failed.is_empty(), "the outage was reported to clients");
    assert!(
        failed.iter().all(|s| [502, 503, 504].contains(s)),
        "outage failures are 5xx the client may retry: {failed:?}"
    );
    assert!(recovered > 0, "the gateway recovered by itself");
}

/// Every acknowledged (200 or 202) key reached the upstream at least once; returns how many
/// were acknowledged and how many of those arrived more than once.
fn assert_acked_delivered(results: &Sent, delivered: &[String]) -> (usize, usize) {
    let mut counts = std::collections::HashMap::new();
    for d in delivered {
        *counts.entry(d.as_str()).or_insert(0usize) += 1;
    }
    let acked: Vec<&String> = results
        .iter()
        .filter(|(_, status, _)| [200, 202].contains(status))
        .map(|(pk, _, _)| pk)
        .collect();
    let lost: Vec<&&String> = acked
        .iter()
        .filter(|pk| !counts.contains_key(pk.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records never reached the upstream, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    let twice = acked.iter().filter(|pk| counts[pk.as_str()] > 1).count();
    (acked.len(), twice)
}

/// How many requests got each status.
fn status_counts(results: &Sent) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, status, _) in results {
        *counts.entry(*status).or_default() += 1;
    }
    counts
}

/// Waits (up to `secs`) until every acknowledged key has reached the upstream.
fn wait_for_delivery(results: &Sent, accepted: &std::sync::Mutex<Vec<String>>, secs: u64) {
    let acked: std::collections::HashSet<&str> = results
        .iter()
        .filter(|(_, status, _)| [200, 202].contains(status))
        .map(|(pk, _, _)| pk.as_str())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let delivered: std::collections::HashSet<String> =
            accepted.lock().unwrap().iter().cloned().collect();
        if acked.iter().all(|pk| delivered.contains(*pk)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The spool's waiting records, as `ingest-gateway spool status --json` reports them.
fn spooled_records(config: &std::path::Path) -> u64 {
    let out = std::process::Command::new(support::bin())
        .arg("--config")
        .arg(config)
        .args(["spool", "status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Json = serde_json::from_slice(&out.stdout).unwrap();
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["records"].as_u64().unwrap())
        .sum()
}

/// Steady load through a 10-second upstream outage with the spool in `fallback` mode: no
/// client gets an error; what the upstream did not take in time is acknowledged with 202
/// and delivered from the spool once the upstream is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_outage_with_a_fallback_spool_acks_everything_and_delivers_it_later() {
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(10)).await;
    let config = format!(
        "{}spool = \"fallback\"\n",
        BATCHED
            .replace(r#"linger = "100ms""#, r#"linger = "10ms""#)
            .replace(r#"timeout = "5s""#, r#"timeout = "2s""#)
    );
    let project = support::Project::custom("spool-outage", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let (accepted, outage) = (stub.accepted.clone(), stub.outage.clone());
    let results = tokio::task::spawn_blocking(move || {
        let (results, _) = load_through_outage(
            &gw.addr,
            || outage.store(true, Ordering::SeqCst),
            || outage.store(false, Ordering::SeqCst),
        );
        wait_for_delivery(&results, &accepted, 30);
        gw.stop_cleanly();
        results
    })
    .await
    .unwrap();
    let delivered = stub.accepted.lock().unwrap().clone();
    let (acked, twice) = assert_acked_delivered(&results, &delivered);
    let statuses = status_counts(&results);
    eprintln!(
        "{} requests, {acked} acked, statuses {statuses:?}, {} delivered, {twice} delivered twice",
        results.len(),
        delivered.len()
    );
    assert_eq!(acked, results.len(), "no client got an error: {statuses:?}");
    assert!(
        statuses.get(&202).is_some_and(|n| *n > 0),
        "some were spooled"
    );
    assert_eq!(spooled_records(&project.config), 0, "the spool drained");
}

/// Scenario (d): the gateway, acknowledging after local durability (`spool = "always"`),
/// is killed with SIGKILL under steady load and started again: every acknowledged record
/// reaches the upstream; records sent but not yet marked delivered at the kill come again,
/// and are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_the_spool_on_loses_no_acked_record() {
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_millis(10)).await;
    let config = format!(
        "{}spool = \"always\"\n",
        BATCHED.replace(r#"linger = "100ms""#, r#"linger = "10ms""#)
    );
    let project = support::Project::custom("spool-kill", &config, &[("records.vtl", TEMPLATE)]);
    let path = project.config.clone();
    let endpoint = stub.endpoint.clone();
    let accepted = stub.accepted.clone();
    let (results, log) = tokio::task::spawn_blocking(move || {
        let mut results = Sent::new();
        let mut log = String::new();
        for (round, key) in ["a", "b", "c"].into_iter().enumerate() {
            let gw = support::Gateway::start_against(&path, &endpoint);
            let stop = std::sync::atomic::AtomicBool::new(false);
            let started = std::time::Instant::now();
            let earlier = results.clone();
            let addr = gw.addr.clone();
            let round_results = std::thread::scope(|scope| {
                let clients = steady_load(scope, &addr, 8, &stop, started, move |c, i| {
                    format!("ok-{key}-{c}-{i}")
                });
                std::thread::sleep(std::time::Duration::from_millis(1500));
                if round < 2 {
                    log.push_str(&gw.kill());
                } else {
                    stop.store(true, Ordering::SeqCst);
                    let clients = joined(clients);
                    let mut all = earlier;
                    all.extend(clients.iter().cloned());
                    wait_for_delivery(&all, &accepted, 30);
                    gw.stop_cleanly();
                    return clients;
                }
                joined(clients)
            });
            results.extend(round_results);
        }
        (results, log)
    })
    .await
    .unwrap();
    assert!(!log.contains("panicked"), "{log}");
    let delivered = stub.accepted.lock().unwrap().clone();
    let (acked, twice) = assert_acked_delivered(&results, &delivered);
    let statuses = status_counts(&results);
    eprintln!(
        "{} requests answered, {acked} acked, statuses {statuses:?}, {} delivered, {twice} delivered more than once",
        results.len(),
        delivered.len()
    );
    assert!(acked > 100, "steady load: {acked}");
    assert_eq!(
        acked,
        results.len(),
        "every answered request was acknowledged: {statuses:?}"
    );
    assert_eq!(spooled_records(&project.config), 0, "the spool drained");
}

/// A private emulator whose state survives a restart (`PERSIST_STATE`), on its own port.
struct PrivateEmulator {
    port: String,
    state: std::path::PathBuf,
}

impl PrivateEmulator {
    fn start(port: &str, state: &std::path::Path) -> PrivateEmulator {
        let emulator = PrivateEmulator {
            port: port.to_string(),
            state: state.to_path_buf(),
        };
        emulator.up();
        emulator
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn up(&self) {
        let ok = std::process::Command::new(support::repo().join("scripts/emulator"))
            .args(["start", &self.port])
            .env("PERSIST_STATE", "1")
            .env("STATE_DIR", &self.state)
            .status()
            .unwrap();
        assert!(ok.success(), "the private emulator started");
    }

    /// Stops it (it saves its state on the way out) and waits until the port is closed.
    fn down(&self) {
        let _ = std::process::Command::new(support::repo().join("scripts/emulator"))
            .args(["stop", &self.port])
            .status();
        for _ in 0..100 {
            if std::net::TcpStream::connect(format!("127.0.0.1:{}", self.port)).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the private emulator did not stop");
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        let _ = std::process::Command::new(support::repo().join("scripts/emulator"))
            .args(["stop", &self.port])
            .status();
    }
}

/// The partition keys of every record in a stream (each record is an event `{"pk": ...}`).
async fn stream_keys(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    support::stream_data(kinesis, stream)
        .await
        .iter()
        .map(|d| {
            let event: Json = serde_json::from_slice(d).unwrap();
            event["pk"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// Scenario (b) against the real emulator: it is stopped for 10 seconds under steady load
/// and started again. With a `fallback` spool no client gets an error; records the stream
/// could not take wait on disk and reach it once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_stopped_and_restarted_under_load_loses_nothing_acked() {
    if support::emulator().is_none() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let state = std::env::temp_dir().join(support::unique("ingest-gateway-emulator-state-"));
    let emulator = tokio::task::spawn_blocking({
        let state = state.clone();
        move || PrivateEmulator::start(&port, &state)
    })
    .await
    .unwrap();
    let sdk = support::aws(&emulator.endpoint()).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let stream = support::unique("outage-");
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .unwrap();
    let config = format!(
        "{}spool = \"fallback\"\n",
        BATCHED
            .replace(r#"linger = "100ms""#, r#"linger = "10ms""#)
            .replace(r#"timeout = "5s""#, r#"timeout = "2s""#)
            .replace(r#"target = "s""#, &format!("target = {stream:?}"))
    );
    let template = TEMPLATE.replace(
        r#""StreamName": "s""#,
        &format!("\"StreamName\": {stream:?}"),
    );
    let project =
        support::Project::custom("emulator-outage", &config, &[("records.vtl", &template)]);
    let gw = support::Gateway::start_against(&project.config, &emulator.endpoint());
    let (results, emulator, gw) = tokio::task::spawn_blocking(move || {
        let (results, _) = load_through_outage(&gw.addr, || emulator.down(), || emulator.up());
        (results, emulator, gw)
    })
    .await
    .unwrap();
    let acked: std::collections::HashSet<&str> = results
        .iter()
        .filter(|(_, s, _)| [200, 202].contains(s))
        .map(|(pk, _, _)| pk.as_str())
        .collect();
    let delivered = support::eventually(60, || async {
        let keys = stream_keys(&kinesis, &stream).await;
        let present: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        acked
            .iter()
            .all(|pk| present.contains(pk))
            .then_some(keys.clone())
    })
    .await;
    let statuses = status_counts(&results);
    tokio::task::spawn_blocking(move || gw.stop_cleanly())
        .await
        .unwrap();
    drop(emulator);
    let _ = std::fs::remove_dir_all(&state);
    let keys = delivered.unwrap_or_else(|| {
        panic!("acknowledged records are missing from the stream; statuses {statuses:?}")
    });
    let (acked_n, twice) = assert_acked_delivered(&results, &keys);
    eprintln!(
        "{} requests, {acked_n} acked, statuses {statuses:?}, {} records in the stream, {twice} delivered twice",
        results.len(),
        keys.len()
    );
    assert_eq!(
        acked_n,
        results.len(),
        "no client got an error: {statuses:?}"
    );
    assert!(
        statuses.get(&202).is_some_and(|n| *n > 0),
        "some were spooled"
    );
}

/// `aws.call_timeout` bounds each attempt of an AWS call: against an upstream that never
/// answers, the gateway gives up on an attempt and tries again within the route's timeout,
/// instead of waiting on one call until the route gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_aws_call_attempt_is_bounded_by_the_call_timeout() {
    let stub = support::stub_kinesis_with_latency(std::time::Duration::from_secs(30)).await;
    let config = format!(
        "[aws]\ncall_timeout = \"300ms\"\n{}",
        BATCHED.replace(r#"linger = "100ms""#, r#"linger = "1ms""#)
    );
    let project = support::Project::custom("call-timeout", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let received = stub.received.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let r = gw.post_json("/v1/events", r#"{"events": [{"pk": "ok-1"}]}"#);
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(started.elapsed() < std::time::Duration::from_secs(6));
        // Without the bound, the first call would hang until the route gave up.
        let attempts = received.load(Ordering::SeqCst);
        assert!(
            attempts >= 2,
            "attempts were cut short and retried: {attempts}"
        );
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

/// The spool commands: `status` counts what waits, `inspect` shows the records, `replay`
/// delivers them with the gateway stopped (and refuses while one holds the spool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_commands_show_and_replay_what_waits() {
    let stub = support::stub_kinesis().await;
    stub.outage.store(true, Ordering::SeqCst);
    let config = format!(
        "{}spool = \"always\"\n",
        BATCHED.replace(r#"linger = "100ms""#, r#"linger = "1ms""#)
    );
    let project = support::Project::custom("spool-cli", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let env = [
        ("AWS_ENDPOINT_URL", stub.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let spool = |args: &[&str]| {
        std::process::Command::new(support::bin())
            .arg("--config")
            .arg(&project.config)
            .arg("spool")
            .args(args)
            .envs(env)
            .output()
            .unwrap()
    };
    let outage = stub.outage.clone();
    let gw = tokio::task::spawn_blocking(move || {
        for i in 0..5 {
            let r = gw.post_json(
                "/v1/events",
                &format!(r#"{{"events": [{{"pk": "ok-{i}", "n": {i}}}]}}"#),
            );
            assert_eq!(r.status, 202, "{}", r.text());
            assert_eq!(
                r.json(),
                json!({"message": "Accepted", "records": 1, "spooled": 1})
            );
        }
        gw
    })
    .await
    .unwrap();
    // While the gateway runs: status says it holds the spool; replay refuses.
    let status = spool(&["status", "--json"]);
    let status: Json = serde_json::from_slice(&status.stdout).unwrap();
    let route = &status["routes"][0];
    assert_eq!(route["route"], "POST /v1/events");
    assert_eq!(route["records"], 5);
    assert_eq!(route["in_use"], true);
    let refused = spool(&["replay"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{refused:?}"
    );

    tokio::task::spawn_blocking(move || gw.stop_cleanly())
        .await
        .unwrap();
    let inspect = spool(&["inspect", "--limit", "3"]);
    assert!(inspect.status.success());
    let lines: Vec<Json> = String::from_utf8_lossy(&inspect.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["route"], "POST /v1/events");
    assert_eq!(lines[0]["partition_key"], "ok-0");
    let event: Json = serde_json::from_str(lines[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(event, json!({"pk": "ok-0", "n": 0}));
    let text = String::from_utf8_lossy(&spool(&["status"]).stdout).to_string();
    assert!(
        text.contains("POST /v1/events") && text.contains(" 5 "),
        "{text}"
    );

    outage.store(false, Ordering::SeqCst);
    let replay = spool(&["replay"]);
    assert!(replay.status.success(), "{replay:?}");
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("POST /v1/events: 5 records delivered")
    );
    let delivered = stub.accepted.lock().unwrap().clone();
    assert_eq!(
        delivered,
        vec!["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"],
        "in order, once"
    );
    let status: Json = serde_json::from_slice(&spool(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["routes"][0]["records"], 0);
    assert_eq!(status["routes"][0]["in_use"], false);
}

/// An integration response can select by the service's error code: the outage's
/// `InternalFailure` gets the route's own answer, other errors keep the gateway's.
#[tokio::test]
async fn integration_responses_select_by_the_upstream_error_code() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "{}batch = false\n\n[[routes.responses]]\nerror_pattern = \"InternalFailure|ServiceUnavailable\"\nstatus = 503\nheaders = {{ \"retry-after\" = \"'30'\" }}\ntemplate = \"down.vtl\"\n\n[[routes.responses]]\nstatus = 200\n",
        CONFIG.replace(r#"timeout = "1s""#, r#"timeout = "3s""#)
    );
    let gw = support::in_process(
        &config,
        &[
            ("records.vtl", TEMPLATE),
            ("down.vtl", r#"{"down": "$input.path('$.__type')"}"#),
        ],
        &stub.endpoint,
    )
    .await;
    let events = json!({"events": [{"pk": "ok-1"}]});
    let (status, _, body) = post(&gw, &events).await;
    assert_eq!(status, 200, "{body}");
    stub.outage.store(true, Ordering::SeqCst);
    let (status, retry, body) = post(&gw, &events).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("30"));
    assert_eq!(body, json!({"down": "InternalFailure"}));
}

/// `$context.responseOverride` set in an integration response's template changes the
/// client's status and headers, as in API Gateway.
#[tokio::test]
async fn a_response_template_overrides_status_and_headers() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "{}batch = false\n\n[[routes.responses]]\nstatus = 200\ntemplate = \"created.vtl\"\n",
        CONFIG
    );
    let template = "#set($context.responseOverride.status = 201)\n#set($context.responseOverride.header.Location = \"/records/$input.path('$.Records[0].SequenceNumber')\")\n{\"stored\": $input.path('$.Records').size()}";
    let gw = support::in_process(
        &config,
        &[("records.vtl", TEMPLATE), ("created.vtl", template)],
        &stub.endpoint,
    )
    .await;
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(json!({"events": [{"pk": "ok-1"}]}).to_string()))
        .unwrap();
    let resp = server::app(gw.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/records/"), "{location}");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Json>(&bytes).unwrap(),
        json!({"stored": 1})
    );
}

/// `integration.response.header.NAME` copies a header of the service's HTTP response; a
/// batching route cannot use it (one call answers many requests).
#[tokio::test]
async fn integration_responses_copy_the_upstreams_headers() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "{}batch = false\n\n[[routes.responses]]\nstatus = 200\nheaders = {{ \"x-upstream-type\" = \"integration.response.header.Content-Type\", \"x-missing\" = \"integration.response.header.x-nope\" }}\n",
        CONFIG
    );
    let gw = support::in_process(&config, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(json!({"events": [{"pk": "ok-1"}]}).to_string()))
        .unwrap();
    let resp = server::app(gw.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["x-upstream-type"],
        "application/x-amz-json-1.1"
    );
    assert!(resp.headers().get("x-missing").is_none());

    let batched = config.replace("batch = false\n", "");
    let project =
        support::Project::custom("upstream-headers", &batched, &[("records.vtl", TEMPLATE)]);
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a route that does not batch")
            || String::from_utf8_lossy(&out.stdout).contains("needs a route that does not batch"),
        "{out:?}"
    );
}

/// Per-route series appear at a route's first request: an API of many idle routes exports
/// none of theirs, and a request to one adds that one's alone.
#[tokio::test]
async fn per_route_series_are_registered_at_first_use() {
    let stub = support::stub_kinesis().await;
    let prefix = support::unique("idle");
    let routes: String = (0..200)
        .map(|i| {
            format!("[[routes]]\nmethod = \"POST\"\npath = \"/{prefix}/r{i}\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\nrequest_templates = {{ \"application/json\" = \"records.vtl\" }}\nbatch = {{ linger = \"5ms\" }}\n\n")
        })
        .collect();
    let gw = support::in_process(&routes, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let scrape = || async {
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let resp = server::app(gw.clone()).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let ours = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&prefix) && !l.starts_with("gateway_upstream_ready"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        ours(&scrape().await),
        Vec::<String>::new(),
        "idle routes export nothing"
    );
    let req = Request::post(format!("/{prefix}/r7"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"events": [{"pk": "ok-1"}]}).to_string()))
        .unwrap();
    assert_eq!(
        server::app(gw.clone()).oneshot(req).await.unwrap().status(),
        200
    );
    let used = ours(&scrape().await);
    assert!(!used.is_empty());
    let route = format!("POST /{prefix}/r7\"");
    assert!(used.iter().all(|l| l.contains(&route)), "{used:#?}");
    assert!(used.iter().any(|l| l.starts_with("gateway_requests_total")));
    assert!(
        used.iter()
            .any(|l| l.starts_with("gateway_request_duration_seconds"))
    );
}

/// `telemetry.route_label`: `group` labels a route's series with its group (its own
/// `group`, or the first segment of its path), `none` drops the route label.
#[tokio::test]
async fn route_labels_can_be_groups_or_none() {
    let stub = support::stub_kinesis().await;
    let scrape = |gw: std::sync::Arc<ingest_gateway::pipeline::Gateway>| async move {
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let resp = server::app(gw).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let post = |gw: std::sync::Arc<ingest_gateway::pipeline::Gateway>, path: String| async move {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(json!({"events": [{"pk": "ok-1"}]}).to_string()))
            .unwrap();
        server::app(gw).oneshot(req).await.unwrap().status()
    };
    let route = |path: &str, group: &str| {
        format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"{path}\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\nrequest_templates = {{ \"application/json\" = \"records.vtl\" }}\n{group}\n"
        )
    };

    let g = support::unique("grp");
    let text = format!(
        "[telemetry]\nroute_label = \"group\"\n\n{}{}{}",
        route(&format!("/{g}/a"), ""),
        route(&format!("/{g}/b"), ""),
        route(&format!("/other/{g}"), &format!("group = \"{g}-named\"")),
    );
    let gw = support::in_process(&text, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    for path in [format!("/{g}/a"), format!("/{g}/b"), format!("/other/{g}")] {
        assert_eq!(post(gw.clone(), path).await, 200);
    }
    let text = scrape(gw).await;
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&g)).collect();
    let counts = |label: &str| {
        ours.iter()
            .filter(|l| l.starts_with("gateway_requests_total") && l.contains(label))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&format!("route=\"/{g}\"")), vec!["2"], "{ours:#?}");
    assert_eq!(
        counts(&format!("route=\"{g}-named\"")),
        vec!["1"],
        "{ours:#?}"
    );
    assert!(
        !ours.iter().any(|l| l.contains("POST /")),
        "no route's own label: {ours:#?}"
    );

    let n = support::unique("nolabel");
    let text = format!(
        "[telemetry]\nroute_label = \"none\"\n\n{}",
        route(&format!("/{n}"), "")
    );
    let gw = support::in_process(&text, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    assert_eq!(post(gw.clone(), format!("/{n}")).await, 200);
    let text = scrape(gw).await;
    assert!(!text.contains(&n), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gateway_requests_total{status=\"200\"}")),
        "one series for all routes: {text}"
    );
}

/// Routes on one target share its upstream check: 50 routes on one stream make one call.
#[tokio::test]
async fn routes_on_one_target_share_one_upstream_check() {
    let stub = support::stub_kinesis().await;
    let routes: String = (0..50)
        .map(|i| {
            format!("[[routes]]\nmethod = \"POST\"\npath = \"/shared/r{i}\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\nrequest_templates = {{ \"application/json\" = \"records.vtl\" }}\n\n")
        })
        .collect();
    let gw = support::in_process(&routes, &[("records.vtl", TEMPLATE)], &stub.endpoint).await;
    let watched = ingest_gateway::pipeline::readiness::watch(gw.clone());
    tokio::time::timeout(std::time::Duration::from_secs(10), watched)
        .await
        .expect("every route is found ready");
    assert!(gw.upstream_state.all_ready());
    assert_eq!(stub.described.load(Ordering::SeqCst), 1);
}

/// `telemetry.latency_buckets` and `size_buckets` set the histograms' bounds: the served
/// `/metrics` has those buckets and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_buckets_are_configurable() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "[telemetry]\nlatency_buckets = [0.05, 0.5]\nsize_buckets = [10.0]\n{}",
        BATCHED.replace("linger = \"100ms\"", "linger = \"1ms\"")
    );
    let project = support::Project::custom("buckets", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let body = json!({"events": [{"pk": "ok-1"}]}).to_string();
    assert_eq!(gw.post_json("/v1/events", &body).status, 200);
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    let buckets = |name: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_string()))
            .collect()
    };
    assert_eq!(
        buckets("gateway_request_duration_seconds"),
        ["0.05", "0.5", "+Inf"],
        "{metrics}"
    );
    assert_eq!(
        buckets("gateway_batch_records"),
        ["10", "+Inf"],
        "{metrics}"
    );
    gw.stop_cleanly();
}
