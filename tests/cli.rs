//! The admin commands through the real binary: `check-config` and `iam-policy`.

use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ingest-gateway"))
        .args(args)
        .output()
        .unwrap()
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ingest-gateway-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_shipped_example_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = gateway(&["--config", config, "check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (5 routes, 8 templates)"));
}

#[test]
fn check_config_points_at_every_problem() {
    let path = temp_config(
        "broken",
        "[server]\nlisten = \"nope\"\n\n[[routes]]\nmethod = \"FETCH\"\npath = \"/a\"\naction = \"kinesis:PutRecord\"\n\n[[routes]]\nmethod = \"POST\"\npath = \"/b/{x+}/c\"\naction = \"kinesis:Nope\"\n",
    );
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:2:10: server.listen: not an address:port")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:5:10: unknown HTTP method \"FETCH\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:11:8: path \"/b/{{x+}}/c\": greedy parameter")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:12:10: unknown action \"kinesis:Nope\"")),
        "{err}"
    );
}

#[test]
fn check_config_rejects_unknown_fields_and_bad_templates() {
    let path = temp_config(
        "unknown",
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 9\n",
    );
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(":3:1: unknown field `listen_port`"), "{err}");

    let dir = path.parent().unwrap();
    std::fs::write(
        dir.join("bad.vtl"),
        "{\n  #foreach($x in $input.path('$'))\n}",
    )
    .unwrap();
    let path = temp_config(
        "unknown",
        "[[routes]]\nmethod = \"POST\"\npath = \"/a\"\naction = \"sqs:SendMessage\"\nrequest_templates = { \"application/json\" = \"bad.vtl\" }\n",
    );
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.vtl:2:3: syntax error: #foreach without a matching #end"),
        "{err}"
    );
}

#[test]
fn iam_policy_grants_exactly_the_configured_routes() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = gateway(&[
        "--config",
        config,
        "iam-policy",
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
    ]);
    assert!(out.status.success());
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    let grants: Vec<(String, String)> = statements
        .iter()
        .flat_map(|s| {
            let resource = s["Resource"].as_str().unwrap().to_string();
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |a| (a.as_str().unwrap().to_string(), resource.clone()))
        })
        .collect();
    let expect = [
        (
            "kinesis:PutRecords",
            "arn:aws:kinesis:eu-west-1:123456789012:stream/clickstream-events",
        ),
        (
            "sqs:SendMessage",
            "arn:aws:sqs:eu-west-1:123456789012:partner-messages",
        ),
        (
            "sqs:GetQueueUrl",
            "arn:aws:sqs:eu-west-1:123456789012:partner-messages",
        ),
        (
            "states:StartExecution",
            "arn:aws:states:eu-west-1:123456789012:stateMachine:order-workflow",
        ),
        (
            "states:StartSyncExecution",
            "arn:aws:states:eu-west-1:123456789012:stateMachine:quote-workflow",
        ),
        ("states:ListStateMachines", "*"),
    ];
    for (action, resource) in expect {
        assert!(
            grants.contains(&(action.to_string(), resource.to_string())),
            "{action} on {resource} missing: {grants:?}"
        );
    }
    assert_eq!(grants.len(), expect.len(), "{grants:?}");
}

