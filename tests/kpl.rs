//! KPL aggregation end to end: concurrent requests to an aggregating `PutRecords` route,
//! the records read back from both shards of the emulator's stream, and de-aggregated by
//! the reference library (`aws-kinesis-agg`, installed next to the emulator). Every user
//! record arrives exactly once, on the shard its partition key maps to, in order per key.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{Value as Json, json};
use support::{Gateway, Project};

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/events"
action = "kinesis:PutRecords"
target = "agg-stream-{S}"
request_templates = { "application/json" = "put-records.vtl" }
batch = { aggregate = true, linger = "20ms" }

[[resources.kinesis_streams]]
name = "agg-stream-{S}"
shards = 2
"#;

const TEMPLATE: &str = r#"{"Records": [#foreach($e in $input.path('$.events')){"Data": "$util.base64Encode($input.json("$.events[$foreach.index]"))", "PartitionKey": "$e.user"}#if($foreach.hasNext),#end#end]}"#;

const REQUESTS: usize = 24;
const PER_REQUEST: usize = 25;

fn python() -> std::path::PathBuf {
    let venv = std::env::var_os("INGEST_GATEWAY_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| support::repo().join(".venv"));
    let venv = if venv.is_absolute() {
        venv
    } else {
        support::repo().join(venv)
    };
    venv.join("bin/python")
}

/// De-aggregates records with the reference library: `(partition key, data)` per user record.
fn deaggregate(records: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let input: Vec<Json> = records
        .iter()
        .map(|(pk, data)| {
            json!({"pk": pk, "data": base64::engine::general_purpose::STANDARD.encode(data)})
        })
        .collect();
    let script = r#"
import base64, json, sys
from aws_kinesis_agg.deaggregator import deaggregate_records
out = []
for r in json.load(sys.stdin):
    rec = {"kinesis": {"data": r["data"], "partitionKey": r["pk"], "sequenceNumber": "1",
                       "approximateArrivalTimestamp": 1.0, "kinesisSchemaVersion": "1.0"},
           "eventSource": "aws:kinesis", "eventID": "e", "eventName": "aws:kinesis:record",
           "eventVersion": "1.0", "eventSourceARN": "a", "awsRegion": "us-east-1",
           "invokeIdentityArn": "a"}
    for u in deaggregate_records([rec]):
        out.append([u["kinesis"]["partitionKey"],
                    base64.b64decode(u["kinesis"]["data"]).decode()])
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the emulator's Python environment (scripts/emulator installs it)");
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "de-aggregation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregated_records_deaggregate_to_exactly_the_sent_records() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::custom("kpl", CONFIG, &[("put-records.vtl", TEMPLATE)]);
    project.provision();
    let gw = Gateway::start(&project.config);

    // Concurrent requests, so batches mix requests; 8 users, records numbered per user.
    let responses: Vec<(usize, support::Response)> = support::concurrently(REQUESTS, |r| {
        let events: Vec<Json> = (0..PER_REQUEST)
            .map(|i| json!({"user": format!("user-{}", (r + i) % 8), "req": r, "i": i}))
            .collect();
        let body = json!({ "events": events }).to_string();
        (r, gw.post_json("/events", &body))
    });
    if let Some((r, resp)) = responses.iter().find(|(_, resp)| resp.status != 200) {
        let (_, log) = gw.stop();
        panic!("request {r}: {} {}\n{log}", resp.status, resp.text());
    }
    for (_, resp) in &responses {
        let out = resp.json();
        assert_eq!(out["FailedRecordCount"], 0);
        let records = out["Records"].as_array().unwrap();
        assert_eq!(records.len(), PER_REQUEST, "one result per user record");
        assert!(records.iter().all(|r| r["SequenceNumber"].is_string()));
    }

    // Read both shards back.
    let kinesis = aws_sdk_kinesis::Client::new(&support::aws(&endpoint).await);
    let stream = project.name("agg-stream");
    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(shards.shards().len(), 2);
    let mut users: Vec<(String, String)> = Vec::new();
    let mut aggregates = 0;
    for shard in shards.shards() {
        let range = shard.hash_key_range().unwrap();
        let (start, end): (u128, u128) = (
            range.starting_hash_key().parse().unwrap(),
            range.ending_hash_key().parse().unwrap(),
        );
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let got = kinesis
            .get_records()
            .shard_iterator(iterator.shard_iterator().unwrap())
            .limit(10_000)
            .send()
            .await
            .unwrap();
        let records: Vec<(String, Vec<u8>)> = got
            .records()
            .iter()
            .map(|r| {
                (
                    r.partition_key().unwrap_or_default().to_string(),
                    r.data().as_ref().to_vec(),
                )
            })
            .collect();
        aggregates += records.len();
        for (pk, data) in deaggregate(&records) {
            // Each user record sits on the shard its own partition key maps to.
            let hash = u128::from_be_bytes(Md5::digest(pk.as_bytes()).into());
            assert!(
                (start..=end).contains(&hash),
                "{pk} landed on {} outside its range",
                shard.shard_id()
            );
            users.push((pk, data));
        }
    }
    assert!(
        aggregates < REQUESTS * PER_REQUEST / 10,
        "{aggregates} Kinesis records for {} user records",
        REQUESTS * PER_REQUEST
    );

    // Exactly the sent records, once each; within a request, in order per key.
    assert_eq!(users.len(), REQUESTS * PER_REQUEST);
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    let mut last: HashMap<(String, u64), u64> = HashMap::new();
    for (pk, data) in &users {
        let v: Json = serde_json::from_str(data).unwrap();
        let (r, i) = (v["req"].as_u64().unwrap(), v["i"].as_u64().unwrap());
        assert_eq!(v["user"], pk.as_str());
        *seen.entry((r, i)).or_default() += 1;
        if let Some(prev) = last.insert((pk.clone(), r), i) {
            assert!(
                prev < i,
                "{pk}: record {i} of request {r} came after {prev}"
            );
        }
    }
    assert_eq!(seen.len(), REQUESTS * PER_REQUEST);
    assert!(seen.values().all(|&n| n == 1), "a record arrived twice");
}
