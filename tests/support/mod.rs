//! Shared test helpers: the local AWS emulator, per-test projects with unique resource
//! names, the real gateway binary on a real socket, and a small HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The emulator's endpoint, or `None` (the test is skipped) when it is not running and the
/// suite does not require it. `scripts/test` starts it and requires it.
pub fn emulator() -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("INGEST_GATEWAY_REQUIRE_EMULATOR").is_some() => {
            panic!("AWS_ENDPOINT_URL is not set; run the suite with scripts/test")
        }
        _ => {
            eprintln!("skipped: no AWS emulator (run scripts/test)");
            None
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ingest-gateway")
}

/// Runs `import-openapi DOC --out OUT`, which must succeed; its report (stdout and stderr).
pub fn import_openapi(doc: &Path, out: &Path) -> String {
    let run = std::process::Command::new(bin())
        .arg("import-openapi")
        .arg(doc)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{report}");
    report
}

/// A unique, lower-case suffix for resource names.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{prefix}{:08x}", h.finish() as u32)
}

/// A copy of the example configuration whose resources have unique names.
pub struct Project {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub suffix: String,
}

pub const RESOURCE_NAMES: [&str; 7] = [
    "clickstream-events",
    "clickstream-archive",
    "clickstream-to-s3",
    "partner-messages",
    "partner-messages-dlq",
    "order-workflow",
    "quote-workflow",
];