#[test]
fn a_batch_queue_of_no_bytes_is_refused() {
    let route = "[[routes]]\nmethod = \"POST\"\npath = \"/e\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\n";
    for (name, bytes, ok) in [
        ("zero", "0", false),
        ("huge", "4294967296", false),
        ("some", "65536", true),
    ] {
        let file = temp_config(
            &format!("batch-queue-bytes-{name}"),
            &format!("{route}batch = {{ queue_bytes = {bytes} }}\n"),
        );
        let out = gateway(&["--config", file.to_str().unwrap(), "check-config"]);
        let err = String::from_utf8(out.stderr).unwrap();
        if ok {
            assert_eq!(out.status.code(), Some(0), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{bytes}");
            assert!(
                err.contains("batch.queue_bytes must be 1 to 4294967295"),
                "{err}"
            );
        }
    }
}

#[test]
fn batch_limits_depend_on_aggregation() {
    let route = "[[routes]]\nmethod = \"POST\"\npath = \"/e\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\n";
    let plain = temp_config(
        "batch-plain",
        &format!("{route}batch = {{ max_records = 2000 }}\n"),
    );
    let out = gateway(&["--config", plain.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("batch.max_records must be 1 to 500"), "{err}");

    let aggregated = temp_config(
        "batch-agg",
        &format!("{route}batch = {{ aggregate = true, max_records = 2000 }}\n"),
    );
    let out = gateway(&["--config", aggregated.to_str().unwrap(), "check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sqs = temp_config(
        "batch-sqs",
        "[[routes]]\nmethod = \"POST\"\npath = \"/e\"\naction = \"sqs:SendMessage\"\ntarget = \"q\"\nbatch = { aggregate = true }\n",
    );
    let out = gateway(&["--config", sqs.to_str().unwrap(), "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("batching works for kinesis:PutRecords, firehose:PutRecordBatch and sqs:SendMessageBatch routes"),
        "{err}"
    );
}

#[test]
fn iam_policy_grants_invoke_on_the_authorizer_functions_routes_use() {
    let config = temp_config(
        "iam-authorizers",
        r#"
[authorizers.partners]
type = "lambda_token"
function = "partner-auth"
[authorizers.hooks]
type = "lambda_request"
function = "arn:aws:lambda:eu-west-1:999999999999:function:hook-auth"
identity_sources = ["header:x-secret"]
[authorizers.unused]
type = "lambda_token"
function = "nobody-calls-me"
[[routes]]
method = "POST"
path = "/a"
authorizer = "partners"
action = "kinesis:PutRecords"
target = "s"
[[routes]]
method = "POST"
path = "/b"
authorizer = "hooks"
action = "kinesis:PutRecords"
target = "s"
"#,
    );
    let out = gateway(&[
        "--config",
        config.to_str().unwrap(),
        "iam-policy",
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let invoke = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == serde_json::json!(["lambda:InvokeFunction"]))
        .expect("a lambda:InvokeFunction grant");
    assert_eq!(
        invoke["Resource"],
        serde_json::json!([
            "arn:aws:lambda:eu-west-1:123456789012:function:partner-auth",
            "arn:aws:lambda:eu-west-1:999999999999:function:hook-auth"
        ])
    );
}

#[test]
fn iam_policy_grants_the_new_integrations_exactly() {
    let config = temp_config(
        "iam-integrations",
        r#"
[[routes]]
method = "POST"
path = "/a"
action = "lambda:Invoke"
target = "quote"
[[routes]]
method = "POST"
path = "/b"
action = "aws:dynamodb:PutItem"
target = "orders"
[[routes]]
method = "POST"
path = "/c"
action = "aws:events:PutEvents"
target = "clicks"
[[routes]]
method = "POST"
path = "/d"
action = "aws:sns:Publish"
target = "arn:aws:sns:eu-west-1:123456789012:alerts"
[[routes]]
method = "OPTIONS"
path = "/a"
action = "mock"
[[routes]]
method = "ANY"
path = "/e/{proxy+}"
action = "http"
integration = "proxy"
uri = "https://collector.internal/{proxy}"
"#,
    );
    let out = gateway(&[
        "--config",
        config.to_str().unwrap(),
        "iam-policy",
        "--region",
        "eu-west-1",
        "--account",
        "123456789012",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let grants: Vec<(String, String)> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let resource = s["Resource"].as_str().unwrap_or_default().to_string();
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |a| (a.as_str().unwrap().to_string(), resource.clone()))
        })
        .collect();
    let expect = [
        (
            "lambda:InvokeFunction",
            "arn:aws:lambda:eu-west-1:123456789012:function:quote",
        ),
        (
            "dynamodb:PutItem",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/orders",
        ),
        (
            "events:PutEvents",
            "arn:aws:events:eu-west-1:123456789012:event-bus/clicks",
        ),
        ("sns:Publish", "arn:aws:sns:eu-west-1:123456789012:alerts"),
    ];
    for (action, resource) in expect {
        assert!(
            grants.contains(&(action.to_string(), resource.to_string())),
            "{action} on {resource} missing: {grants:?}"
        );
    }
    assert_eq!(
        grants.len(),
        expect.len(),
        "mock and http need none: {grants:?}"
    );
}

/// Two routes on one path shape clash when their methods can meet (ANY meets every method),
/// whatever their parameters are called; one per method does not.
#[test]
fn routes_declared_twice_are_found_by_shape_and_method() {
    let route = |method: &str, path: &str| {
        format!("[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\naction = \"mock\"\n\n")
    };
    let clashes = [
        route("POST", "/v1/{id}/events") + &route("POST", "/v1/{other}/events"),
        route("ANY", "/v1/x") + &route("GET", "/v1/x"),
        route("GET", "/v1/{p+}") + &route("ANY", "/v1/{q+}"),
    ];
    for text in clashes {
        let path = temp_config("twice", &text);
        let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is declared twice"), "{text}\n{err}");
        assert_eq!(err.matches("declared twice").count(), 1, "{err}");
    }
    let fine = route("GET", "/v1/{id}") + &route("POST", "/v1/{id}") + &route("GET", "/v1/{id}/x");
    let path = temp_config("once", &fine);
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    assert!(out.status.success(), "{out:?}");
}

/// A template file named by many routes is read and compiled once, and shared.
#[test]
fn a_template_shared_by_routes_is_compiled_once() {
    let dir = std::env::temp_dir().join(format!("ingest-gateway-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t.vtl"), "{\"Data\": \"$input.body\"}").unwrap();
    let text: String = (0..3)
        .map(|i| format!("[[routes]]\nmethod = \"POST\"\npath = \"/r{i}\"\naction = \"mock\"\nrequest_templates = {{ \"application/json\" = \"t.vtl\" }}\n\n"))
        .collect();
    let config =
        ingest_gateway::config::parse(std::path::Path::new("t.toml"), &text, &dir).unwrap();
    let compiled = ingest_gateway::pipeline::compile_templates(&config).unwrap();
    let first = &compiled[0].request_templates[0].1;
    assert!(
        compiled
            .iter()
            .all(|c| std::sync::Arc::ptr_eq(&c.request_templates[0].1, first))
    );
}

#[test]
fn an_unknown_route_label_is_refused() {
    let path = temp_config("label", "[telemetry]\nroute_label = \"path\"\n");
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:15: telemetry.route_label: expected \"route\", \"group\" or \"none\""),
        "{err}"
    );
}

#[test]
fn histogram_buckets_must_increase_and_stay_few() {
    for (value, col) in [("[0.1, 0.05]", 19), ("[]", 19), ("[-1.0]", 19)] {
        let path = temp_config(
            "buckets",
            &format!("[telemetry]\nlatency_buckets = {value}\n"),
        );
        let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                ":2:{col}: telemetry.latency_buckets: use 1 to 32 positive numbers"
            )),
            "{value}: {err}"
        );
    }
    let many: Vec<String> = (1..=33).map(|i| format!("{i}.0")).collect();
    let path = temp_config(
        "buckets-many",
        &format!("[telemetry]\nsize_buckets = [{}]\n", many.join(", ")),
    );
    let out = gateway(&["--config", path.to_str().unwrap(), "check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("telemetry.size_buckets: use 1 to 32"), "{err}");
}
