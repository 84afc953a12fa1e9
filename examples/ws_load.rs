//! A WebSocket load generator for `scripts/bench-ws`: CONNECTIONS connections to URL, each
//! sending the event in FILE as `{"action": "track", "id": N, "event": ...}` with at most
//! WINDOW messages awaiting their acknowledgement, for SECONDS. Prints one line:
//! `acked=N errors=N seconds=S p50_ms=X p99_ms=Y`.
//!
//! Usage: ws_load URL CONNECTIONS SECONDS FILE [WINDOW] [API_KEY]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, connections, seconds, file, rest @ ..] = args.as_slice() else {
        eprintln!("usage: ws_load URL CONNECTIONS SECONDS FILE [WINDOW] [API_KEY]");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("CONNECTIONS");
    let seconds: f64 = seconds.trim_end_matches('s').parse().expect("SECONDS");
    let window: usize = rest.first().map_or(32, |w| w.parse().expect("WINDOW"));
    let key = rest.get(1).cloned();
    let event = std::fs::read_to_string(file).expect("FILE");
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (url, event, key) = (url.clone(), event.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = url.into_client_request().unwrap();
            if let Some(k) = key {
                req.headers_mut().insert("x-api-key", k.parse().unwrap());
            }
            let (socket, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("connect");
            let (mut tx, mut rx) = socket.split();
            let mut sent: HashMap<u64, Instant> = HashMap::new();
            let (mut next, mut acked, mut errors) = (0u64, 0u64, 0u64);
            let mut latencies = Vec::new();
            loop {
                while sent.len() < window && Instant::now() < until {
                    let id = (c as u64) << 40 | next;
                    next += 1;
                    let m = format!(r#"{{"action": "track", "id": {id}, "event": {event}}}"#);
                    tx.feed(Message::text(m)).await.unwrap();
                    sent.insert(id, Instant::now());
                }
                tx.flush().await.unwrap();
                if sent.is_empty() {
                    break;
                }
                let Some(Ok(Message::Text(t))) = rx.next().await else {
                    break;
                };
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                let Some(id) = v["ack"].as_u64() else {
                    if errors == 0 && c == 0 {
                        eprintln!("first error: {v}");
                    }
                    errors += 1;
                    continue;
                };
                if let Some(at) = sent.remove(&id) {
                    latencies.push(at.elapsed());
                }
                if v["status"] == 200 {
                    acked += 1;
                } else {
                    if errors == 0 && c == 0 {
                        eprintln!("first error: {v}");
                    }
                    errors += 1;
                }
            }
            let _ = tx.send(Message::Close(None)).await;
            (acked, errors, latencies)
        }));
    }
    let started = Instant::now();
    let (mut acked, mut errors, mut latencies) = (0, 0, Vec::new());
    for t in tasks {
        let (a, e, l) = t.await.unwrap();
        acked += a;
        errors += e;
        latencies.extend(l);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "acked={acked} errors={errors} seconds={:.2} p50_ms={:.2} p99_ms={:.2}",
        started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
}
