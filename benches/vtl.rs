//! Template rendering cost, as a ratio to parsing the same body with serde_json.
//!
//! For each body size the group holds `parse` (a bare `serde_json::from_slice::<Value>`, the
//! floor any JSON-aware mapping pays) and `render` (the whole mapping: body parse, template
//! evaluation, re-serialisation, base64, output). `scripts/bench-vtl` prints the ratios.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use indexmap::IndexMap;
use ingest_gateway::mapping::{self, MappingInput, Params, context};
use ingest_gateway::vtl::{Limits, Template};
use serde_json::{Value, json};

/// The classic PutRecord template from the API Gateway documentation.
const PUT_RECORD: &str = include_str!("../mappings/kinesis-put-record.vtl");

/// A PutRecords template over a batch: one record per event, each the event re-serialised
/// and base64-encoded, partitioned by a field of the event.
const PUT_RECORDS: &str = r#"{
  "StreamName": "$stageVariables.stream",
  "Records": [
#foreach($event in $input.path('$.events'))
    {
      "Data": "$util.base64Encode($input.json("$.events[$foreach.index]"))",
      "PartitionKey": "$event.userId"
    }#if($foreach.hasNext),#end
#end
  ]
}"#;

const CLICKSTREAM: &str = include_str!("../mappings/clickstream-put-records.vtl");

/// `scripts/bench`'s row (j): the body is a JSON array of events, each re-serialised into its
/// own record.
const ARRAY: &str = r#"{"Records": [#foreach($e in $input.path('$'))
{"Data": "$util.base64Encode($input.json("$[$foreach.index]"))", "PartitionKey": "$e.userId"}#if($foreach.hasNext),#end#end]}"#;

/// One event whose serialised size is close to `size` bytes.
fn event(i: usize, size: usize) -> Value {
    let mut e = json!({
        "userId": format!("user-{i:06}"),
        "sessionId": format!("session-{:04}", i % 97),
        "type": "click",
        "ts": 1_764_077_930_000u64 + i as u64,
        "props": {"x": i, "y": 3.25, "ok": true},
        "pad": ""
    });
    let pad = size.saturating_sub(e.to_string().len());
    e["pad"] = Value::String("p".repeat(pad));
    e
}

fn single_body(size: usize) -> String {
    event(0, size).to_string()
}

/// A batch of `n` events totalling about `total` bytes; when that leaves under ~100 bytes
/// per event, the events are minimal (`{"userId": ...}`).
fn batch_body(total: usize, n: usize) -> String {
    let per = (total / n).saturating_sub(1);
    let events: Vec<Value> = (0..n)
        .map(|i| {
            if per < 100 {
                json!({"userId": format!("u{i:0w$}", w = per.saturating_sub(14).max(1))})
            } else {
                event(i, per)
            }
        })
        .collect();
    json!({ "events": events }).to_string()
}

fn bench_case(c: &mut Criterion, group: &str, template: &str, body: &str) {
    let template = Template::compile(group, template).unwrap();
    let params = Params::default();
    let stage = IndexMap::from([("stream".to_string(), "clickstream".to_string())]);
    let facts = context::RequestFacts {
        request_id: "6f1c1e3e-8c7a-4c1e-9a53-2d1f0c9b7a10".into(),
        source_ip: "203.0.113.9".into(),
        request_time_epoch_ms: 1_764_077_930_000,
        ..Default::default()
    };
    let build_context = || context::build(&facts);
    let limits = Limits::default();
    let mut g = c.benchmark_group(group);
    g.throughput(criterion::Throughput::Bytes(body.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(body.as_bytes())).unwrap())
    });
    // The work a render cannot avoid beyond the parse: re-serialising the document and
    // base64-encoding that text (the classic templates do both).
    let parsed: Value = serde_json::from_str(body).unwrap();
    let compact = serde_json::to_string(&parsed).unwrap();
    g.bench_function("serialize", |b| {
        b.iter(|| serde_json::to_string(black_box(&parsed)).unwrap())
    });
    g.bench_function("base64", |b| {
        b.iter(|| ingest_gateway::mapping::util::base64_encode(black_box(&compact)))
    });
    g.bench_function("render", |b| {
        b.iter(|| {
            let input = MappingInput {
                body: black_box(body),
                params: &|| params.clone(),
                stage_variables: &stage,
                context: &build_context,
            };
            mapping::render(&template, &input, &limits).unwrap()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        bench_case(
            c,
            &format!("put_record/{label}"),
            PUT_RECORD,
            &single_body(size),
        );
        let batch = batch_body(size, 50);
        bench_case(c, &format!("put_records_50/{label}"), PUT_RECORDS, &batch);
        bench_case(c, &format!("clickstream_50/{label}"), CLICKSTREAM, &batch);
        let array: Value = serde_json::from_str::<Value>(&batch).unwrap()["events"].take();
        bench_case(c, &format!("array_50/{label}"), ARRAY, &array.to_string());
    }
}

criterion_group! {
    name = vtl;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(vtl);
