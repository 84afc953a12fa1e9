//! Every integration action end to end against the local AWS emulator, beyond the example
//! API's routes: Kinesis `PutRecord` (read back from the shard), Firehose `PutRecord` and
//! `PutRecordBatch` (read back from S3), SQS `SendMessageBatch` in JSON and form encodings,
//! FIFO `SendMessage`, and a service rejection.

mod support;

use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::json;
use support::{Gateway, Project};

const CONFIG: &str = r#"
[stage_variables]
stream = "actions-stream-{S}"
delivery = "actions-direct-{S}"

[[routes]]
method = "POST"
path = "/kinesis/record"
action = "kinesis:PutRecord"
target = "actions-stream-{S}"
request_templates = { "application/json" = "kinesis-record.vtl" }

[[routes]]
method = "POST"
path = "/firehose/record"
action = "firehose:PutRecord"
target = "actions-direct-{S}"
request_templates = { "application/json" = "firehose-record.vtl" }

[[routes]]
method = "POST"
path = "/firehose/batch"
action = "firehose:PutRecordBatch"
target = "actions-direct-{S}"
request_templates = { "application/json" = "firehose-batch.vtl" }

[[routes]]
method = "POST"
path = "/sqs/batch"
action = "sqs:SendMessageBatch"
target = "actions-queue-{S}"
request_templates = { "application/json" = "sqs-batch-json.vtl", "application/x-www-form-urlencoded" = "sqs-batch-form.vtl" }

[[routes]]
method = "POST"
path = "/sqs/fifo"
action = "sqs:SendMessage"
target = "actions-fifo-{S}.fifo"
request_templates = { "application/json" = "sqs-fifo.vtl" }

[[routes]]
method = "POST"
path = "/kinesis/missing"
action = "kinesis:PutRecord"
request_templates = { "application/json" = "kinesis-missing.vtl" }

[[routes]]
method = "POST"
path = "/kinesis/mapped"
action = "kinesis:PutRecord"
request_templates = { "application/json" = "kinesis-mapped.vtl" }

[[routes.responses]]
pattern = "2\\d{2}"
status = 201
headers = { "x-sequence" = "integration.response.body.SequenceNumber", "x-request" = "context.requestId", "x-stream" = "stageVariables.stream", "x-fixed" = "'yes'" }

[[routes.responses]]
pattern = "4\\d{2}"
status = 422
template = "error-response.vtl"

[[resources.kinesis_streams]]
name = "actions-stream-{S}"
shards = 1

[[resources.s3_buckets]]
name = "actions-bucket-{S}"

[[resources.firehose_delivery_streams]]
name = "actions-direct-{S}"
bucket = "actions-bucket-{S}"
prefix = "direct/"
role_arn = "arn:aws:iam::000000000000:role/firehose"

[[resources.sqs_queues]]
name = "actions-queue-{S}"

[[resources.sqs_queues]]
name = "actions-fifo-{S}.fifo"
"#;

const NL: &str = "#set($nl = \"\n\")";

