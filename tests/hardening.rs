//! One client must not be able to hurt another: each test drives the real binary as a
//! hostile or careless client would, against a stub Kinesis that enforces the service's
//! limits the way the service does (a whole call refused for one record).

mod support;

use std::sync::atomic::Ordering;

use serde_json::json;

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
timeout = "5s"
batch = { linger = "50ms" }
"#;

/// One record per event, keyed by the event's `pk`, its data the event's `pad`.
const TEMPLATE: &str = r#"{"StreamName": "s", "Records": [#foreach($e in $input.path('$.events')){"Data": "$util.base64Encode($e.pad)", "PartitionKey": "$e.pk"}#if($foreach.hasNext),#end#end]}"#;

fn events(records: &[(&str, usize)]) -> String {
    let events: Vec<_> = records
        .iter()
        .map(|(pk, bytes)| json!({"pk": pk, "pad": "x".repeat(*bytes)}))
        .collect();
    json!({ "events": events }).to_string()
}

/// 1 MiB of data and partition key, the service's per-record limit.
const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_its_own_clients_413_and_fails_no_one_else() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom("poison", CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);

    // Alone: refused before any call, naming the record and the limit.
    let body = events(&[("ok-a", 10), ("big", MIB)]);
    let resp = gw.post_json("/v1/events", &body);
    assert_eq!(resp.status, 413, "{}", resp.text());
    let message = resp.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("Record 1")
            && message.contains("1048579 bytes")
            && message.contains("1048576"),
        "{message}"
    );
    assert_eq!(stub.received.load(Ordering::SeqCst), 0, "no upstream call");

    // Among other clients' requests in the same batch window: only its own request fails.
    let results = support::concurrently(12, |i| {
        let body = if i == 5 {
            events(&[("big", MIB + 1)])
        } else {
            events(&[(&format!("ok-{i}"), 100)])
        };
        gw.post_json("/v1/events", &body).status
    });
    for (i, status) in results.iter().enumerate() {
        assert_eq!(
            *status,
            if i == 5 { 413 } else { 200 },
            "request {i}: {results:?}"
        );
    }
    assert_eq!(
        stub.refused.load(Ordering::SeqCst),
        0,
        "no call the service refuses"
    );
    assert_eq!(stub.accepted.lock().unwrap().len(), 11);
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_one_calls_limit_is_split_across_calls() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom("split", CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    // Six records just under 1 MiB each: over 5 MiB in all, so two calls.
    let records: Vec<(String, usize)> = (0..6).map(|i| (format!("r-{i}"), MIB - 100)).collect();
    let refs: Vec<(&str, usize)> = records.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let resp = gw.post_json("/v1/events", &events(&refs));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["Records"].as_array().unwrap().len(), 6);
    assert_eq!(stub.refused.load(Ordering::SeqCst), 0);
    assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    assert_eq!(stub.accepted.lock().unwrap().len(), 6);
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_for_one_record_is_retried_without_it() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom("bisect", CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    // The service refuses every call holding the poison record; it cannot be seen before.
    let results = support::concurrently(16, |i| {
        let pk = if i == 7 {
            "poison-7".to_string()
        } else {
            format!("ok-{i}")
        };
        let resp = gw.post_json("/v1/events", &events(&[(&pk, 100)]));
        (resp.status, resp.json())
    });
    for (i, (status, body)) in results.iter().enumerate() {
        if i == 7 {
            assert_eq!(*status, 502, "{body}");
            assert_eq!(
                body["Records"][0]["ErrorCode"], "ValidationException",
                "{body}"
            );
        } else {
            assert_eq!(*status, 200, "request {i}: {body}");
        }
    }
    assert!(
        stub.refused.load(Ordering::SeqCst) >= 1,
        "the batch was refused at first"
    );
    let accepted = stub.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 15, "{accepted:?}");
    assert!(!accepted.iter().any(|k| k.starts_with("poison-")));
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_poison_record_is_dead_lettered_without_stalling_the_rest() {
    let stub = support::stub_kinesis().await;
    let config = CONFIG.replace("timeout = \"5s\"", "timeout = \"5s\"\nspool = \"always\"")
        + "[spool]\ndir = \"spool\"\n";
    let p = support::Project::custom("spool-poison", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let results = support::concurrently(10, |i| {
        let pk = if i == 3 {
            "poison-3".to_string()
        } else {
            format!("ok-{i}")
        };
        gw.post_json("/v1/events", &events(&[(&pk, 100)])).status
    });
    assert!(results.iter().all(|s| *s == 202), "{results:?}");
    // The nine others are delivered although every call holding the poison is refused.
    let delivered = support::eventually(30, || async {
        let n = stub.accepted.lock().unwrap().len();
        (n == 9).then_some(n)
    })
    .await;
    assert_eq!(delivered, Some(9), "{:?}", stub.accepted.lock().unwrap());
    let dead = ingest_gateway::spool::route_dir(&p.dir.join("spool"), "POST /v1/events")
        .join(ingest_gateway::spool::DEAD_LETTERS);
    let buried = support::eventually(30, || async { dead.exists().then_some(()) }).await;
    assert!(
        buried.is_some(),
        "the poison record went to the dead letters"
    );

    // Once the cause is fixed, the dead letters are sent again, with the gateway running.
    stub.poison.store(false, Ordering::SeqCst);
    let replay = || {
        std::process::Command::new(support::bin())
            .arg("--config")
            .arg(&p.config)
            .args(["spool", "replay", "--dead-letters"])
            .envs([
                ("AWS_ENDPOINT_URL", stub.endpoint.as_str()),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ])
            .output()
            .unwrap()
    };
    let out = replay();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 dead letters delivered, 0 still refused"),
        "{stdout}"
    );
    let accepted = stub.accepted.lock().unwrap().clone();
    assert_eq!(
        accepted.iter().filter(|k| *k == "poison-3").count(),
        1,
        "{accepted:?}"
    );
    // Nothing is left to send again.
    let again = replay();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 dead letters delivered"));
    gw.stop_cleanly();
}

