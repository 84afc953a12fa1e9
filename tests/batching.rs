//! Firehose `PutRecordBatch` batching across requests, end to end against the emulator:
//! concurrent requests share upstream calls (read from `/metrics`), each gets exactly its
//! own record ids, and every record lands in S3 once.

mod support;

use std::collections::HashSet;

use serde_json::{Value as Json, json};
use support::{Gateway, Project};

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/firehose/batch"
action = "firehose:PutRecordBatch"
target = "batched-direct-{S}"
request_templates = { "application/json" = "firehose-batch.vtl" }
batch = { linger = "50ms" }

[[resources.s3_buckets]]
name = "batched-bucket-{S}"

[[resources.firehose_delivery_streams]]
name = "batched-direct-{S}"
bucket = "batched-bucket-{S}"
prefix = "direct/"
role_arn = "arn:aws:iam::000000000000:role/firehose"
"#;

const TEMPLATE: &str = "#set($nl = \"\n\")\n{\"Records\": [#foreach($e in $input.path('$.events'))#set($j = $input.json(\"$.events[$foreach.index]\")){\"Data\": \"$util.base64Encode(\"$j$nl\")\"}#if($foreach.hasNext),#end#end]}";

const REQUESTS: usize = 20;
const PER_REQUEST: usize = 3;

/// The sum of a Prometheus counter or histogram-count series named `name`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_firehose_requests_share_calls_and_every_record_lands_once() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::custom("batching", CONFIG, &[("firehose-batch.vtl", TEMPLATE)]);
    project.provision();
    let gw = Gateway::start(&project.config);

    let responses: Vec<(usize, support::Response)> = support::concurrently(REQUESTS, |r| {
        let events: Vec<Json> = (0..PER_REQUEST).map(|i| json!({"r": r, "i": i})).collect();
        let body = json!({ "events": events }).to_string();
        (r, gw.post_json("/firehose/batch", &body))
    });
    let mut ids = HashSet::new();
    for (r, resp) in &responses {
        assert_eq!(resp.status, 200, "request {r}: {}", resp.text());
        let out = resp.json();
        assert_eq!(out["FailedPutCount"], 0);
        let answers = out["RequestResponses"].as_array().unwrap();
        assert_eq!(answers.len(), PER_REQUEST, "exactly this request's records");
        for a in answers {
            assert!(ids.insert(a["RecordId"].as_str().unwrap().to_string()));
        }
    }

    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    let flushes = metric(&metrics, "gateway_batch_records_count");
    let records = metric(&metrics, "gateway_batch_records_sum");
    assert_eq!(records as usize, REQUESTS * PER_REQUEST, "{metrics}");
    assert!(
        flushes >= 1.0 && (flushes as usize) < REQUESTS,
        "{flushes} upstream calls for {REQUESTS} requests"
    );

    // Every record in S3, once.
    let sdk = support::aws(&endpoint).await;
    let s3 = support::s3(&sdk);
    let bucket = project.name("batched-bucket");
    let mut lines = support::eventually(20, || async {
        let list = s3.list_objects_v2().bucket(&bucket).send().await.ok()?;
        let mut text = String::new();
        for o in list.contents() {
            let obj = s3
                .get_object()
                .bucket(&bucket)
                .key(o.key()?)
                .send()
                .await
                .ok()?;
            text.push_str(
                &String::from_utf8(obj.body.collect().await.ok()?.into_bytes().to_vec()).ok()?,
            );
        }
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= REQUESTS * PER_REQUEST).then_some(lines)
    })
    .await
    .expect("every record in S3");
    lines.sort();
    let mut expected: Vec<String> = (0..REQUESTS)
        .flat_map(|r| (0..PER_REQUEST).map(move |i| json!({"r": r, "i": i}).to_string()))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
}