fn templates() -> Vec<(&'static str, String)> {
    vec![
        (
            "kinesis-record.vtl",
            r#"{"StreamName": "$stageVariables.stream", "Data": "$util.base64Encode($input.body)", "PartitionKey": "$input.path('$.id')"}"#.into(),
        ),
        (
            "firehose-record.vtl",
            format!(r#"{NL}{{"DeliveryStreamName": "$stageVariables.delivery", "Record": {{"Data": "$util.base64Encode("$input.json('$')$nl")"}}}}"#),
        ),
        (
            "firehose-batch.vtl",
            format!(
                r#"{NL}{{"DeliveryStreamName": "$stageVariables.delivery", "Records": [#foreach($e in $input.path('$.events'))#set($j = $input.json("$.events[$foreach.index]")){{"Data": "$util.base64Encode("$j$nl")"}}#if($foreach.hasNext),#end#end]}}"#
            ),
        ),
        (
            "sqs-batch-json.vtl",
            r#"{"Entries": [#foreach($m in $input.path('$.messages')){"Id": "j$foreach.index", "MessageBody": "$util.escapeJavaScript($m).replaceAll("\\'","'")"}#if($foreach.hasNext),#end#end]}"#.into(),
        ),
        (
            "sqs-batch-form.vtl",
            "Action=SendMessageBatch#foreach($m in $util.parseJson($input.params('messages')))&SendMessageBatchRequestEntry.${foreach.count}.Id=f$foreach.index&SendMessageBatchRequestEntry.${foreach.count}.MessageBody=$util.urlEncode($m)#end".into(),
        ),
        (
            "sqs-fifo.vtl",
            r#"{"MessageBody": "$util.escapeJavaScript($input.body).replaceAll("\\'","'")", "MessageGroupId": "$input.path('$.group')", "MessageDeduplicationId": "$context.requestId"}"#.into(),
        ),
        (
            "kinesis-mapped.vtl",
            r##"{"StreamName": "#if($input.path('$.missing'))no-such-stream-$context.requestId#{else}$stageVariables.stream#end", "Data": "e30=", "PartitionKey": "k"}"##.into(),
        ),
        (
            "error-response.vtl",
            r#"{"error": "$input.path('$.__type')", "requestId": "$context.requestId"}"#.into(),
        ),
        (
            "kinesis-missing.vtl",
            r#"{"StreamName": "no-such-stream-$context.requestId", "Data": "e30=", "PartitionKey": "k"}"#.into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_reaches_its_service() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let files = templates();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let project = Project::custom("actions", CONFIG, &files);
    project.provision();
    let gw = Gateway::start(&project.config);
    let sdk = support::aws(&endpoint).await;

    // Kinesis PutRecord: the record's data is the body, byte for byte.
    let body = r#"{"id": "rec-1", "v": [1, 2.5, "x"]}"#;
    let r = gw.post_json("/kinesis/record", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["ShardId"], "shardId-000000000000");
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(project.name("actions-stream"))
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let records = kinesis
        .get_records()
        .shard_iterator(iterator.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    let record = &records.records()[0];
    assert_eq!(record.data().as_ref(), body.as_bytes());
    assert_eq!(record.partition_key(), Some("rec-1"));
    assert_eq!(
        Some(record.sequence_number()),
        out["SequenceNumber"].as_str()
    );

    // Firehose PutRecord and PutRecordBatch into a Direct PUT delivery stream.
    let r = gw.post_json("/firehose/record", r#"{"kind": "single"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["RecordId"].is_string());
    let r = gw.post_json(
        "/firehose/batch",
        r#"{"events": [{"kind": "b1"}, {"kind": "b2"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["FailedPutCount"], 0);
    assert_eq!(out["RequestResponses"].as_array().unwrap().len(), 2);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket = project.name("actions-bucket");
    let mut lines = support::eventually(20, || async {
        let list = s3.list_objects_v2().bucket(&bucket).send().await.ok()?;
        let keys: Vec<String> = list
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        if keys.len() < 3 {
            return None;
        }
        let mut text = String::new();
        for k in keys {
            assert!(k.starts_with("direct/"), "{k}");
            let obj = s3.get_object().bucket(&bucket).key(&k).send().await.ok()?;
            text.push_str(
                &String::from_utf8(obj.body.collect().await.ok()?.into_bytes().to_vec()).ok()?,
            );
        }
        Some(text.lines().map(str::to_string).collect::<Vec<_>>())
    })
    .await
    .expect("three Firehose records in S3");
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"kind":"b1"}"#,
            r#"{"kind":"b2"}"#,
            r#"{"kind":"single"}"#
        ]
    );

    // SQS SendMessageBatch, JSON and form encodings.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = support::queue_url(&sqs, &project.name("actions-queue")).await;
    let r = gw.post_json(
        "/sqs/batch",
        &json!({"messages": ["one \"1\"", "two's"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["Successful"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["Failed"], json!([]));
    let messages = json!(["three & more", "four+4"]).to_string();
    let path = format!(
        "/sqs/batch?messages={}",
        ingest_gateway::mapping::util::url_encode(&messages)
    );
    let r = gw.request(
        "POST",
        &path,
        &[("content-type", "application/x-www-form-urlencoded")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(
        out["SendMessageBatchResponse"]["SendMessageBatchResult"]["Successful"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{out}"
    );
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        bodies.extend(
            got.messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_string)),
        );
        if bodies.len() >= 4 {
            break;
        }
    }
    bodies.sort();
    assert_eq!(bodies, ["four+4", "one \"1\"", "three & more", "two's"]);

    // SQS FIFO SendMessage with a group and deduplication id.
    let r = gw.post_json("/sqs/fifo", r#"{"group": "g-7", "n": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["SequenceNumber"].is_string(), "{}", r.text());
    let fifo = sqs
        .get_queue_url()
        .queue_name(project.name("actions-fifo") + ".fifo")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let got = sqs
        .receive_message()
        .queue_url(&fifo)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
        )
        .send()
        .await
        .unwrap();
    let msg = &got.messages()[0];
    assert_eq!(msg.body(), Some(r#"{"group": "g-7", "n": 1}"#));
    let group = msg
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId));
    assert_eq!(group.map(String::as_str), Some("g-7"));

    // Integration responses: success mapped to 201 with headers from the service's response,
    // the request and the stage; a service 400 mapped to 422 through its own template.
    let r = gw.post_json("/kinesis/mapped", r#"{"missing": false}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-sequence"), r.json()["SequenceNumber"].as_str());
    assert_eq!(r.header("x-request"), r.header("x-amzn-requestid"));
    assert_eq!(
        r.header("x-stream"),
        Some(project.name("actions-stream").as_str())
    );
    assert_eq!(r.header("x-fixed"), Some("yes"));
    let r = gw.post_json("/kinesis/mapped", r#"{"missing": true}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "ResourceNotFoundException", "requestId": r.header("x-amzn-requestid").unwrap()})
    );

    // A request the service rejects (no such stream) is the operator's problem: 500.
    let r = gw.post_json("/kinesis/missing", "{}");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json(), json!({"message": "Internal server error"}));
    let (_, log) = gw.stop();
    assert!(
        log.contains("ResourceNotFoundException"),
        "the log names the service error:\n{log}"
    );
}