/// An API Gateway export crafted so that its text, written unquoted, would become
/// configuration of its own: an `[aws]` endpoint and a route of the attacker's.
fn crafted_export(batch_key: &str, title: &str) -> serde_json::Value {
    json!({
        "openapi": "3.0.1",
        "info": {"title": title, "version": "1"},
        "paths": {"/v1/events": {"post": {
            "x-ingest-gateway": {"batch": {"linger": "5ms", batch_key: 1}},
            "x-amazon-apigateway-integration": {
                "type": "aws",
                "httpMethod": "POST",
                "uri": "arn:aws:apigateway:us-east-1:kinesis:action/PutRecords",
                "requestTemplates": {"application/json": "{\"StreamName\": \"s\", \"Records\": []}"},
                "passthroughBehavior": "never"
            }
        }}}
    })
}

#[test]
fn an_imported_document_cannot_write_configuration_of_its_own() {
    // Each is valid TOML once written unquoted, so an import that writes it succeeds.
    let aws = "[aws]\nendpoint_url = \"http://attacker.example\"\n";
    let route = "[[routes]]\nmethod = \"POST\"\npath = \"/evil\"\naction = \"kinesis:PutRecords\"\ntarget = \"attacker\"\nbatch = { max_records";
    let p = support::Project::custom("import-injection", "", &[]);
    for (i, doc) in [
        crafted_export(&format!("queue = 1 }}\n{aws}{route}"), "api"),
        crafted_export("max_records", &format!("api\n{aws}#")),
    ]
    .iter()
    .enumerate()
    {
        let file = p.dir.join(format!("export-{i}.json"));
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = p.dir.join(format!("imported-{i}"));
        let o = std::process::Command::new(support::bin())
            .arg("import-openapi")
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let said =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        let Ok(config) = std::fs::read_to_string(out.join("gateway.toml")) else {
            assert!(!o.status.success(), "nothing written, yet success: {said}");
            continue;
        };
        let table: toml::Table = toml::from_str(&config).unwrap();
        assert!(
            !table.contains_key("aws"),
            "an [aws] table got in:\n{config}"
        );
        let routes = table["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1, "{config}");
        assert!(!config.contains("attacker.example\"\n"), "{config}");
        if i == 0 {
            assert!(said.contains("not a known setting"), "{said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_http_parser_lets_through_are_refused() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom("strict", CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let body = events(&[("ok", 10)]);
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let post = |extra: &str, target: &str, payload: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n\r\n{payload}"
        )
    };
    // The baseline: chunked alone is served.
    let ok = post("Transfer-Encoding: chunked\r\n", "/v1/events", &chunk);
    assert_eq!(support::raw_status(&gw.addr, ok.as_bytes()), Some(200));
    // A coding it does not understand: 501, not a body read as if it were plain.
    let gzip = post("Transfer-Encoding: gzip, chunked\r\n", "/v1/events", &chunk);
    assert_eq!(support::raw_status(&gw.addr, gzip.as_bytes()), Some(501));
    // Two Host headers, and a target naming another host: 400.
    let cl = format!("Content-Length: {}\r\n", body.len());
    let two_hosts = post(&format!("Host: other\r\n{cl}"), "/v1/events", &body);
    assert_eq!(
        support::raw_status(&gw.addr, two_hosts.as_bytes()),
        Some(400)
    );
    let absolute = post(&cl, "http://other.example/v1/events", &body);
    assert_eq!(
        support::raw_status(&gw.addr, absolute.as_bytes()),
        Some(400)
    );
    let same_host = post(&cl, "http://gw/v1/events", &body);
    assert_eq!(
        support::raw_status(&gw.addr, same_host.as_bytes()),
        Some(200)
    );
    assert_eq!(
        stub.accepted.lock().unwrap().len(),
        2,
        "only the two good requests"
    );
    gw.stop_cleanly();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_spooled_records_are_readable_by_the_gateways_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let stub = support::stub_kinesis().await;
    let config = CONFIG.replace("timeout = \"5s\"", "timeout = \"5s\"\nspool = \"always\"")
        + "[spool]\ndir = \"spool\"\n[usage_plans.p]\n";
    let p = support::Project::custom("modes", &config, &[("records.vtl", TEMPLATE)]);
    // A store an older version left world-readable is made private on open.
    let store = p.dir.join("keys.db");
    std::fs::write(&store, b"").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _key = p.key("p");
    assert_eq!(mode(&store), 0o600);
    let wal = p.dir.join("keys.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    assert_eq!(
        gw.post_json("/v1/events", &events(&[("ok", 10)])).status,
        202
    );
    let dir = ingest_gateway::spool::route_dir(&p.dir.join("spool"), "POST /v1/events");
    assert_eq!(mode(&p.dir.join("spool")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    gw.stop_cleanly();
}

/// Connects to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Whether the server closed the connection within `wait` (without a byte sent).
async fn closed_within(s: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_use_up_the_gateway() {
    use std::time::Duration;
    let stub = support::stub_kinesis().await;
    let admin = format!("127.0.0.1:{}", support::free_port());
    let config = format!(
        "[server]\nmax_connections = 6\nmax_connections_per_ip = 3\nfirst_byte_timeout = \"1500ms\"\nadmin_listen = \"{admin}\"\n{CONFIG}"
    );
    let p = support::Project::custom("connections", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let opened = std::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", &gw.addr).await);
    }
    // A fourth from the same address is closed at once.
    let mut fourth = connect_from("127.0.0.1", &gw.addr).await;
    assert!(
        closed_within(&mut fourth, Duration::from_millis(500)).await,
        "per address"
    );
    // Three more from another address fill the listener; a seventh from a third is closed.
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", &gw.addr).await);
    }
    let mut seventh = connect_from("127.0.0.3", &gw.addr).await;
    assert!(
        closed_within(&mut seventh, Duration::from_millis(500)).await,
        "in all"
    );
    // The operators' listener answers all the while, and counts what was refused.
    let health = support::request(&admin, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    let metrics = support::request(&admin, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains(
            r#"gateway_connections_refused_total{listener="main",reason="per_address"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="total"} 1"#), "{metrics}");
    // The main listener no longer serves metrics when an admin listener does.
    assert_ne!(
        support::request(&admin, "GET", "/metrics", &[], b"").status,
        403
    );
    // Connections that never say anything are closed after the first-byte timeout, long
    // before the idle timeout, and their places are free again.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let resp = gw.post_json("/v1/events", &events(&[("ok", 10)]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        gw.request("GET", "/metrics", &[], b"").status,
        403,
        "metrics are on the admin listener"
    );
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_shows_clients_no_integration_details() {
    let stub = support::stub_kinesis().await;
    let config = format!("[stage_variables]\nsecretish = \"internal-value\"\n{CONFIG}");
    let p = support::Project::custom("openapi-default", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let served = gw.request("GET", "/openapi.json", &[], b"");
    assert_eq!(served.status, 200);
    let text = served.text();
    assert!(text.contains("/v1/events"), "{text}");
    for detail in [
        "x-amazon-apigateway-integration",
        "x-ingest-gateway",
        "base64Encode",
        "internal-value",
        "PutRecords",
    ] {
        assert!(!text.contains(detail), "{detail} served: {text}");
    }
    // The operator's command still prints everything, for an import elsewhere.
    let full = String::from_utf8(p.cli(&["export-openapi"]).stdout).unwrap();
    assert!(full.contains("x-amazon-apigateway-integration") && full.contains("base64Encode"));
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_cost_nothing_before_the_route_and_key_and_stay_within_a_budget() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let stub = support::stub_kinesis().await;
    let config = format!(
        "[server]\nbody_read_timeout = \"5s\"\nmax_inflight_body_bytes = 12582912\n{CONFIG}\n\
         [[routes]]\nmethod = \"POST\"\npath = \"/v1/keyed\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\n\
         request_templates = {{ \"application/json\" = \"records.vtl\" }}\napi_key_required = true\n\
         [[routes]]\nmethod = \"POST\"\npath = \"/v1/small\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\n\
         request_templates = {{ \"application/json\" = \"records.vtl\" }}\nmax_body_bytes = 1000\n"
    );
    let p = support::Project::custom("bodies", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let head = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let status_of = |s: &mut std::net::TcpStream| {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
    };
    // No route, or no key: answered from the head, without waiting for the 5 MB body.
    for path in ["/nowhere", "/v1/keyed"] {
        let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head(path, 5_000_000).as_bytes()).unwrap();
        let asked = Instant::now();
        assert_eq!(status_of(&mut s), Some(403), "{path}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            asked.elapsed()
        );
    }
    // One client holding a 7 MB body half sent: another 7 MB body would pass the budget.
    let big = events(&[("a", 7_000_000)]);
    let mut a = std::net::TcpStream::connect(&gw.addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    a.write_all(head("/v1/events", big.len()).as_bytes())
        .unwrap();
    a.write_all(&big.as_bytes()[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Answered from the head, while the client is still sending (its writes may then fail).
    let other = events(&[("b", 7_000_000)]);
    let mut b = std::net::TcpStream::connect(&gw.addr).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.write_all(head("/v1/events", other.len()).as_bytes())
        .unwrap();
    let _ = b.write_all(&other.as_bytes()[..64 * 1024]);
    let mut answer = [0u8; 512];
    let n = b.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    a.write_all(&big.as_bytes()[1000..]).unwrap();
    assert_eq!(
        status_of(&mut a),
        Some(413),
        "a 7 MB record is over Kinesis's 1 MiB"
    );
    drop(a);
    let ok = gw.post_json("/v1/events", &events(&[("c", 100)]));
    assert_eq!(ok.status, 200, "the budget is given back: {}", ok.text());
    // A route's own body limit.
    assert_eq!(
        gw.post_json("/v1/small", &events(&[("d", 1000)])).status,
        413
    );
    assert_eq!(gw.post_json("/v1/small", &events(&[("d", 10)])).status, 200);
    // A body of tiny JSON values is refused before it is built, with memory to spare.
    let zeros = format!("{{\"events\": [{}0]}}", "0,".repeat(4_500_000));
    let resp = gw.post_json("/v1/events", &zeros);
    assert_eq!(resp.status, 400, "{}", resp.text());
    let peak_mib = gw.peak_rss_kib() / 1024;
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB");
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reaches_only_its_plans_routes_and_a_partner_writes_only_as_itself() {
    let stub = support::stub_kinesis().await;
    let config = r#"
[usage_plans.clicks]
routes = ["POST /v1/events"]
[usage_plans.partners]
routes = ["POST /v1/partners/{partner}/events"]

[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
api_key_required = true

[[routes]]
method = "POST"
path = "/v1/partners/{partner}/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
api_key_required = true
customer_param = "partner"
"#;
    let p = support::Project::custom("plan-routes", config, &[("records.vtl", TEMPLATE)]);
    let clicks = p.key("clicks");
    let acme = p.customer_key("acme", "partners", "acme");
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let body = events(&[("ok", 10)]);
    let post = |path: &str, key: &str| gw.post_json_with_key(path, key, &body).status;
    assert_eq!(post("/v1/events", &clicks), 200);
    assert_eq!(
        post("/v1/partners/acme/events", &clicks),
        403,
        "not the clicks plan's route"
    );
    assert_eq!(
        post("/v1/events", &acme),
        403,
        "not the partners plan's route"
    );
    assert_eq!(post("/v1/partners/acme/events", &acme), 200);
    assert_eq!(
        post("/v1/partners/globex/events", &acme),
        403,
        "as another partner"
    );
    assert_eq!(stub.accepted.lock().unwrap().len(), 2);
    gw.stop_cleanly();
    // A plan naming a route that does not exist is a configuration error.
    let bad = support::Project::custom(
        "plan-routes-bad",
        &config.replace(
            "routes = [\"POST /v1/events\"]",
            "routes = [\"POST /v1/event\"]",
        ),
        &[("records.vtl", TEMPLATE)],
    );
    let check = bad.cli(&["check-config"]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("no route \"POST /v1/event\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_spend_the_account_throttle() {
    let stub = support::stub_kinesis().await;
    let config = format!(
        "[auth]\naccount_throttle = {{ rate = 0.01, burst = 3 }}\n{}",
        CONFIG.replace("batch = { linger = \"50ms\" }", "passthrough = \"never\"")
    );
    let p = support::Project::custom("account-throttle", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    // Anonymous junk: no template for the type, a body that is not JSON.
    for _ in 0..10 {
        let r = gw.request(
            "POST",
            "/v1/events",
            &[("content-type", "text/plain")],
            b"x",
        );
        assert_eq!(r.status, 415);
        assert_eq!(gw.post_json("/v1/events", "{not json").status, 400);
    }
    // The requests that reach the upstream still have the whole burst.
    for _ in 0..3 {
        assert_eq!(
            gw.post_json("/v1/events", &events(&[("ok", 10)])).status,
            200
        );
    }
    let over = gw.post_json("/v1/events", &events(&[("ok", 10)]));
    assert_eq!(over.status, 429, "{}", over.text());
    gw.stop_cleanly();
}

#[test]
fn a_configuration_cannot_read_any_file_or_shadow_the_gateways_own_paths() {
    let route = |extra: &str| {
        format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"/v1/events\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\n{extra}\n"
        )
    };
    let check = |config: &str, files: &[(&str, &str)]| {
        let p = support::Project::custom("config-paths", config, files);
        let out = p.cli(&["check-config"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A template outside the configuration's directory, a directory, a huge template.
    let outside = route("request_templates = { \"application/json\" = \"/etc/passwd\" }");
    let (ok, err) = check(&outside, &[]);
    assert!(
        !ok && err.contains("is outside the configuration's directory"),
        "{err}"
    );
    assert!(err.contains("gateway.toml:6:"), "located: {err}");
    let (ok, _) = check(&format!("allow_paths_outside = true\n{outside}"), &[]);
    assert!(ok, "allowed when asked for");
    let (ok, err) = check(
        &route("request_templates = { \"application/json\" = \"../\" }"),
        &[],
    );
    assert!(!ok && err.contains("is a directory"), "{err}");
    let big = "x".repeat(2 << 20);
    let (ok, err) = check(
        &route("request_templates = { \"application/json\" = \"big.vtl\" }"),
        &[("big.vtl", &big)],
    );
    assert!(!ok && err.contains("at most 1048576 are read"), "{err}");
    // A state machine definition is confined the same way.
    let (ok, err) = check(
        &format!(
            "{}[[resources.state_machines]]\nname = \"m\"\ndefinition = \"/etc/passwd\"\nrole_arn = \"arn:aws:iam::1:role/r\"\n",
            route("")
        ),
        &[],
    );
    assert!(
        !ok && err.contains("state machine definition /etc/passwd is outside"),
        "{err}"
    );
    // The gateway's own paths.
    let (ok, err) = check(&route("").replace("/v1/events", "/metrics"), &[]);
    assert!(!ok && err.contains("is the gateway's own"), "{err}");
    // Throttles: located, and a rate too small to be one said as such.
    let (ok, err) = check(
        &format!(
            "[usage_plans.p]\nthrottle = {{ rate = 1e-300, burst = 1 }}\n{}",
            route("")
        ),
        &[],
    );
    assert!(
        !ok && err.contains("too small to take effect") && err.contains(":1:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_damaged_byte_in_the_newest_segment_loses_only_its_record() {
    let stub = support::stub_kinesis().await;
    stub.outage.store(true, Ordering::SeqCst);
    let config = CONFIG.replace("timeout = \"5s\"", "timeout = \"5s\"\nspool = \"always\"")
        + "[spool]\ndir = \"spool\"\n";
    let p = support::Project::custom("damaged-frame", &config, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    for i in 0..5 {
        let resp = gw.post_json("/v1/events", &events(&[(&format!("r-{i}"), 50)]));
        assert_eq!(resp.status, 202);
    }
    gw.stop_cleanly();
    // Damage one byte of the third record, in the middle of the newest segment.
    let dir = ingest_gateway::spool::route_dir(&p.dir.join("spool"), "POST /v1/events");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg") && !p.ends_with("dead-letter.seg"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mut at = 8;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    bytes[at + 8 + 4] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    // After a restart the four intact records are delivered; the file as found is kept.
    stub.outage.store(false, Ordering::SeqCst);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let delivered = support::eventually(20, || async {
        let keys = stub.accepted.lock().unwrap().clone();
        (keys.len() >= 4).then_some(keys)
    })
    .await
    .expect("the intact records are delivered");
    let mut keys = delivered.clone();
    keys.sort();
    assert_eq!(keys, ["r-0", "r-1", "r-3", "r-4"], "{delivered:?}");
    assert!(
        newest.with_extension("damaged-1").exists(),
        "the damaged file is kept aside"
    );
    let (_, log) = gw.stop();
    assert!(log.contains("damaged frame"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_refuses_what_it_would_mangle_and_keeps_what_it_should() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::new("example-integrity");
    let key = p.key("clickstream");
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let post = |body: &str| gw.post_json_with_key("/v1/events", &key, body);
    // Shapes the template would turn into empty or failing records: 400, no upstream call.
    let many: Vec<_> = (0..501)
        .map(|i| json!({"userId": format!("u{i}")}))
        .collect();
    for bad in [
        json!({"events": {"a": {"type": "click"}}}).to_string(),
        json!({"events": []}).to_string(),
        json!({ "events": many }).to_string(),
        json!({"events": [{"userId": "u".repeat(300)}]}).to_string(),
    ] {
        let resp = post(&bad);
        assert_eq!(
            resp.status,
            400,
            "{}: {}",
            &bad[..bad.len().min(60)],
            resp.text()
        );
        assert_eq!(resp.json()["message"], "Invalid request body");
    }
    assert_eq!(stub.received.load(Ordering::SeqCst), 0);
    // An apostrophe in an id stays valid JSON on the way to Kinesis.
    let resp = post(&json!({"events": [{"userId": "o'brien", "type": "click"}]}).to_string());
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(*stub.accepted.lock().unwrap(), ["o'brien"]);
    gw.stop_cleanly();
}

#[test]
fn key_names_cannot_carry_terminal_escapes_or_forged_log_lines() {
    let p = support::Project::custom("key-names", "[usage_plans.p]\n", &[]);
    for bad in ["evil\u{1b}[2J", "line\nkey created id=forged", ""] {
        let out = p.cli(&["keys", "create", "--name", bad, "--plan", "p"]);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(out.stdout.is_empty(), "no key printed for {bad:?}");
    }
    let out = p.cli(&[
        "keys",
        "create",
        "--name",
        "ok",
        "--plan",
        "p",
        "--customer",
        "a\u{7}b",
    ]);
    assert!(!out.status.success());
    assert!(
        p.cli(&["keys", "create", "--name", "acme app", "--plan", "p"])
            .status
            .success()
    );
}

/// A route whose template copies each event with `$input.json` and keys it by a number read
/// with `$input.path`, and a template method that fails on short ids.
const EXACT_CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
timeout = "5s"

[[routes]]
method = "POST"
path = "/v1/short"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "short.vtl" }
timeout = "5s"
"#;

const EXACT_TEMPLATE: &str = r#"{"StreamName": "s", "Records": [#foreach($e in $input.path('$.events')){"Data": "$util.base64Encode($input.json("$.events[$foreach.index]"))", "PartitionKey": "$e.n"}#if($foreach.hasNext),#end#end]}"#;

/// `substring(0, 4)` throws on an id shorter than four characters, as Java's does.
const SHORT_TEMPLATE: &str = r#"{"StreamName": "s", "Records": [{"Data": "eA==", "PartitionKey": "$input.path('$.id').substring(0, 4)"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_pass_through_exactly_and_requests_a_template_cannot_map_are_the_clients_400() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom(
        "exact",
        EXACT_CONFIG,
        &[
            ("records.vtl", EXACT_TEMPLATE),
            ("short.vtl", SHORT_TEMPLATE),
        ],
    );
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);

    // Past 64 bits, past a double's digits, negative zero and below a double's range: all
    // arrive as sent, in the record and in the key.
    let body = r#"{"events": [
        {"n": 12345678901234567890123, "z": -0, "t": 2e-400, "f": 1.50, "p": 0.10000000000000000001},
        {"n": -0, "big": 1e+400},
        {"n": 7, "half": 0.5}
    ]}"#;
    let resp = gw.post_json("/v1/events", body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        *stub.data.lock().unwrap(),
        [
            r#"{"n":12345678901234567890123,"z":-0,"t":2e-400,"f":1.50,"p":0.10000000000000000001}"#,
            r#"{"n":-0,"big":1e+400}"#,
            r#"{"n":7,"half":0.5}"#,
        ]
    );
    assert_eq!(
        *stub.accepted.lock().unwrap(),
        ["12345678901234567890123", "-0", "7"]
    );
    let calls = stub.received.load(Ordering::SeqCst);

    // What this request holds is what failed: 400 naming it, no upstream call. The template's
    // text is not shown.
    let many: Vec<_> = (0..1001).map(|i| json!({ "n": i })).collect();
    for (path, body, says) in [
        (
            "/v1/events",
            json!({"events": []}).to_string(),
            "Records must hold 1 to 500 records, not 0",
        ),
        (
            "/v1/events",
            json!({ "events": many }).to_string(),
            "#foreach over 1001 items",
        ),
        ("/v1/short", json!({"id": "ab"}).to_string(), "substring"),
    ] {
        let resp = gw.post_json(path, &body);
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        let message = resp.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("could not be mapped") && message.contains(says),
            "{message}"
        );
        assert!(!message.contains(".vtl"), "{message}");
        assert_eq!(resp.header("x-amzn-errortype"), Some("BadRequestException"));
    }
    assert_eq!(
        stub.received.load(Ordering::SeqCst),
        calls,
        "no upstream call"
    );
    let resp = gw.post_json("/v1/short", &json!({"id": "abcdef"}).to_string());
    assert_eq!(resp.status, 200, "{}", resp.text());
    gw.stop_cleanly();
}

/// A batched route whose service keeps failing, behind a two-second whole-request deadline
/// that a slow body has used most of.
const DEADLINE_CONFIG: &str = r#"
[server]
request_timeout = "2s"

[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
timeout = "2s"
batch = { linger = "10ms" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_outlives_the_answer_to_its_request() {
    use std::io::{Read as _, Write as _};
    let stub = support::stub_kinesis().await;
    stub.outage.store(true, Ordering::SeqCst);
    let p = support::Project::custom("deadline", DEADLINE_CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    let received = stub.received.clone();
    let addr = gw.addr.clone();
    let (waited, text, at_answer) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let body = events(&[("late", 10)]);
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let started = std::time::Instant::now();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body.as_bytes()[..4]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        s.write_all(&body.as_bytes()[4..]).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let at_answer = received.load(Ordering::SeqCst);
        (
            started.elapsed(),
            String::from_utf8_lossy(&raw).into_owned(),
            at_answer,
        )
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 5"), "{text}");
    assert!(
        waited < std::time::Duration::from_millis(2000),
        "answered before the request's deadline: {waited:?}"
    );
    assert!(at_answer >= 1, "the service was tried");
    // The client was told its records were not taken: nothing may try to deliver them now.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        stub.received.load(Ordering::SeqCst),
        at_answer,
        "calls after the client was answered"
    );
    stub.outage.store(false, Ordering::SeqCst);
    assert!(stub.accepted.lock().unwrap().is_empty());
    gw.stop_cleanly();
}

/// A tmpfs mounted for one test (the gateway's tests run as root), unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_on_a_full_disk_recovers_once_delivered_and_sends_nothing_twice() {
    let stub = support::stub_kinesis().await;
    stub.outage.store(true, Ordering::SeqCst);
    // One segment larger than the disk, a spool bound larger still: the disk fills first.
    let config = CONFIG.replace("timeout = \"5s\"", "timeout = \"5s\"\nspool = \"always\"")
        + "[spool]\ndir = \"spool\"\nsegment_bytes = 67108864\nmax_bytes = 134217728\n";
    let p = support::Project::custom("spool-full", &config, &[("records.vtl", TEMPLATE)]);
    let _disk = SmallDisk::mount(&p.dir.join("spool"), "3m");
    let mut gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    // 64 KiB records until the disk is full: 202 while they fit, then 503.
    let fill = |gw: &support::Gateway, round: &str| {
        let mut spooled = 0;
        for i in 0..200 {
            let pk = format!("{round}-{i}");
            let resp = gw.post_json("/v1/events", &events(&[(&pk, 64 << 10)]));
            match resp.status {
                202 => spooled += 1,
                503 => break,
                other => panic!("{other}: {}", resp.text()),
            }
        }
        spooled
    };
    let first = fill(&gw, "a");
    assert!((10..60).contains(&first), "{first} records fit on 3 MiB");
    // The service comes back: everything spooled is delivered, and the space with it.
    stub.outage.store(false, Ordering::SeqCst);
    let delivered = |n: usize| {
        let accepted = stub.accepted.clone();
        async move {
            support::eventually(30, || async {
                let got = accepted.lock().unwrap().len();
                (got >= n).then_some(got)
            })
            .await
        }
    };
    assert_eq!(delivered(first).await, Some(first));
    stub.outage.store(true, Ordering::SeqCst);
    let second = fill(&gw, "b");
    let sent = first + second;
    assert!(
        second * 10 >= first * 8,
        "the drained space came back: {second} records fit after {first}"
    );
    stub.outage.store(false, Ordering::SeqCst);
    assert_eq!(delivered(sent).await, Some(sent));
    // A restart sends nothing again: the cursor was written in spite of the full disk.
    gw.stop_cleanly();
    gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let accepted = stub.accepted.lock().unwrap().clone();
    let unique: std::collections::HashSet<_> = accepted.iter().collect();
    assert_eq!(accepted.len(), sent, "sent again after the restart");
    assert_eq!(unique.len(), sent, "{accepted:?}");
    gw.stop_cleanly();
}
