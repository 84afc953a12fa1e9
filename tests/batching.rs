//! Firehose `PutRecordBatch` and SQS `SendMessageBatch` batching across requests, end to
//! end against the emulator: concurrent requests share upstream calls (read from
//! `/metrics`), each gets exactly its own results, and every record lands once.

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

[[routes]]
method = "POST"
path = "/sqs/batch"
action = "sqs:SendMessageBatch"
target = "batched-queue-{S}"
request_templates = { "application/json" = "sqs-batch.vtl" }
batch = { linger = "50ms" }

[[resources.sqs_queues]]
name = "batched-queue-{S}"

[[resources.s3_buckets]]
name = "batched-bucket-{S}"

[[resources.firehose_delivery_streams]]
name = "batched-direct-{S}"
bucket = "batched-bucket-{S}"
prefix = "direct/"
role_arn = "arn:aws:iam::000000000000:role/firehose"
"#;

const TEMPLATE: &str = "#set($nl = \"\n\")\n{\"Records\": [#foreach($e in $input.path('$.events'))#set($j = $input.json(\"$.events[$foreach.index]\")){\"Data\": \"$util.base64Encode(\"$j$nl\")\"}#if($foreach.hasNext),#end#end]}";

const SQS_TEMPLATE: &str = r#"{"Entries": [#foreach($m in $input.path('$.messages')){"Id": "$m.id", "MessageBody": "$util.escapeJavaScript($m.body)"}#if($foreach.hasNext),#end#end]}"#;

const REQUESTS: usize = 20;
const PER_REQUEST: usize = 3;

/// The sum of a Prometheus counter or histogram-count series named `name`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The provisioned project and its running gateway.
fn start(test: &str) -> (Project, Gateway) {
    let project = Project::custom(
        test,
        CONFIG,
        &[
            ("firehose-batch.vtl", TEMPLATE),
            ("sqs-batch.vtl", SQS_TEMPLATE),
        ],
    );
    project.provision();
    let gw = Gateway::start(&project.config);
    (project, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_firehose_requests_share_calls_and_every_record_lands_once() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (project, gw) = start("batching");

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
    let flushes = metric(
        &metrics,
        "gateway_batch_records_count{route=\"POST /firehose/batch\"}",
    );
    let records = metric(
        &metrics,
        "gateway_batch_records_sum{route=\"POST /firehose/batch\"}",
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sqs_batches_share_calls_and_keep_their_own_ids() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (project, gw) = start("batching-sqs");

    // Every request uses the ids "a" and "b": the gateway numbers entries per call.
    let responses: Vec<(usize, support::Response)> = support::concurrently(REQUESTS, |r| {
        let body = json!({"messages": [
            {"id": "a", "body": format!("m-{r}-a")},
            {"id": "b", "body": format!("m-{r}-b")},
        ]});
        (r, gw.post_json("/sqs/batch", &body.to_string()))
    });
    let mut message_ids = HashSet::new();
    for (r, resp) in &responses {
        assert_eq!(resp.status, 200, "request {r}: {}", resp.text());
        let out = resp.json();
        assert_eq!(out["Failed"], json!([]));
        let ok = out["Successful"].as_array().unwrap();
        let ids: Vec<&str> = ok.iter().map(|s| s["Id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"], "the client's own ids, in order");
        for s in ok {
            assert!(message_ids.insert(s["MessageId"].as_str().unwrap().to_string()));
        }
    }
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    let flushes = metric(
        &metrics,
        "gateway_batch_records_count{route=\"POST /sqs/batch\"}",
    );
    assert!(
        flushes >= 1.0 && (flushes as usize) < REQUESTS,
        "{flushes} upstream calls for {REQUESTS} requests"
    );

    // Ids the service would refuse never reach it: the client's 400, naming the id.
    let bad = json!({"messages": [{"id": "x", "body": "1"}, {"id": "x", "body": "2"}]});
    let r = gw.post_json("/sqs/batch", &bad.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains(r#"Id \"x\" is not distinct"#),
        "{}",
        r.text()
    );

    // Every message in the queue, once.
    let sqs = aws_sdk_sqs::Client::new(&support::aws(&endpoint).await);
    let url = support::queue_url(&sqs, &project.name("batched-queue")).await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() && bodies.len() >= REQUESTS * 2 {
            break;
        }
        for m in got.messages() {
            bodies.push(m.body().unwrap().to_string());
        }
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..REQUESTS)
        .flat_map(|r| [format!("m-{r}-a"), format!("m-{r}-b")])
        .collect();
    expected.sort();
    assert_eq!(bodies, expected);
}
