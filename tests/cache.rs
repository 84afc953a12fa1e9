//! Response caching through the real binary: a GET route in front of an HTTP backend on
//! loopback that counts its calls. Answers are kept per key parameters and caller, served
//! again without a backend call, refreshed by `Cache-Control: max-age=0` only for a key
//! whose plan may invalidate, never kept when they fail, and counted in `/metrics`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{Gateway, Project};

/// A backend answering `{"n": CALLS, "path": ...}`; 500 for paths with `bad`.
async fn backend() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let c = calls.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let c = c.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let status = if uri.path().contains("bad") { 500 } else { 200 };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                serde_json::json!({"n": n, "path": uri.to_string()}).to_string(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

fn config(backend: &str) -> String {
    format!(
        r#"
[auth]
key_store = "keys.db"

[usage_plans.reader]
quota = {{ limit = 1000, period = "DAY" }}

[usage_plans.admin]
invalidate_cache = true

[[routes]]
method = "GET"
path = "/devices/{{deviceId}}/status"
action = "http"
integration = "proxy"
uri = "http://{backend}/status/{{deviceId}}"
api_key_required = true
rate_limit_headers = true
cache = {{ ttl = "60s", key = ["path.deviceId", "querystring.since"], max_bytes = 1048576, x_cache = true }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_are_cached_per_parameters_and_caller() {
    let (addr, calls) = backend().await;
    let project = Project::custom("cache", &config(&addr), &[]);
    let reader = project.key("reader");
    let other = project.key("reader");
    let admin = project.key("admin");
    let gw = Gateway::start(&project.config);
    let get = |path: &str, key: &str, fresh: bool| {
        let mut headers = vec![("x-api-key", key)];
        if fresh {
            headers.push(("cache-control", "max-age=0"));
        }
        let r = gw.request("GET", path, &headers, b"");
        let n = r.json()["n"].as_u64();
        (r.status, r.header("x-cache").map(str::to_string), n, r)
    };
    let (path, later) = ("/devices/a/status?since=1", "/devices/a/status?since=2");

    let (status, x, n, first) = tokio::task::block_in_place(|| get(path, &reader, false));
    assert_eq!(
        (status, x.as_deref(), n),
        (200, Some("Miss"), Some(1)),
        "{}",
        first.text()
    );
    let (status, x, n, hit) = tokio::task::block_in_place(|| get(path, &reader, false));
    assert_eq!((status, x.as_deref(), n), (200, Some("Hit"), Some(1)));
    assert_ne!(
        first.header("x-amzn-requestid"),
        hit.header("x-amzn-requestid"),
        "a hit has its own request id"
    );
    assert_eq!(
        hit.header("x-ratelimit-remaining"),
        Some("998"),
        "a hit counts against the key's quota"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the hit did not reach the backend"
    );

    // Another caller, another key parameter: their own answers.
    let (_, x, n, _) = tokio::task::block_in_place(|| get(path, &other, false));
    assert_eq!((x.as_deref(), n), (Some("Miss"), Some(2)));
    let (_, x, n, _) = tokio::task::block_in_place(|| get(later, &reader, false));
    assert_eq!((x.as_deref(), n), (Some("Miss"), Some(3)));

    // max-age=0 from a key whose plan may not invalidate: ignored.
    let (_, x, n, _) = tokio::task::block_in_place(|| get(path, &reader, true));
    assert_eq!((x.as_deref(), n), (Some("Hit"), Some(1)));
    // From the admin plan's key: a fresh answer for the admin's own entry.
    tokio::task::block_in_place(|| get(path, &admin, false));
    let (_, x, n, _) = tokio::task::block_in_place(|| get(path, &admin, true));
    assert_eq!((x.as_deref(), n), (Some("Miss"), Some(5)));
    let (_, x, n, _) = tokio::task::block_in_place(|| get(path, &admin, false));
    assert_eq!((x.as_deref(), n), (Some("Hit"), Some(5)));

    // Failures are not kept; refused requests neither reach the backend nor the cache.
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..2 {
        let (status, x, _, _) =
            tokio::task::block_in_place(|| get("/devices/bad/status", &reader, false));
        assert_eq!((status, x.as_deref()), (500, Some("Miss")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);
    let (status, _, _, _) =
        tokio::task::block_in_place(|| get(path, "wrong-key-0123456789abcdef", false));
    assert_eq!(status, 403);
    let r = tokio::task::block_in_place(|| gw.request("GET", path, &[], b""));
    assert_eq!(r.status, 403);
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);

    let metrics = tokio::task::block_in_place(|| gw.request("GET", "/metrics", &[], b"")).text();
    for (result, expected) in [("hit", 3.0), ("miss", 6.0), ("invalidated", 1.0)] {
        let count: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("gateway_response_cache_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(count, expected, "{result}:\n{metrics}");
    }
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

#[test]
fn cache_settings_are_checked() {
    let bad = r#"
[[routes]]
method = "POST"
path = "/in/{id}"
action = "mock"
request_templates = { "application/json" = "m.vtl" }
cache = { ttl = "2h", key = ["path.nope", "body.x"], invalidation = "sometimes", max_bytes = 0 }
"#;
    let project = Project::custom("cache-bad", bad, &[("m.vtl", r#"{"statusCode": 200}"#)]);
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "cache: only GET and HEAD routes are cached",
        "cache: ttl is at most 3600s",
        "key \"path.nope\": \"nope\" is not a parameter of the route's path",
        "key \"body.x\": use path.NAME, querystring.NAME or header.NAME",
        "invalidation \"sometimes\"",
        "max_bytes must be above 0",
    ] {
        assert!(err.contains(expected), "no {expected:?} in:\n{err}");
    }
}