impl Project {
    pub fn new(test: &str) -> Project {
        let suffix = unique("t");
        let dir = std::env::temp_dir().join(format!("ingest-gateway-{test}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = std::fs::read_to_string(repo().join("gateway.toml")).unwrap();
        for name in RESOURCE_NAMES {
            text = text.replace(&format!("\"{name}\""), &format!("\"{name}-{suffix}\""));
        }
        let root = repo().display().to_string();
        text = text
            .replace("\"mappings/", &format!("\"{root}/mappings/"))
            .replace("\"workflows/", &format!("\"{root}/workflows/"))
            .replace("\"models/", &format!("\"{root}/models/"));
        // The templates stay in the repository, outside this directory.
        let text = format!("allow_paths_outside = true\n{text}");
        let config = dir.join("gateway.toml");
        std::fs::write(&config, text).unwrap();
        Project {
            dir,
            config,
            suffix,
        }
    }

    /// A project from configuration text in which `{S}` stands for a unique suffix, with
    /// extra files (templates) written next to it.
    pub fn custom(test: &str, config: &str, files: &[(&str, &str)]) -> Project {
        let suffix = unique("t");
        let dir = std::env::temp_dir().join(format!("ingest-gateway-{test}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            let file = dir.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config.replace("{S}", &suffix)).unwrap();
        Project {
            dir,
            config: path,
            suffix,
        }
    }

    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    /// Runs a CLI command against this project's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Issues a key in `plan` through the CLI; returns it.
    pub fn key(&self, plan: &str) -> String {
        self.named_key("test", plan)
    }

    /// Issues a key for `customer` in `plan` through the CLI; returns it.
    pub fn customer_key(&self, name: &str, plan: &str, customer: &str) -> String {
        let out = self.cli(&[
            "keys",
            "create",
            "--name",
            name,
            "--plan",
            plan,
            "--customer",
            customer,
        ]);
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Issues a key with a name in `plan` through the CLI; returns it.
    pub fn named_key(&self, name: &str, plan: &str) -> String {
        let out = self.cli(&["keys", "create", "--name", name, "--plan", plan]);
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn provision(&self) -> String {
        let out = self.cli(&["provision"]);
        assert!(
            out.status.success(),
            "provision failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The gateway binary serving a configuration on a free port; killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Gateway {
    /// The gateway process's peak resident memory (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn start(config: &Path) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    /// Starts the gateway against an AWS endpoint (a stub) with test credentials, logging
    /// errors only.
    pub fn start_against(config: &Path, endpoint: &str) -> Gateway {
        Gateway::start_with_env(
            config,
            &[
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
                ("RUST_LOG", "error"),
            ],
        )
    }

    /// Starts the gateway against the emulator (test credentials, `us-east-1`).
    pub fn start_on_emulator(config: &Path, endpoint: &str) -> Gateway {
        Gateway::start_with_env(
            config,
            &[
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ],
        )
    }

    /// Starts the gateway with extra environment variables (e.g. another AWS endpoint).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let Some(addr) = line
            .trim()
            .strip_prefix("listening on http://")
            .or_else(|| line.trim().strip_prefix("listening on https://"))
            .map(str::to_string)
        else {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            panic!("serve did not start (first line {line:?}):\n{err}");
        };
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Gateway {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(&self.addr, method, path, headers, body)
    }

    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn post_json_with_key(&self, path: &str, key: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-api-key", key)],
            body.as_bytes(),
        )
    }

    /// Sends SIGHUP (the TLS certificates are reloaded).
    pub fn hangup(&self) {
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Sends SIGTERM, waits, and asserts a clean exit with no panic in the log.
    pub fn stop_cleanly(self) {
        let (status, log) = self.stop();
        assert!(status.success(), "clean exit: {status:?}");
        assert!(!log.contains("panicked"), "{log}");
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().unwrap().join().unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process; returns its log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.terminate();
        let status = self.child.wait().unwrap();
        let log = self.stderr.take().unwrap().join().unwrap_or_default();
        (status, log)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A raw request on its own connection; the status line's code, or none if the server
/// closed without answering.
pub fn raw_status(addr: &str, head: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(head);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1).and_then(|c| c.parse().ok())
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).expect("a response")
}

/// As [`request`]; `None` when the connection is refused or closed without a response.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // A `host` header among `headers` replaces the address.
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(addr, |(_, v)| *v);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // A write the server cut short still leaves its answer to read.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    // A server that answers before reading everything sent (a head over its limit) closes
    // with unread bytes, which resets the connection: what arrived before the reset is the
    // answer.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        raw.extend_from_slice(&chunk[..n]);
    }
    if raw.is_empty() {
        return None;
    }
    Some(parse_response(&raw))
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        b = &b[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// AWS clients for reading what the gateway wrote (static test credentials).
pub async fn aws(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

/// The data of every record in a stream, shard by shard, each shard from its start.
pub async fn stream_data(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = kinesis
                .get_records()
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            data.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
            match out.next_shard_iterator {
                Some(next) if !out.records().is_empty() => iterator = next,
                _ => break,
            }
        }
    }
    data
}

/// A loopback port free a moment ago.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..secs * 5 {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A stand-in Kinesis for fault injection, speaking the JSON protocol. `PutRecords` fails
/// records whose partition key starts with `flaky-` the first time it sees their data, and
/// those starting with `always-` every time (`ProvisionedThroughputExceededException`).
/// Like the service, it refuses a whole call (400 `ValidationException`) holding a record
/// over 1 MiB of data and key, or over 5 MiB in all, and one holding a record whose key
/// starts with `poison-` (a record the service refuses for its content).
pub struct StubKinesis {
    pub endpoint: String,
    pub calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub records: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Partition keys of the records it accepted, in arrival order.
    pub accepted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The data of the records it accepted (decoded), in arrival order.
    pub data: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, every call fails with 500 `InternalFailure` and nothing is accepted.
    pub outage: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Calls that arrived, answered or not (`calls` counts them once answered).
    pub received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Calls refused as a whole for their records' size or content.
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// While set (the default), `poison-` records are refused; clear it to "fix the cause".
    pub poison: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Calls other than `PutRecords` and `PutRecord` (the gateway's upstream checks).
    pub described: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// While set, records whose partition key starts with `stubborn-` fail every time
    /// (`ProvisionedThroughputExceededException`); `stubborn_failed` counts those failures.
    pub stubborn: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub stubborn_failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// While set, `PutRecords` calls are held unanswered (a stalled upstream).
    pub stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub async fn stub_kinesis() -> StubKinesis {
    stub_kinesis_with_latency(std::time::Duration::ZERO).await
}

/// The stub, answering every call after `latency`.
pub async fn stub_kinesis_with_latency(latency: std::time::Duration) -> StubKinesis {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::routing::post;
    use base64::Engine as _;

    let calls = Arc::new(AtomicUsize::new(0));
    let records = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let data: Arc<Mutex<Vec<String>>> = Arc::default();
    let outage: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let received = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (c, r, a, o, rc) = (
        calls.clone(),
        records.clone(),
        accepted.clone(),
        outage.clone(),
        received.clone(),
    );
    let rf = refused.clone();
    let dt = data.clone();
    let poison = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ps = poison.clone();
    let described = Arc::new(AtomicUsize::new(0));
    let ds = described.clone();
    let stubborn: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let stubborn_failed = Arc::new(AtomicUsize::new(0));
    let (sb, sf) = (stubborn.clone(), stubborn_failed.clone());
    let stall: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let st = stall.clone();
    let app = axum::Router::new().fallback(post(move |headers: axum::http::HeaderMap, body: Bytes| {
        // The gateway's start-up check of its upstream is not a call the tests count.
        let describe = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| !t.ends_with(".PutRecords") && !t.ends_with(".PutRecord"));
        let (calls, records, seen, accepted) = (c.clone(), r.clone(), seen.clone(), a.clone());
        let outage = o.clone();
        let refused = rf.clone();
        let kept = dt.clone();
        let poisoned = ps.load(Ordering::SeqCst);
        let stubborn_now = sb.load(Ordering::SeqCst);
        let stubborn_count = sf.clone();
        let stalled = st.clone();
        if describe {
            ds.fetch_add(1, Ordering::SeqCst);
        } else {
            rc.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if describe {
                let body = r#"{"StreamDescriptionSummary": {"StreamName": "s", "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s", "StreamStatus": "ACTIVE", "RetentionPeriodHours": 24, "StreamCreationTimestamp": 0, "EnhancedMonitoring": [], "OpenShardCount": 1}}"#.to_string();
                return (
                    axum::http::StatusCode::OK,
                    [("content-type", "application/x-amz-json-1.1")],
                    body,
                );
            }
            tokio::time::sleep(latency).await;
            while stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            calls.fetch_add(1, Ordering::SeqCst);
            if outage.load(Ordering::SeqCst) {
                let body = r#"{"__type": "InternalFailure", "message": "outage"}"#.to_string();
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "application/x-amz-json-1.1")],
                    body,
                );
            }
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let sizes: Vec<(usize, bool)> = req["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|rec| {
                    let data = rec["Data"].as_str().unwrap_or("");
                    let pk = rec["PartitionKey"].as_str().unwrap_or("");
                    (data.len() / 4 * 3 + pk.len(), poisoned && pk.starts_with("poison-"))
                })
                .collect();
            let too_big = sizes.iter().any(|(n, _)| *n > 1024 * 1024)
                || sizes.iter().map(|(n, _)| n).sum::<usize>() > 5 * 1024 * 1024;
            if too_big || sizes.iter().any(|(_, poison)| *poison) {
                refused.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"__type": "ValidationException", "message": "1 validation error detected"}"#.to_string();
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.1")],
                    body,
                );
            }
            let mut failed = 0;
            let mut out = Vec::new();
            for (i, rec) in req["Records"].as_array().cloned().unwrap_or_default().iter().enumerate() {
                records.fetch_add(1, Ordering::SeqCst);
                let pk = rec["PartitionKey"].as_str().unwrap_or("");
                let data = rec["Data"].as_str().unwrap_or("").to_string();
                let stuck = stubborn_now && pk.starts_with("stubborn-");
                if stuck {
                    stubborn_count.fetch_add(1, Ordering::SeqCst);
                }
                let fail = stuck || pk.starts_with("always-") || (pk.starts_with("flaky-") && seen.lock().unwrap().insert(data.clone()));
                if fail {
                    failed += 1;
                    out.push(serde_json::json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}));
                } else {
                    accepted.lock().unwrap().push(pk.to_string());
                    let decoded = base64::engine::general_purpose::STANDARD.decode(&data).unwrap_or_default();
                    kept.lock().unwrap().push(String::from_utf8_lossy(&decoded).into_owned());
                    out.push(serde_json::json!({"SequenceNumber": format!("{}{i}", calls.load(Ordering::SeqCst)), "ShardId": "shardId-000000000000"}));
                }
            }
            let body = serde_json::json!({"FailedRecordCount": failed, "Records": out}).to_string();
            (axum::http::StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], body)
        }
    }))
    // A 5 MiB call is about 7 MB of base64 in JSON; the service reads it, so the stub must.
    .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StubKinesis {
        endpoint,
        calls,
        records,
        accepted,
        data,
        outage,
        received,
        refused,
        poison,
        described,
        stubborn,
        stubborn_failed,
        stall,
    }
}

