//! Request validation through the real binary: required parameters and a JSON Schema model
//! (draft 4) are checked before any template or upstream call, with API Gateway's 400
//! bodies, or, where a route opts in, a list of what failed and where.

mod support;

use std::sync::atomic::Ordering;

use serde_json::{Value as Json, json};

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/tenants/{tenant}/events"
action = "kinesis:PutRecords"
target = "validated"
request_templates = { "application/json" = "records.vtl" }
request_model = "models/Event.json"
required_parameters = { path = ["tenant"], querystring = ["source"], header = ["X-Client"] }

[[routes]]
method = "POST"
path = "/v2/tenants/{tenant}/events"
action = "kinesis:PutRecords"
target = "validated"
request_templates = { "application/json" = "records.vtl" }
request_model = "models/Event.json"
required_parameters = { querystring = ["source"] }
validation_details = true
"#;

const TEMPLATE: &str = r#"{"StreamName": "validated", "Records": [{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "$input.path('$.type')"}]}"#;

const MODEL: &str = r#"{
  "title": "Event",
  "type": "object",
  "required": ["type", "ts"],
  "properties": {
    "type": {"type": "string", "enum": ["click", "view"]},
    "ts": {"type": "integer", "minimum": 0},
    "page": {"type": "string", "maxLength": 256}
  }
}"#;

fn post(
    gw: &support::Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> support::Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    gw.request("POST", path, &all, body.as_bytes())
}

fn assert_400(r: &support::Response, body: &Json) {
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(&r.json(), body);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("BadRequestException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_api_gateway_400s_before_any_upstream_call() {
    let stub = support::stub_kinesis().await;
    let project = support::Project::custom(
        "validation",
        CONFIG,
        &[("records.vtl", TEMPLATE), ("models/Event.json", MODEL)],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let calls = stub.received.clone();
    tokio::task::spawn_blocking(move || {
        let good = r#"{"type": "click", "ts": 1764077930000}"#;
        let client = [("x-client", "web")];
        // Missing parameters, named in order: query string, then header.
        let r = post(&gw, "/v1/tenants/acme/events", &[], good);
        assert_400(&r, &json!({"message": "Missing required request parameters: [source, x-client]"}));
        // Bodies that do not match the model, or are not JSON, or are empty.
        for bad in [
            r#"{"type": "click"}"#,
            r#"{"type": "scroll", "ts": 1}"#,
            r#"{"type": "click", "ts": -1}"#,
            r#"{"type": "click", "ts": "1"}"#,
            r#"[1, 2]"#,
            r#"{"type": "click", "ts": 1"#,
            "",
        ] {
            let r = post(&gw, "/v1/tenants/acme/events?source=sdk", &client, bad);
            assert_400(&r, &json!({"message": "Invalid request body"}));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no upstream call");
        // Valid: through to the upstream.
        let r = post(&gw, "/v1/tenants/acme/events?source=sdk", &client, good);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The route that asks for details says what failed and where.
        let r = post(&gw, "/v2/tenants/acme/events?source=sdk", &[], r#"{"type": "scroll", "ts": "x"}"#);
        assert_eq!(r.status, 400, "{}", r.text());
        let body = r.json();
        assert_eq!(body["message"], "Invalid request body");
        let errors = body["errors"].as_array().unwrap();
        let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(errors.len(), 2, "{body}");
        assert!(paths.contains(&"/type") && paths.contains(&"/ts"), "{body}");
        assert!(errors.iter().all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())));
        let r = post(&gw, "/v2/tenants/acme/events", &[], good);
        assert_eq!(
            r.json(),
            json!({
                "message": "Missing required request parameters: [source]",
                "errors": [{"in": "querystring", "name": "source", "message": "required parameter is missing"}]
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "still one upstream call");
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[test]
fn a_broken_model_or_unknown_path_parameter_is_a_config_error() {
    let config = CONFIG.replace(r#"path = ["tenant"]"#, r#"path = ["nope"]"#);
    let project = support::Project::custom(
        "validation-config",
        &config,
        &[
            ("records.vtl", TEMPLATE),
            ("models/Event.json", r#"{"type": 12}"#),
        ],
    );
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#""nope" is not a parameter of the route's path"#),
        "{text}"
    );
}
