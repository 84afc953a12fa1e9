//! End to end: the real binary, provisioned and serving against the local AWS emulator over
//! the real wire protocol; HTTP in, objects in S3, messages in SQS, executions in Step
//! Functions out. Every test uses its own uniquely named resources.

mod support;

use aws_sdk_s3::Client as S3;
use serde_json::{Value as Json, json};
use support::{Gateway, Project};

/// Reads every object under the bucket once `expected` objects exist.
async fn objects(s3: &S3, bucket: &str, expected: usize) -> Vec<Vec<u8>> {
    let keys = support::eventually(20, || async {
        let out = s3.list_objects_v2().bucket(bucket).send().await.ok()?;
        let keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        (keys.len() >= expected).then_some(keys)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {expected} objects appeared in {bucket}"));
    let mut bodies = Vec::new();
    for key in keys {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        bodies.push(obj.body.collect().await.unwrap().into_bytes().to_vec());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread")]
async fn events_land_in_s3_as_json_lines() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::new("events");
    project.provision();
    let key = project.key("clickstream");
    let gw = Gateway::start(&project.config);

    let batch = [
        json!({"type": "click", "userId": "u-1", "sessionId": "s-1", "target": "#buy", "n": 1.5}),
        json!({"type": "view", "userId": "u-2", "page": "/p/\"quoted\"\n", "tags": ["a", "b"]}),
        json!({"type": "scroll", "depth": 80, "unicode": "caf\u{e9} \u{1F600}"}),
    ];
    let single = json!({"type": "pageview", "url": "/home"});
    let r1 = gw.post_json_with_key("/v1/events", &key, &json!({"events": batch}).to_string());
    assert_eq!(r1.status, 200, "{}", r1.text());
    let out = r1.json();
    assert_eq!(out["FailedRecordCount"], 0);
    assert_eq!(out["Records"].as_array().unwrap().len(), 3);
    assert!(out["Records"][0]["SequenceNumber"].is_string());
    let r2 = gw.post_json_with_key("/v1/events", &key, &single.to_string());
    assert_eq!(r2.status, 200, "{}", r2.text());

    let sent: Vec<(Json, &str)> = batch
        .iter()
        .map(|e| (e.clone(), r1.header("x-amzn-requestid").unwrap()))
        .chain([(single.clone(), r2.header("x-amzn-requestid").unwrap())])
        .collect();
    let s3 = S3::from_conf(
        aws_sdk_s3::config::Builder::from(&support::aws(&endpoint).await)
            .force_path_style(true)
            .build(),
    );
    let bodies = objects(&s3, &project.name("clickstream-archive"), sent.len()).await;
    let mut lines: Vec<String> = Vec::new();
    for body in bodies {
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        lines.extend(text.lines().map(str::to_string));
    }
    assert_eq!(lines.len(), sent.len());
    for (event, request_id) in sent {
        let line = lines
            .iter()
            .find(|l| {
                let v: Json = serde_json::from_str(l).unwrap();
                v["type"] == event["type"]
            })
            .unwrap_or_else(|| panic!("{event} not in S3"));
        let mut stored: Json = serde_json::from_str(line).unwrap();
        // Each line is compact JSON: the event's fields in order, then the enrichment.
        assert_eq!(*line, serde_json::to_string(&stored).unwrap());
        let ingest = stored
            .as_object_mut()
            .unwrap()
            .shift_remove("ingest")
            .unwrap();
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
        assert_eq!(ingest["requestId"], request_id);
        assert_eq!(ingest["sourceIp"], "127.0.0.1");
        assert_eq!(
            ingest["apiKeyId"].as_str().unwrap().len(),
            10,
            "the key id, never the key"
        );
        assert!(ingest["receivedAt"].as_i64().unwrap() > 1_700_000_000_000);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_messages_arrive_with_body_and_attributes() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::new("sqs");
    project.provision();
    // The route posts as the key's customer only (`customer_param`).
    let key = project.customer_key("acme", "partners", "acme co");
    let gw = Gateway::start(&project.config);
    let other = gw.post_json_with_key("/v1/partners/globex/messages", &key, "{}");
    assert_eq!(other.status, 403, "{}", other.text());
    let body = r#"{"order": "a&b=c+d", "note": "50% off"}"#;
    let resp = gw.post_json_with_key("/v1/partners/acme%20co/messages", &key, body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let message_id = resp.json()["SendMessageResponse"]["SendMessageResult"]["MessageId"]
        .as_str()
        .unwrap()
        .to_string();

    let sqs = aws_sdk_sqs::Client::new(&support::aws(&endpoint).await);
    let url = support::queue_url(&sqs, &project.name("partner-messages")).await;
    let msg = support::eventually(10, || async {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .message_attribute_names("All")
            .send()
            .await
            .ok()?;
        out.messages().first().cloned()
    })
    .await
    .expect("a message in the queue");
    assert_eq!(msg.message_id(), Some(message_id.as_str()));
    assert_eq!(msg.body(), Some(body));
    let attrs = msg.message_attributes().unwrap();
    assert_eq!(attrs["partner"].string_value(), Some("acme co"));
    assert_eq!(
        attrs["requestId"].string_value(),
        resp.header("x-amzn-requestid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn step_functions_executions_run_with_the_template_input() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = Project::new("sfn");
    project.provision();
    let gw = Gateway::start(&project.config);
    let order = json!({"order": "42", "customer": "O'Brien", "lines": [{"sku": "x", "qty": 2}]});
    let resp = gw.post_json("/v1/orders", &order.to_string());
    assert_eq!(resp.status, 200, "{}", resp.text());
    let arn = resp.json()["executionArn"].as_str().unwrap().to_string();
    assert!(arn.contains(&project.name("order-workflow")), "{arn}");
    assert!(
        arn.ends_with(resp.header("x-amzn-requestid").unwrap()),
        "named after the request"
    );

    let sfn = aws_sdk_sfn::Client::new(&support::aws(&endpoint).await);
    let done = support::eventually(20, || async {
        let d = sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .ok()?;
        (d.status().as_str() != "RUNNING").then_some(d)
    })
    .await
    .expect("the execution finished");
    assert_eq!(done.status().as_str(), "SUCCEEDED");
    let input: Json = serde_json::from_str(done.input().unwrap()).unwrap();
    assert_eq!(input, order);

    // The synchronous route returns the workflow's output through the response template.
    let quote = gw.post_json("/v1/quotes", r#"{"order": "43"}"#);
    assert_eq!(quote.status, 200, "{}", quote.text());
    assert_eq!(
        quote.json(),
        json!({"order": "43", "quote": {"currency": "EUR", "amount": 42}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_twice_is_a_no_op() {
    if support::emulator().is_none() {
        return;
    }
    let project = Project::new("provision");
    let plan = project.cli(&["provision", "--dry-run"]);
    assert!(plan.status.success());
    let plan = String::from_utf8(plan.stdout).unwrap();
    assert!(
        plan.contains("7 to create, 0 already exist, 0 differ"),
        "{plan}"
    );
    let first = project.provision();
    assert!(
        first.contains("7 created, 0 already existed, 0 differ"),
        "{first}"
    );
    let second = project.provision();
    assert!(
        second.contains("0 created, 7 already existed, 0 differ"),
        "{second}"
    );
    assert!(
        second.lines().take(7).all(|l| l.starts_with("exists")),
        "{second}"
    );

    // A declared resource that exists differently is reported, not changed.
    let changed = std::fs::read_to_string(&project.config)
        .unwrap()
        .replace("shards = 1", "shards = 2");
    std::fs::write(&project.config, changed).unwrap();
    let third = project.cli(&["provision"]);
    assert!(!third.status.success());
    let third = String::from_utf8(third.stdout).unwrap();
    assert!(third.contains("DIFFERS   kinesis stream"), "{third}");
    assert!(third.contains("1 open shards, declared 2"), "{third}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_and_readyz_reports_it() {
    if support::emulator().is_none() {
        return;
    }
    let project = Project::new("shutdown");
    let gw = Gateway::start(&project.config);
    assert_eq!(gw.request("GET", "/readyz", &[], b"").status, 200);
    assert_eq!(gw.request("GET", "/healthz", &[], b"").status, 200);
    let (status, log) = gw.stop();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(log.contains("Shutting down"), "{log}");
    assert!(log.contains("Stopped."), "{log}");
}
