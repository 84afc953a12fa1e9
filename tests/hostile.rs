//! Hostile input through the real binary on a real socket: every case gets the right 4xx
//! (with an API-Gateway-compatible body where the gateway answers), makes no upstream call,
//! and leaves the gateway serving. The upstream is the stub Kinesis, which counts calls.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value as Json, json};
use support::Response;

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "hostile-stream"
request_templates = { "application/json" = "escaped.vtl" }
passthrough = "never"
timeout = "5s"
batch = { linger = "1ms" }

[[routes]]
method = "POST"
path = "/v1/raw"
action = "kinesis:PutRecords"
target = "hostile-stream"
request_templates = { "application/json" = "raw.vtl" }
passthrough = "never"
timeout = "5s"
"#;

/// The partition key escaped for a JSON string, as templates should.
const ESCAPED: &str = r#"{"StreamName": "hostile-stream", "Records": [{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "$util.escapeJavaScript($input.path('$.pk'))"}]}"#;
/// The partition key pasted in unescaped: a body can try to break out of the string.
const RAW: &str = r#"{"StreamName": "hostile-stream", "Records": [{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "$input.path('$.pk')"}]}"#;

fn post(gw: &support::Gateway, path: &str, content_type: Option<&str>, body: &[u8]) -> Response {
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    gw.request("POST", path, &headers, body)
}

