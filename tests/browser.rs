//! A real browser: headless Chromium (Debian's, driven by playwright-core through
//! `tests/browser/run.mjs`) loads a page from one origin that uses the gateway's
//! `/sdk/tracker.js` against the gateway on another origin, with the emulator behind it.
//! Tracked events, a flush, an outage riding on localStorage, events left at page hide
//! (beacons), a page reading a 403 and a page of a disallowed origin that cannot read: then
//! every tracked event is read back from S3, exactly once.
//!
//! `scripts/test` installs the browser (`scripts/browser install`) and requires it; without
//! it (and without `INGEST_GATEWAY_REQUIRE_BROWSER`) the test is skipped.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value as Json;

fn browser_ready() -> bool {
    let ready = Command::new(support::repo().join("scripts/browser"))
        .arg("check")
        .status()
        .is_ok_and(|s| s.success());
    if !ready && std::env::var_os("INGEST_GATEWAY_REQUIRE_BROWSER").is_some() {
        panic!("no browser: run scripts/browser install (scripts/test does)");
    }
    if !ready {
        eprintln!("skipped: no browser (scripts/browser install)");
    }
    ready
}

/// Runs a driver script of `tests/browser` with `env`; what it printed, as JSON.
async fn drive(script: &str, env: Vec<(&'static str, String)>) -> Json {
    let driver = support::repo().join("tests/browser").join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(driver).envs(env).output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_tracks_through_the_gateway_and_every_event_reaches_s3_once() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    if !browser_ready() {
        return;
    }
    let project = support::Project::new("browser");
    project.provision();
    let key = project.key("clickstream");
    // The page's origin (127.0.0.1 and a port of its own) is the one allowed; the same page
    // as `localhost:PORT` is another origin, not allowed. The port is chosen first, since
    // the gateway's CORS names it and the page names the gateway.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page_port = listener.local_addr().unwrap().port();
    drop(listener);
    let text = std::fs::read_to_string(&project.config).unwrap();
    let example = r#"allow_origins = ["http://localhost:3000", "http://127.0.0.1:3000"]"#;
    assert!(text.contains(example), "the example allows a local page");
    let allowed = format!(r#"allow_origins = ["http://127.0.0.1:{page_port}"]"#);
    std::fs::write(&project.config, text.replace(example, &allowed)).unwrap();
    let gw = support::Gateway::start(&project.config);
    let gateway = format!("http://{}", gw.addr);
    page_server(gateway.clone(), page_port).await;

    let seen = drive(
        "run.mjs",
        vec![
            ("PAGE", format!("http://127.0.0.1:{page_port}/page.html")),
            (
                "EVIL_PAGE",
                format!("http://localhost:{page_port}/page.html"),
            ),
            ("GATEWAY", gateway.clone()),
            ("KEY", key.clone()),
        ],
    )
    .await;

    // What the pages saw.
    assert_eq!(seen["flush"]["left"], 0, "{seen}");
    assert_eq!(seen["flush"]["errors"], serde_json::json!([]));
    assert_eq!(
        seen["flush"]["gzip"], true,
        "Chromium has CompressionStream"
    );
    assert_eq!(seen["forbidden"]["status"], 403);
    assert_eq!(seen["forbidden"]["body"]["message"], "Forbidden");
    assert_eq!(seen["forbidden"]["type"], "ForbiddenException");
    assert!(
        seen["forbidden"]["requestId"].is_string(),
        "exposed header: {seen}"
    );
    assert_eq!(
        seen["offline"]["stored"],
        serde_json::json!(["offline-0", "offline-1"]),
        "unsent events wait in localStorage"
    );
    assert_eq!(seen["online"]["left"], 0);
    assert!(
        seen["online"]["stored"].is_null(),
        "nothing left stored: {seen}"
    );
    assert_eq!(seen["hidden"]["queued"], 3);
    assert_eq!(
        seen["evil"]["read"], false,
        "another origin cannot read: {seen}"
    );

    // What reached S3: every tracked event once, with the tracker's eventIds.
    let sdk = support::aws(&endpoint).await;
    let s3 = support::s3(&sdk);
    let bucket = project.name("clickstream-archive");
    let mut expected: Vec<String> = (0..12).map(|i| format!("flush-{i}")).collect();
    expected.extend(["offline-0", "offline-1"].map(String::from));
    expected.extend((0..3).map(|i| format!("beacon-{i}")));
    expected.sort();
    let found = support::eventually(30, || async {
        let events = s3_events(&s3, &bucket).await;
        let mut markers: Vec<String> = events
            .iter()
            .filter_map(|e| e["marker"].as_str().map(str::to_string))
            .collect();
        markers.sort();
        (markers.len() >= expected.len()).then_some((markers, events))
    })
    .await;
    let (markers, events) = found.expect("the tracked events reach S3");
    assert_eq!(
        markers, expected,
        "every event exactly once, none from the other origin"
    );
    let ids: Vec<&str> = seen["flush"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let by_marker: BTreeMap<&str, &Json> = events
        .iter()
        .map(|e| (e["marker"].as_str().unwrap_or(""), e))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(by_marker[format!("flush-{i}").as_str()]["eventId"], *id);
    }
    assert!(
        events
            .iter()
            .all(|e| e["eventId"].as_str().is_some_and(|s| s.len() == 36)),
        "every event has an eventId"
    );
    gw.stop_cleanly();
}

/// Serves the test page, which loads the tracker from the gateway, on `port`.
async fn page_server(gateway: String, port: u16) {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>shop</title>\
         <script src=\"{gateway}/sdk/tracker.js\"></script></head><body>shop</body></html>"
    );
    let app = axum::Router::new().route(
        "/page.html",
        axum::routing::get(move || {
            let page = page.clone();
            async move { ([("content-type", "text/html; charset=utf-8")], page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// Every JSON line in every object of the bucket.
async fn s3_events(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<Json> {
    let Ok(list) = s3.list_objects_v2().bucket(bucket).send().await else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for o in list.contents() {
        let Some(key) = o.key() else { continue };
        let Ok(obj) = s3.get_object().bucket(bucket).key(key).send().await else {
            continue;
        };
        let bytes = obj.body.collect().await.unwrap().into_bytes();
        for line in String::from_utf8_lossy(&bytes).lines() {
            if let Ok(v) = serde_json::from_str::<Json>(line) {
                events.push(v);
            }
        }
    }
    events
}

/// One page in headless Chromium streams events over `new WebSocket(...)` (the key in the
/// query string): each acknowledged with its id, each record in the emulator's Kinesis once
/// with the page's connection id; a handshake with a bad key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_streams_events_over_a_websocket_and_each_reaches_kinesis_once() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    if !browser_ready() {
        return;
    }
    let project = support::Project::custom(
        "browser-ws",
        support::WS_KINESIS,
        &[("track.vtl", support::WS_TRACK)],
    );
    tokio::task::block_in_place(|| project.provision());
    let key = project.key("devices");
    let gw = tokio::task::block_in_place(|| support::Gateway::start(&project.config));
    let seen = drive(
        "ws.mjs",
        vec![("GATEWAY", format!("http://{}", gw.addr)), ("KEY", key)],
    )
    .await;
    let acks = seen["acks"].as_array().unwrap();
    assert_eq!(acks.len(), 20, "{seen}");
    let mut acked: Vec<&str> = acks.iter().map(|a| a["ack"].as_str().unwrap()).collect();
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), 20, "each message acknowledged once: {seen}");
    assert!(acks.iter().all(|a| a["status"] == 200), "{seen}");
    let connection = acks[0]["connectionId"].as_str().unwrap().to_string();
    assert_eq!(seen["closed"], 1000);
    assert_eq!(seen["bad"], "refused", "{seen}");

    let kinesis = aws_sdk_kinesis::Client::new(&support::aws(&endpoint).await);
    let stream = project.name("ws-stream");
    let records = support::eventually(20, || async {
        let d = support::stream_data(&kinesis, &stream).await;
        (d.len() >= 20).then_some(d)
    })
    .await
    .expect("every message's record in the stream");
    let mut ids = Vec::new();
    for r in &records {
        let v: Json = serde_json::from_slice(r).unwrap();
        assert_eq!(v["connection"], connection.as_str(), "{v}");
        ids.push(v["body"]["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..20).map(|i| format!("browser-{i}")).collect();
        e.sort();
        e
    };
    assert_eq!(ids, expected, "each message's record once");
    tokio::task::block_in_place(|| gw.stop_cleanly());
}
