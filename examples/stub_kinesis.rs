//! A stand-in Kinesis for load benchmarks: answers `PutRecord` and `PutRecords` (JSON
//! protocol), and EventBridge's `PutEvents` (each entry a record), after a fixed latency,
//! and counts calls and records (`GET /stats`).
//! `ListShards` lists four open shards that split the hash key space evenly.
//!
//! `cargo run --release --example stub_kinesis -- 127.0.0.1:4599 20` (address, latency ms)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    /// Kinesis PUT payload units: each record's data and partition key, in 25 KB chunks.
    units: AtomicU64,
}

/// PUT payload units of one record (base64 data as sent on the wire).
fn units(record: &serde_json::Value) -> u64 {
    let data = record["Data"].as_str().map_or(0, |d| d.len() / 4 * 3);
    let key = record["PartitionKey"].as_str().map_or(0, str::len);
    (data + key).div_ceil(25 * 1024).max(1) as u64
}

fn list_shards() -> String {
    let step = u128::MAX / 4;
    let shards: Vec<serde_json::Value> = (0..4u128)
        .map(|i| {
            let end = if i == 3 { u128::MAX } else { step * (i + 1) - 1 };
            serde_json::json!({
                "ShardId": format!("shardId-{i:012}"),
                "HashKeyRange": {"StartingHashKey": (step * i).to_string(), "EndingHashKey": end.to_string()},
                "SequenceNumberRange": {"StartingSequenceNumber": "0"}
            })
        })
        .collect();
    serde_json::json!({ "Shards": shards }).to_string()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4599".into());
    let latency = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(20));
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    let app = Router::new()
        .route(
            "/stats",
            get(move || {
                let s = s.clone();
                async move {
                    format!(
                        "{{\"calls\": {}, \"records\": {}, \"bytes\": {}, \"units\": {}}}",
                        s.calls.load(Ordering::Relaxed),
                        s.records.load(Ordering::Relaxed),
                        s.bytes.load(Ordering::Relaxed),
                        s.units.load(Ordering::Relaxed)
                    )
                }
            }),
        )
        .fallback(post(move |headers: HeaderMap, body: Bytes| {
            let stats = stats.clone();
            async move {
                tokio::time::sleep(latency).await;
                let calls = stats.calls.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
                let body = if target.ends_with("ListShards") {
                    stats.calls.fetch_sub(1, Ordering::Relaxed);
                    list_shards()
                } else if target == "AWSEvents.PutEvents" {
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let n = req["Entries"].as_array().map_or(0, Vec::len);
                    stats.records.fetch_add(n as u64, Ordering::Relaxed);
                    let entries: Vec<serde_json::Value> = (0..n)
                        .map(|i| serde_json::json!({"EventId": format!("{calls}-{i}")}))
                        .collect();
                    serde_json::json!({"FailedEntryCount": 0, "Entries": entries}).to_string()
                } else if target.ends_with("PutRecords") {
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let n = req["Records"].as_array().map_or(0, Vec::len);
                    stats.records.fetch_add(n as u64, Ordering::Relaxed);
                    let u: u64 = req["Records"].as_array().map_or(0, |r| r.iter().map(units).sum());
                    stats.units.fetch_add(u, Ordering::Relaxed);
                    let records: Vec<serde_json::Value> = (0..n)
                        .map(|i| serde_json::json!({"SequenceNumber": format!("{calls}{i:03}"), "ShardId": "shardId-000000000000"}))
                        .collect();
                    serde_json::json!({"FailedRecordCount": 0, "Records": records}).to_string()
                } else {
                    stats.records.fetch_add(1, Ordering::Relaxed);
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    stats.units.fetch_add(units(&req), Ordering::Relaxed);
                    serde_json::json!({"SequenceNumber": calls.to_string(), "ShardId": "shardId-000000000000"}).to_string()
                };
                ([("content-type", "application/x-amz-json-1.1")], body)
            }
        }));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!(
        "stub kinesis on http://{} with {latency:?} latency",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app).await.unwrap();
}
