//! WebSocket ingestion through the real binary with a real client (`tokio-tungstenite`):
//! refused handshakes before any upgrade, route selection and `$default`, the Forbidden
//! frame, acknowledgements with the messages' ids, throttled messages acknowledged with
//! 429, the size and idle limits; and, on the emulator, messages batched into Kinesis and
//! read back once each with their connection id.

mod support;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value as Json, json};
use support::{Gateway, Project};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway, path: &str, key: Option<&str>) -> Result<Socket, u16> {
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    if let Some(k) = key {
        req.headers_mut().insert("x-api-key", k.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next text frame, as JSON.
async fn frame(s: &mut Socket) -> Json {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection is open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("not a text frame: {other:?}"),
        }
    }
}

/// The close frame's code, once the server closes.
async fn closed(s: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

const MOCK: &str = r#"
[auth]
key_store = "keys.db"

[usage_plans.devices]
throttle = { rate = 0.01, burst = 3 }

[usage_plans.roomy]

[websocket]
path = "/v1/stream"
api_key_required = true
max_message_bytes = 1024
idle_timeout = "1s"

[[websocket.routes]]
key = "track"
action = "mock"
request_templates = { "application/json" = "mock.vtl" }
ack = true

[[websocket.routes]]
key = "$default"
action = "mock"
request_templates = { "application/json" = "mock.vtl", "text/plain" = "mock.vtl" }
ack = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_routes_acknowledgements_and_limits() {
    let project = Project::custom("ws", MOCK, &[("mock.vtl", r#"{"statusCode": 200}"#)]);
    let key = project.key("devices");
    let roomy = project.key("roomy");
    let gw = tokio::task::block_in_place(|| Gateway::start(&project.config));

    // Refused before any upgrade: no key, an unknown key.
    assert_eq!(connect(&gw, "/v1/stream", None).await.err(), Some(403));
    assert_eq!(
        connect(&gw, "/v1/stream", Some("wrong-key-0123456789abcdef"))
            .await
            .err(),
        Some(403)
    );

    // Route selection, $default, acknowledgements by id (else the message id).
    let mut s = connect(&gw, "/v1/stream", Some(&roomy)).await.unwrap();
    s.send(Message::text(
        json!({"action": "track", "id": "e-1"}).to_string(),
    ))
    .await
    .unwrap();
    let ack = frame(&mut s).await;
    assert_eq!(
        (ack["ack"].clone(), ack["status"].clone()),
        (json!("e-1"), json!(200)),
        "{ack}"
    );
    let connection = ack["connectionId"].as_str().unwrap().to_string();
    s.send(Message::text("not json")).await.unwrap();
    let ack = frame(&mut s).await;
    assert_eq!(ack["status"], 200, "{ack}");
    assert!(
        ack["ack"].as_str().unwrap().starts_with(&connection),
        "the message id: {ack}"
    );

    // A message over max_message_bytes closes the connection with 1009.
    s.send(Message::text("x".repeat(2048))).await.unwrap();
    assert_eq!(closed(&mut s).await, Some(1009));

    // Each message counts against the key's plan: the fourth within the burst of 3 is 429.
    let mut s = connect(&gw, "/v1/stream", Some(&key)).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..4 {
        s.send(Message::text(
            json!({"action": "track", "id": i}).to_string(),
        ))
        .await
        .unwrap();
        statuses.push(frame(&mut s).await);
    }
    assert_eq!(
        statuses.iter().filter(|a| a["status"] == 200).count(),
        2,
        "{statuses:?}"
    );
    let throttled: Vec<&Json> = statuses.iter().filter(|a| a["status"] == 429).collect();
    assert_eq!(throttled.len(), 2, "{statuses:?}");
    assert!(
        throttled[0]["retryAfter"].as_u64().is_some(),
        "{}",
        throttled[0]
    );
    assert_eq!(throttled[0]["message"], "Too Many Requests");

    // Idle for longer than idle_timeout: closed with 1001.
    let mut s = connect(&gw, "/v1/stream", Some(&roomy)).await.unwrap();
    assert_eq!(closed(&mut s).await, Some(1001));
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_default_an_unknown_route_gets_forbidden() {
    let config = MOCK
        .replace("key = \"$default\"", "key = \"other\"")
        .replace("api_key_required = true", "api_key_required = false");
    let project = Project::custom(
        "ws-forbidden",
        &config,
        &[("mock.vtl", r#"{"statusCode": 200}"#)],
    );
    let gw = tokio::task::block_in_place(|| Gateway::start(&project.config));
    let mut s = connect(&gw, "/v1/stream", None).await.unwrap();
    s.send(Message::text(json!({"action": "nope"}).to_string()))
        .await
        .unwrap();
    let f = frame(&mut s).await;
    assert_eq!(f["message"], "Forbidden", "{f}");
    assert!(
        f["connectionId"].is_string() && f["requestId"].is_string(),
        "{f}"
    );
    // Plain HTTP at the endpoint is not an upgrade.
    let r = tokio::task::block_in_place(|| gw.request("GET", "/v1/stream", &[], b""));
    assert!(r.status >= 400 && r.status < 500, "{}", r.status);
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_batched_into_kinesis_once_each() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::custom(
        "ws-kinesis",
        support::WS_KINESIS,
        &[("track.vtl", support::WS_TRACK)],
    );
    tokio::task::block_in_place(|| project.provision());
    let key = project.key("devices");
    let gw = tokio::task::block_in_place(|| Gateway::start(&project.config));
    let n = 25;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        sockets.push(connect(&gw, "/v1/stream", Some(&key)).await.unwrap());
    }
    for (c, s) in sockets.iter_mut().enumerate() {
        for i in 0..n {
            s.send(Message::text(
                json!({"action": "track", "id": format!("{c}-{i}")}).to_string(),
            ))
            .await
            .unwrap();
        }
    }
    let mut connections = Vec::new();
    for s in &mut sockets {
        let mut acked = std::collections::HashSet::new();
        for _ in 0..n {
            let a = frame(s).await;
            assert_eq!(a["status"], 200, "{a}");
            acked.insert(a["ack"].as_str().unwrap().to_string());
            connections.push(a["connectionId"].as_str().unwrap().to_string());
        }
        assert_eq!(acked.len(), n, "every message acknowledged once");
    }
    let sdk = support::aws(&endpoint).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let stream = project.name("ws-stream");
    let records = support::eventually(20, || async {
        let d = support::stream_data(&kinesis, &stream).await;
        (d.len() >= 2 * n).then_some(d)
    })
    .await
    .expect("every message's record in the stream");
    assert_eq!(records.len(), 2 * n, "once each");
    let mut ids = std::collections::HashSet::new();
    for r in &records {
        let v: Json = serde_json::from_slice(r).unwrap();
        assert_eq!(
            (v["route"].as_str(), v["event"].as_str()),
            (Some("track"), Some("MESSAGE")),
            "{v}"
        );
        assert!(
            connections.contains(&v["connection"].as_str().unwrap().to_string()),
            "{v}"
        );
        ids.insert(v["body"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 2 * n);
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_api_talks_back_and_sigterm_closes_with_1001() {
    let port = support::free_port();
    let config = MOCK
        .replace("api_key_required = true", "api_key_required = false")
        .replace(
            "idle_timeout = \"1s\"",
            &format!("idle_timeout = \"1m\"\nmanagement_listen = \"127.0.0.1:{port}\""),
        );
    let project = Project::custom(
        "ws-connections",
        &config,
        &[("mock.vtl", r#"{"statusCode": 200}"#)],
    );
    let gw = tokio::task::block_in_place(|| Gateway::start(&project.config));
    let management = format!("127.0.0.1:{port}");
    let mut s = connect(&gw, "/v1/stream", None).await.unwrap();
    s.send(Message::text(
        json!({"action": "track", "id": 1}).to_string(),
    ))
    .await
    .unwrap();
    let id = frame(&mut s).await["connectionId"]
        .as_str()
        .unwrap()
        .to_string();
    let at = format!("/@connections/{id}");

    let r = tokio::task::block_in_place(|| {
        support::request(&management, "POST", &at, &[], br#"{"hello": "device"}"#)
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(frame(&mut s).await, json!({"hello": "device"}));
    let r = tokio::task::block_in_place(|| {
        support::request(
            &management,
            "POST",
            &at,
            &[("content-type", "application/octet-stream")],
            &[0, 1, 255],
        )
    });
    assert_eq!(r.status, 200);
    let m = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::binary(vec![0u8, 1, 255]));
    let r = tokio::task::block_in_place(|| support::request(&management, "GET", &at, &[], b""));
    assert_eq!(r.status, 200);
    let info = r.json();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1", "{info}");
    assert!(
        info["connectedAt"].as_str().unwrap().ends_with('Z'),
        "{info}"
    );
    let r = tokio::task::block_in_place(|| support::request(&management, "DELETE", &at, &[], b""));
    assert_eq!(r.status, 204);
    assert_eq!(closed(&mut s).await, Some(1000));
    let gone = |method: &str| {
        tokio::task::block_in_place(|| support::request(&management, method, &at, &[], b"x"))
    };
    for method in ["GET", "POST", "DELETE"] {
        let r = gone(method);
        assert_eq!(r.status, 410, "{method}");
        assert_eq!(r.header("x-amzn-errortype"), Some("GoneException"));
    }

    // SIGTERM: an open connection gets its close frame.
    let mut s = connect(&gw, "/v1/stream", None).await.unwrap();
    s.send(Message::text(
        json!({"action": "track", "id": "last"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(frame(&mut s).await["ack"], "last");
    gw.terminate();
    assert_eq!(closed(&mut s).await, Some(1001));
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

/// A stalled upstream: the connection's messages in flight reach `max_in_flight`, the
/// server stops reading (the client's writes stop completing once the socket's buffers are
/// full), its memory stays bounded, and once the upstream answers again every message the
/// client sent is acknowledged and delivered, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_stops_reading_and_loses_nothing() {
    let stub = support::stub_kinesis().await;
    let config = r#"
[auth]
key_store = "keys.db"

[usage_plans.devices]

[websocket]
path = "/v1/stream"
api_key_required = true
max_in_flight = 8

[[websocket.routes]]
key = "$default"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "track.vtl" }
ack = true
timeout = "60s"
"#;
    let track = r#"{"Records": [{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "$context.connectionId"}]}"#;
    let project = Project::custom("ws-stall", config, &[("track.vtl", track)]);
    let key = project.key("devices");
    let gw =
        tokio::task::block_in_place(|| Gateway::start_against(&project.config, &stub.endpoint));
    stub.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let socket = connect(&gw, "/v1/stream", Some(&key)).await.unwrap();
    let (mut write, mut read) = socket.split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pad = "p".repeat(1000);
    let writer = {
        let (sent, stop) = (sent.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0..100_000usize {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let m = json!({"id": format!("m-{i}"), "pad": pad}).to_string();
                if write.send(Message::text(m)).await.is_err() {
                    break;
                }
                sent.store(i + 1, std::sync::atomic::Ordering::SeqCst);
            }
            write
        })
    };
    // The writes stop completing: the server reads no more than its in-flight bound and
    // what the socket buffers hold.
    let plateau = |s: &std::sync::Arc<std::sync::atomic::AtomicUsize>| {
        s.load(std::sync::atomic::Ordering::SeqCst)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = plateau(&sent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = plateau(&sent);
    assert_eq!(
        before, after,
        "the client's writes stalled ({before} then {after})"
    );
    assert!(after < 100_000, "not everything was read: {after}");
    let rss_mib = gw.peak_rss_kib() / 1024;
    eprintln!("stalled after {after} messages of 1 KiB; gateway peak RSS {rss_mib} MiB");
    assert!(rss_mib < 150, "memory stayed bounded: {rss_mib} MiB");
    // The upstream answers again: everything sent is acknowledged and delivered once.
    stub.stall.store(false, std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _write = writer.await.unwrap();
    let total = plateau(&sent);
    let mut acked = std::collections::HashSet::new();
    while acked.len() < total {
        let a = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match read.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str::<Json>(&t).unwrap(),
                    Some(Ok(_)) => continue,
                    other => panic!("the connection ended: {other:?}"),
                }
            }
        })
        .await
        .expect("an acknowledgement");
        assert_eq!(a["status"], 200, "{a}");
        acked.insert(a["ack"].as_str().unwrap().to_string());
    }
    let data = stub.data.lock().unwrap().clone();
    let mut ids: Vec<String> = data
        .iter()
        .map(|d| {
            serde_json::from_str::<Json>(d).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    let delivered = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), delivered, "no message delivered twice");
    for id in &acked {
        assert!(
            ids.binary_search(id).is_ok(),
            "acknowledged {id} was delivered"
        );
    }
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

/// `max_connection_age` closes even a busy connection with 1001, after answering what it
/// sent; the limits are durations of the configuration, here shortened to seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_its_age_limit() {
    let config = MOCK
        .replace(
            "idle_timeout = \"1s\"",
            "idle_timeout = \"10m\"\nmax_connection_age = \"2s\"",
        )
        .replace("throttle = { rate = 0.01, burst = 3 }", "");
    let project = Project::custom("ws-age", &config, &[("mock.vtl", r#"{"statusCode": 200}"#)]);
    let key = project.key("roomy");
    let gw = tokio::task::block_in_place(|| Gateway::start(&project.config));
    let mut s = connect(&gw, "/v1/stream", Some(&key)).await.unwrap();
    let start = std::time::Instant::now();
    let mut acked = 0;
    let code = loop {
        if s.send(Message::text(
            json!({"action": "track", "id": acked}).to_string(),
        ))
        .await
        .is_err()
        {
            break closed(&mut s).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let a: Json = serde_json::from_str(&t).unwrap();
                assert_eq!(a["status"], 200, "{a}");
                acked += 1;
            }
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lived = start.elapsed();
    assert_eq!(code, Some(1001), "closed as going away");
    assert!(
        lived >= Duration::from_millis(1900) && lived < Duration::from_secs(4),
        "closed at the age limit, busy all along: {lived:?}"
    );
    assert!(acked >= 5, "{acked} messages answered before the close");
    tokio::task::block_in_place(|| gw.stop_cleanly());
}