/// Runs `f(0..n)` on `n` threads at once; the results in order.
pub fn concurrently<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A queue's URL, by name.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// An S3 client for the emulator (path-style addressing).
pub fn s3(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A gateway in this process (no listener) for `config` (templates in `files`), whose AWS
/// endpoint is `endpoint`; serve it with `server::app(..).oneshot(..)`.
pub async fn in_process(
    config: &str,
    files: &[(&str, &str)],
    endpoint: &str,
) -> std::sync::Arc<ingest_gateway::pipeline::Gateway> {
    use ingest_gateway::{auth, config, integrations, pipeline};
    let dir = std::env::temp_dir().join(format!("ingest-gateway-inproc-{}", unique("t")));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let config = config::parse(Path::new("test.toml"), config, &dir).unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "t", "t", None, None, "tests",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let clients = integrations::Clients::from_sdk_config(&sdk, true);
    let auth = std::sync::Arc::new(pipeline::authorizer(
        &config,
        auth::Snapshot::default(),
        vec![],
    ));
    let compiled = pipeline::compile_templates(&config).unwrap();
    std::sync::Arc::new(
        pipeline::Gateway::new(config, compiled, clients, auth).expect("the gateway starts"),
    )
}

/// A user pool, an app client and a signed-in user in the emulator's Cognito: the pool's
/// id and the user's id and access tokens.
pub fn cognito_user(endpoint: &str) -> serde_json::Value {
    let out = botocore(
        endpoint,
        r#"
cog = c("cognito-idp")
pool = cog.create_user_pool(PoolName="gateway-test")["UserPool"]["Id"]
client = cog.create_user_pool_client(UserPoolId=pool, ClientName="app", ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])["UserPoolClient"]["ClientId"]
cog.admin_create_user(UserPoolId=pool, Username="alice", TemporaryPassword="Temp-Passw0rd!", MessageAction="SUPPRESS")
cog.admin_set_user_password(UserPoolId=pool, Username="alice", Password="Real-Passw0rd!", Permanent=True)
auth = cog.admin_initiate_auth(UserPoolId=pool, ClientId=client, AuthFlow="ADMIN_USER_PASSWORD_AUTH",
    AuthParameters={"USERNAME": "alice", "PASSWORD": "Real-Passw0rd!"})["AuthenticationResult"]
print(json.dumps({"pool": pool, "client": client, "id": auth["IdToken"], "access": auth["AccessToken"]}))
"#,
        &[],
    );
    serde_json::from_str(&out).unwrap()
}