/// An API Gateway error: the status, `{"message": ...}`, `x-amzn-ErrorType` and a request id.
fn assert_error(r: &Response, status: u16, message: &str, error_type: &str) {
    assert_eq!(r.status, status, "{message}: {}", r.text());
    assert_eq!(r.json(), json!({ "message": message }));
    assert_eq!(r.header("x-amzn-ErrorType"), Some(error_type));
    assert!(r.header("x-amzn-RequestId").is_some_and(|v| !v.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_without_an_upstream_call() {
    let stub = support::stub_kinesis().await;
    let project = support::Project::custom(
        "hostile",
        CONFIG,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let calls = stub.calls.clone();
    let accepted = stub.accepted.clone();
    let log = tokio::task::spawn_blocking(move || {
        let json_type = Some("application/json");
        let serving = |gw: &support::Gateway, pk: &str| {
            let r = post(gw, "/v1/events", json_type, json!({ "pk": pk }).to_string().as_bytes());
            assert_eq!(r.status, 200, "still serving: {}", r.text());
        };
        let no_new_call = |before: usize, case: &str| {
            assert_eq!(calls.load(Ordering::SeqCst), before, "{case}: no upstream call");
        };
        serving(&gw, "first");
        let mut before = calls.load(Ordering::SeqCst);

        // Bodies that are not JSON, or not text.
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated JSON", br#"{"pk": "a""#.to_vec()),
            ("trailing garbage", br#"{"pk": "a"} {"#.to_vec()),
            ("not JSON at all", b"pk=a&b=c".to_vec()),
            ("invalid UTF-8", b"{\"pk\": \"\xff\xfe\"}".to_vec()),
            ("lone surrogate escape", br#"{"pk": "\ud800"}"#.to_vec()),
            ("NUL bytes", b"{\"pk\": \"a\0b\"}".to_vec()),
            (
                "10,000-deep nesting",
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            ),
        ];
        for (case, body) in &cases {
            let r = post(&gw, "/v1/events", json_type, body);
            assert_error(&r, 400, "Invalid request body", "BadRequestException");
            no_new_call(before, case);
        }
        serving(&gw, "after-bad-bodies");
        before = calls.load(Ordering::SeqCst);

        // Wrong content types: no template and passthrough "never".
        for ct in ["text/plain", "application/x-www-form-urlencoded", "*/*", "application/jsonx"] {
            let r = post(&gw, "/v1/events", Some(ct), br#"{"pk": "a"}"#);
            assert_eq!(r.status, 415, "{ct}: {}", r.text());
            assert_eq!(
                r.json(),
                json!({"message": "Unsupported Media Type", "acceptedContentTypes": ["application/json"]})
            );
            assert_eq!(r.header("x-amzn-ErrorType"), Some("UnsupportedMediaTypeException"));
            no_new_call(before, ct);
        }

        // Breaking out of the template's JSON string without escaping: a rendered request
        // that names another stream or is not JSON is refused (500, as API Gateway answers an
        // integration request the service rejects) and never sent. The route's target pins
        // the stream whatever the body says.
        for pk in [
            r#"x"}], "StreamName": "another-stream", "x": [{"a": "b"#,
            r#"x"}], "StreamARN": "arn:aws:kinesis:us-east-1:1:stream/other", "x": [{"a": "b"#,
            "line\nbreak",
            r#"back\slash"#,
        ] {
            let r = post(&gw, "/v1/raw", json_type, json!({ "pk": pk }).to_string().as_bytes());
            assert_error(&r, 500, "Internal server error", "InternalServerErrorException");
            no_new_call(before, pk);
        }

        // The same keys, escaped by the template, arrive intact as one record each.
        let crafted = [
            r#"x"}], "StreamName": "another-stream", "x": [{"a": "b"#,
            r#"x"}, {"Data": "AAAA", "PartitionKey": "y"#,
            "quote\" backslash\\ slash/ tab\t nl\n cr\r",
            "control \u{1} \u{1f} del \u{7f}",
            "unicode é ✓ \u{2028}\u{2029} 😀",
        ];
        for pk in crafted {
            let r = post(&gw, "/v1/events", json_type, json!({ "pk": pk }).to_string().as_bytes());
            assert_eq!(r.status, 200, "{pk:?}: {}", r.text());
            assert_eq!(r.json()["FailedRecordCount"], 0);
            assert_eq!(r.json()["Records"].as_array().map(Vec::len), Some(1), "one record");
        }
        let keys = accepted.lock().unwrap().clone();
        for pk in crafted {
            assert_eq!(
                keys.iter().filter(|k| k.as_str() == pk).count(),
                1,
                "{pk:?} arrived once, intact: {keys:?}"
            );
        }
        before = calls.load(Ordering::SeqCst);

        // Paths: traversal, odd encodings, unknown methods.
        for path in [
            "/v1/../v1/events",
            "/v1/events/..",
            "/v1/%2e%2e/v1/events",
            "/v1%2fevents",
            "/V1/EVENTS",
            "//v1/events",
            "/v1/events%00",
        ] {
            let r = post(&gw, path, json_type, br#"{"pk": "a"}"#);
            assert_error(&r, 403, "Missing Authentication Token", "MissingAuthenticationTokenException");
            no_new_call(before, path);
        }
        let r = gw.request("DELETE", "/v1/events", &[], b"");
        assert_error(&r, 403, "Missing Authentication Token", "MissingAuthenticationTokenException");

        // A body one byte over the 10 MB limit, declared: refused before it is read.
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            10 * 1024 * 1024 + 1
        );
        assert_eq!(support::raw_status(&gw.addr, head.as_bytes()), Some(413));
        // The same, streamed without a length: refused once the limit is passed.
        let big = vec![b' '; 10 * 1024 * 1024 + 1];
        let mut chunked = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for chunk in big.chunks(1 << 20) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(support::raw_status(&gw.addr, &chunked), Some(413));
        no_new_call(before, "oversized bodies");

        // Header floods and huge request lines are refused by the HTTP layer with a 4xx.
        let mut flood = String::from("POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..500 {
            flood.push_str(&format!("x-flood-{i}: {}\r\n", "v".repeat(50)));
        }
        flood.push_str("Content-Length: 2\r\n\r\n{}");
        let status = support::raw_status(&gw.addr, flood.as_bytes()).expect("an answer");
        assert!((400..500).contains(&status), "header flood: {status}");
        let huge_header = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            "v".repeat(1 << 20)
        );
        let status = support::raw_status(&gw.addr, huge_header.as_bytes()).expect("an answer");
        assert!((400..500).contains(&status), "1 MiB header: {status}");
        let huge_query = format!(
            "POST /v1/events?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}",
            "a".repeat(1 << 20)
        );
        let status = support::raw_status(&gw.addr, huge_query.as_bytes()).expect("an answer");
        assert!((400..500).contains(&status), "1 MiB query string: {status}");
        let garbage = support::raw_status(&gw.addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
        assert!(garbage.is_none_or(|s| (400..500).contains(&s)), "{garbage:?}");
        no_new_call(before, "HTTP-level floods");

        serving(&gw, "last");
        let (status, log) = gw.stop();
        assert!(status.success(), "clean exit after the suite");
        log
    })
    .await
    .unwrap();
    assert!(!log.contains("panicked"), "no panic: {log}");
    let keys: Vec<Json> = stub
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|k| json!(k))
        .collect();
    assert!(keys.contains(&json!("last")));
}

/// Slow clients: headers that trickle in are cut off after `header_read_timeout`, a body that
/// stalls gets 408 after `body_read_timeout`, and more than `max_headers` headers get 431; the
/// gateway keeps serving and calls no upstream for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_header_limits_are_cut_off() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "[server]\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nmax_headers = 20\n{CONFIG}"
    );
    let project = support::Project::custom(
        "slow",
        &config,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let calls = stub.calls.clone();
    tokio::task::spawn_blocking(move || {
        // Headers, one byte every 200 ms: the connection is closed after about a second.
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = std::time::Instant::now();
        let mut closed = false;
        for b in b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(100) {
            if s.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() > Duration::from_secs(3) {
                let mut buf = [0u8; 256];
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                // Closed, or answered and closed; still waiting is a read timeout.
                closed = match s.read(&mut buf) {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                };
                break;
            }
        }
        assert!(closed, "a trickling header is cut off");
        assert!(started.elapsed() < Duration::from_secs(8));

        // A body that stalls: 408 with an API Gateway body.
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pk\": ",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(r#"{"message":"Request Timeout"}"#), "{text}");
        assert!(text.to_ascii_lowercase().contains("x-amzn-errortype: requesttimeoutexception"));
        assert!(started.elapsed() < Duration::from_secs(5));

        // Too many headers.
        let extra: Vec<(String, String)> =
            (0..30).map(|i| (format!("x-h-{i}"), "v".to_string())).collect();
        let mut headers: Vec<(&str, &str)> =
            extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push(("content-type", "application/json"));
        let r = gw.request("POST", "/v1/events", &headers, br#"{"pk": "a"}"#);
        assert_eq!(r.status, 431);
        // A head larger than the connection's read buffer (API Gateway allows 10 KiB).
        let cookie = "c".repeat(ingest_gateway::server::READ_BUFFER_BYTES + 1024);
        let headers = [("content-type", "application/json"), ("cookie", cookie.as_str())];
        let r = gw.request("POST", "/v1/events", &headers, br#"{"pk": "a"}"#);
        assert_eq!(r.status, 431);

        assert_eq!(calls.load(Ordering::SeqCst), 0, "no upstream call");
        let r = post(&gw, "/v1/events", Some("application/json"), br#"{"pk": "ok"}"#);
        assert_eq!(r.status, 200, "still serving: {}", r.text());
        // A 9 KiB head is served.
        let cookie = "c".repeat(9 * 1024);
        let headers = [("content-type", "application/json"), ("cookie", cookie.as_str())];
        let r = gw.request("POST", "/v1/events", &headers, br#"{"pk": "ok"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

/// Sends one request on `s` (keep-alive) and reads its response head and body.
fn exchange(s: &mut TcpStream, body: &[u8]) -> String {
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_answer(s)
}

/// A response's head and JSON body (small answers arrive together).
fn read_answer(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains('}') {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        raw.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// Whether the server has closed `s` (a read returns end of file within `wait`).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A keep-alive connection may wait `idle_timeout` for its next request, however short
/// `header_read_timeout` is, and is closed cleanly after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_kept_for_the_idle_timeout_then_closed() {
    let stub = support::stub_kinesis().await;
    let config = format!("[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n{CONFIG}");
    let project = support::Project::custom(
        "idle",
        &config,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        assert!(exchange(&mut s, br#"{"pk": "a"}"#).starts_with("HTTP/1.1 200"));
        // Idle past the header timeout, within the idle timeout: still open and usable.
        assert!(!closed_within(&mut s, Duration::from_millis(1800)));
        s.set_read_timeout(None).unwrap();
        assert!(exchange(&mut s, br#"{"pk": "b"}"#).starts_with("HTTP/1.1 200"));
        // Then idle for good: closed after about 3 s.
        let started = std::time::Instant::now();
        assert!(
            closed_within(&mut s, Duration::from_secs(8)),
            "closed when idle"
        );
        let waited = started.elapsed();
        assert!(
            waited > Duration::from_millis(2500) && waited < Duration::from_secs(6),
            "closed after the idle timeout: {waited:?}"
        );
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

/// The whole request has `request_timeout`, whatever each stage's own timeout: a body that
/// takes a second and an upstream that takes three end in 504 by the two-second deadline,
/// the upstream call given only what the body left of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_request_deadline_cuts_a_request_short_with_504() {
    let stub = support::stub_kinesis_with_latency(Duration::from_secs(3)).await;
    let config = format!(
        "[server]\nrequest_timeout = \"2s\"\n{}",
        CONFIG.replace(r#"timeout = "5s""#, r#"timeout = "2s""#)
    );
    let project = support::Project::custom(
        "deadline",
        &config,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = br#"{"pk": "slow"}"#;
        let head = format!(
            "POST /v1/raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let started = std::time::Instant::now();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..4]).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        s.write_all(&body[4..]).unwrap();
        let text = read_answer(&mut s).to_ascii_lowercase();
        let waited = started.elapsed();
        assert!(text.starts_with("http/1.1 504"), "{text}");
        assert!(text.contains("x-amzn-errortype: integrationtimeoutexception"), "{text}");
        assert!(text.contains(r#"{"message":"endpoint request timed out"}"#), "{text}");
        assert!(
            waited >= Duration::from_millis(1700) && waited < Duration::from_millis(2100),
            "answered by the deadline, not the route's timeout: {waited:?}"
        );
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[test]
fn a_route_timeout_longer_than_the_request_deadline_is_a_config_error() {
    let config = format!(
        "[server]\nrequest_timeout = \"2s\"\n{}",
        CONFIG.replace(r#"timeout = "5s""#, r#"timeout = "30s""#)
    );
    let project = support::Project::custom(
        "deadline-config",
        &config,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("longer than server.request_timeout"), "{err}");
}

/// `max_json_depth` lowers the nesting a JSON body may have: one level more is a 400 and
/// no upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nesting_past_max_json_depth_is_refused() {
    let stub = support::stub_kinesis().await;
    let config = format!("[server]\nmax_json_depth = 5\n{CONFIG}");
    let project = support::Project::custom(
        "depth",
        &config,
        &[("escaped.vtl", ESCAPED), ("raw.vtl", RAW)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let calls = stub.received.clone();
    tokio::task::spawn_blocking(move || {
        // The object itself is level 1.
        let body = |levels: usize| {
            format!(
                r#"{{"pk": "d", "x": {}1{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        let r = post(
            &gw,
            "/v1/events",
            Some("application/json"),
            body(6).as_bytes(),
        );
        assert_error(&r, 400, "Invalid request body", "BadRequestException");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no upstream call");
        let r = post(
            &gw,
            "/v1/events",
            Some("application/json"),
            body(5).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

/// With `binary_media_types`, a body of such a type that is not UTF-8 reaches the template
/// base64-encoded in `$input.body` (as on API Gateway) instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_media_types_reach_templates_base64_encoded() {
    let stub = support::stub_kinesis().await;
    let config = r#"
[server]
binary_media_types = ["application/octet-stream"]

[[routes]]
method = "POST"
path = "/v1/blobs"
action = "kinesis:PutRecords"
target = "hostile-stream"
request_templates = { "application/octet-stream" = "blob.vtl" }
passthrough = "never"
"#;
    let template = r#"{"Records": [{"Data": "$input.body", "PartitionKey": "$input.body"}]}"#;
    let project = support::Project::custom("binary", config, &[("blob.vtl", template)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let accepted = stub.accepted.clone();
    tokio::task::spawn_blocking(move || {
        let bytes = [0xffu8, 0x00, 0x80, 0x7f, b'{'];
        let r = post(&gw, "/v1/blobs", Some("application/octet-stream"), &bytes);
        assert_eq!(r.status, 200, "{}", r.text());
        // Another type is still text: not UTF-8 is a 400.
        let r = post(&gw, "/v1/blobs", Some("text/plain"), &bytes);
        assert_eq!(r.status, 415, "no template for text/plain: {}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    assert_eq!(
        accepted.lock().unwrap().clone(),
        vec!["/wCAf3s=".to_string()]
    );
}