/// Creates (or replaces) a Python 3.11 function (`index.handler`) in the emulator's Lambda,
/// with environment variables.
pub fn lambda_function(endpoint: &str, name: &str, code: &str, env: &[(&str, &str)]) {
    let env_json = serde_json::Value::Object(
        env.iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect(),
    )
    .to_string();
    botocore(
        endpoint,
        r#"
import io, zipfile
name, code, env = sys.argv[2:5]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("index.py", code)
lam = c("lambda")
try:
    lam.delete_function(FunctionName=name)
except Exception:
    pass
lam.create_function(FunctionName=name, Runtime="python3.11", Handler="index.handler",
    Role="arn:aws:iam::000000000000:role/lambda", Code={"ZipFile": buf.getvalue()},
    Environment={"Variables": json.loads(env)})
"#,
        &[name, code, &env_json],
    );
}

/// Runs a botocore script against the emulator (`c(service)` makes a client, `argv[1]` is
/// the endpoint, the other arguments follow); its standard output.
pub fn botocore(endpoint: &str, script: &str, args: &[&str]) -> String {
    let python = repo().join(".venv/bin/python");
    let prelude = "import json, sys, botocore.session\nc = lambda s: botocore.session.get_session().create_client(s, endpoint_url=sys.argv[1], region_name='us-east-1')\n";
    let out = std::process::Command::new(python)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .arg(endpoint)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number of upstream calls a batched route made, from its `gateway_batch_records`
/// histogram in a `/metrics` scrape.
pub fn batch_calls(metrics: &str, route: &str) -> f64 {
    let prefix = format!("gateway_batch_records_count{{route=\"{route}\"}}");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
}

/// A WebSocket endpoint whose `track` messages go to the Kinesis stream `ws-stream-{S}`
/// (batched, acknowledged), with [`WS_TRACK`] as `track.vtl`.
pub const WS_KINESIS: &str = r#"
[auth]
key_store = "keys.db"

[usage_plans.devices]

[[resources.kinesis_streams]]
name = "ws-stream-{S}"
shards = 1

[websocket]
path = "/v1/stream"
api_key_required = true

[[websocket.routes]]
key = "track"
action = "kinesis:PutRecords"
target = "ws-stream-{S}"
request_templates = { "application/json" = "track.vtl" }
batch = { linger = "20ms" }
ack = true
"#;

/// Each message as a record of its connection, route, event type and body.
pub const WS_TRACK: &str = r##"#set($q = '"')
#set($inner = "{${q}connection${q}: ${q}$context.connectionId${q}, ${q}route${q}: ${q}$context.routeKey${q}, ${q}event${q}: ${q}$context.eventType${q}, ${q}body${q}: $input.json('$')}")
{"Records": [{"Data": "$util.base64Encode($inner)", "PartitionKey": "$context.connectionId"}]}
"##;
