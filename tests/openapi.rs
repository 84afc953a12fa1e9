//! OpenAPI in and out: a realistic API Gateway export imports without edits and the imported
//! gateway serves it against the emulator; the served `/openapi.json` passes a standard
//! OpenAPI validator and, imported again, gives the same gateway.

mod support;

use std::path::{Path, PathBuf};

use ingest_gateway::config::{self, Config};
use serde_json::{Value as Json, json};

/// The validator installed by `scripts/emulator`, or `None` (skipped) outside the suite.
fn validator() -> Option<PathBuf> {
    let path = support::repo().join(".venv/bin/openapi-spec-validator");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("INGEST_GATEWAY_REQUIRE_EMULATOR").is_none(),
        "openapi-spec-validator is not installed; run scripts/test"
    );
    eprintln!("skipped: no openapi-spec-validator (run scripts/test)");
    None
}

fn import(file: &Path, out: &Path) -> (bool, String) {
    let o = std::process::Command::new(support::bin())
        .args(["import-openapi"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Everything that decides how a configuration serves, with file contents in place of
/// file names (an import writes its own file names).
fn summary(c: &Config) -> Json {
    let routes: Vec<Json> = c
        .routes
        .iter()
        .map(|r| {
            let templates: Vec<Json> = r
                .request_templates
                .iter()
                .map(|(m, p)| json!([m, read(p)]))
                .collect();
            let mut responses: Vec<Json> = r
                .responses
                .iter()
                .map(|resp| {
                    json!({
                        "pattern": resp.pattern.as_ref().map(|p| p.as_str().to_string()),
                        "error_pattern": resp.error_pattern.as_ref().map(|p| p.as_str().to_string()),
                        "status": resp.status,
                        "headers": resp.headers.iter().map(|(n, s)| json!([n.as_str(), s.to_string()])).collect::<Vec<_>>(),
                        "template": resp.template.as_ref().or(r.response_template.as_ref()).map(|t| read(t)),
                    })
                })
                .collect();
            // A route-wide response template is the default response's.
            if responses.is_empty()
                && let Some(t) = &r.response_template
            {
                responses.push(json!({"pattern": null, "error_pattern": null, "status": 200, "headers": [], "template": read(t)}));
            }
            json!({
                "name": r.name(),
                "action": r.action.name(),
                "target": r.target,
                "templates": templates,
                "passthrough": format!("{:?}", r.passthrough),
                "timeout_ms": r.timeout.as_millis() as u64,
                "responses": responses,
                "api_key_required": r.api_key_required,
                "api_key_query": r.api_key_query,
                "rate_limit_headers": r.rate_limit_headers,
                "throttle": r.throttle.map(|t| json!([t.rate, t.burst])),
                "batch": r.batch.map(|b| format!("{b:?}")),
                "spool": r.spool.map(|s| format!("{s:?}")),
                "model": r.request_model.as_ref().map(|m| {
                    let v: Json = serde_json::from_str(&read(m)).unwrap();
                    inline(&v, &v["definitions"])
                }),
                "required": format!("{:?}", r.required_parameters),
                "validation_details": r.validation_details,
                "authorizer": r.authorizer,
                "scopes": r.scopes,
                "api_key_from_authorizer": r.api_key_from_authorizer,
                "integration": format!("{:?}", r.integration),
                "action_kind": format!("{:?}", r.action),
            })
        })
        .collect();
    let gateway_responses: Vec<Json> = c
        .gateway_responses
        .iter()
        .map(|(kind, r)| {
            json!({
                "kind": kind,
                "status": r.status,
                "headers": format!("{:?}", r.headers),
                "template": r.template.as_ref().map(|t| read(t)),
            })
        })
        .collect();
    let authorizers: Vec<String> = c.authorizers.iter().map(|a| format!("{a:?}")).collect();
    json!({"stage": c.stage, "stage_variables": c.stage_variables, "binary_media_types": c.binary_media_types, "gateway_responses": gateway_responses, "authorizers": authorizers, "routes": routes})
}

/// A model with its `$ref`s replaced by what they point to, and without `definitions` or
/// `$schema` (the export's own layout of the same schema differs in those only).
fn inline(v: &Json, definitions: &Json) -> Json {
    match v {
        Json::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Json::as_str) {
                let name = r.rsplit('/').next().unwrap_or_default();
                return inline(&definitions[name], definitions);
            }
            m.iter()
                .filter(|(k, _)| !["definitions", "$schema"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), inline(v, definitions)))
                .collect::<serde_json::Map<String, Json>>()
                .into()
        }
        Json::Array(a) => a.iter().map(|v| inline(v, definitions)).collect(),
        other => other.clone(),
    }
}

const EXTRA_ROUTE: &str = r#"
[authorizers.users]
type = "jwt"
issuer = "https://issuer.example/tenant"
audiences = ["app"]
jwks_url = "https://issuer.example/keys.json"

[authorizers.pool]
type = "cognito_user_pools"
user_pools = ["arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_AbC123"]
identity_source = "header:X-Id-Token"

[authorizers.partners]
type = "lambda_token"
function = "arn:aws:lambda:us-east-1:123456789012:function:partner-auth"
validation_regex = "^Bearer [-0-9a-zA-Z._]+$"
ttl = "120s"

[authorizers.hooks]
type = "lambda_request"
function = "arn:aws:lambda:us-east-1:123456789012:function:hook-auth"
identity_sources = ["header:x-webhook-secret", "path:source", "query:q"]
ttl = "0s"

[[routes]]
method = "POST"
path = "/v1/users/events"
authorizer = "users"
scopes = ["telemetry/write"]
action = "kinesis:PutRecords"
target = "clickstream-events"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes]]
method = "POST"
path = "/v1/pool/events"
authorizer = "pool"
action = "kinesis:PutRecords"
target = "clickstream-events"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes]]
method = "POST"
path = "/v1/partners/events"
authorizer = "partners"
api_key_required = true
api_key_source = "authorizer"
action = "kinesis:PutRecords"
target = "clickstream-events"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes]]
method = "POST"
path = "/hooks/{source}"
authorizer = "hooks"
action = "kinesis:PutRecords"
target = "clickstream-events"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes]]
method = "POST"
path = "/v1/things/{id}"
action = "lambda:Invoke"
integration = "proxy"
target = "arn:aws:lambda:us-east-1:123456789012:function:things"

[[routes]]
method = "POST"
path = "/v1/later"
action = "lambda:Invoke"
invocation = "event"
target = "arn:aws:lambda:us-east-1:123456789012:function:later"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes]]
method = "POST"
path = "/v1/quote"
action = "lambda:Invoke"
target = "arn:aws:lambda:us-east-1:123456789012:function:quote"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes.responses]]
error_pattern = "Bad Request.*"
status = 400

[[routes]]
method = "OPTIONS"
path = "/v1/things/{id}"
action = "mock"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[[routes.responses]]
status = 204
headers = { "Access-Control-Allow-Methods" = "'POST,OPTIONS'" }

[[routes]]
method = "ANY"
path = "/collect/{proxy+}"
action = "http"
integration = "proxy"
uri = "https://collector.internal/in/{proxy}"
request_parameters = { "integration.request.header.x-request" = "context.requestId" }

[[routes]]
method = "POST"
path = "/v1/forward/{id}"
action = "http"
http_method = "PUT"
uri = "https://collector.internal/items/{id}"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }
request_parameters = { "integration.request.querystring.src" = "method.request.querystring.s" }

[[routes]]
method = "POST"
path = "/v1/ledger"
action = "aws:dynamodb:PutItem"
target = "orders"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }

[gateway_responses.DEFAULT_4XX]
headers = { "Access-Control-Allow-Origin" = "'*'" }
template = "mappings/error.vtl"

[gateway_responses.THROTTLED]
status = 503
headers = { "Retry-After" = "'10'" }
[[routes]]
method = "POST"
path = "/v1/tenants/{tenant}/events"
action = "kinesis:PutRecords"
target = "clickstream-events"
request_templates = { "application/json" = "mappings/clickstream-put-records.vtl" }
request_model = "models/Event.json"
required_parameters = { path = ["tenant"], querystring = ["source"], header = ["x-client"] }
validation_details = true
api_key_required = true
spool = "fallback"
throttle = { rate = 50, burst = 100 }
batch = { linger = "20ms", max_records = 250 }

[[routes.responses]]
pattern = "2\\d{2}"
status = 201
headers = { "x-sequence" = "integration.response.body.FailedRecordCount", "x-stage" = "'prod'", "x-request" = "context.requestId" }

[[routes.responses]]
error_pattern = "ResourceNotFoundException"
status = 404

[[routes.responses]]
pattern = "4\\d{2}"
error_pattern = "Throttl.*"
status = 429

[[routes.responses]]
pattern = "4\\d{2}"
status = 400
template = "mappings/quote-response.vtl"
"#;

const MODEL: &str = r##"{"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "required": ["events"],
  "properties": {"events": {"type": "array", "items": {"$ref": "#/definitions/Event"}}},
  "definitions": {"Event": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}, "ts": {"type": "integer", "minimum": 0, "exclusiveMinimum": true}}}}}"##;

/// The example configuration plus a route using every setting an export carries.
fn rich_project() -> support::Project {
    let example = read(&support::repo().join("gateway.toml"));
    let mut files: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(support::repo().join("mappings")).unwrap() {
        let path = entry.unwrap().path();
        files.push((
            format!("mappings/{}", path.file_name().unwrap().to_string_lossy()),
            read(&path),
        ));
    }
    for dir in ["workflows", "models"] {
        for entry in std::fs::read_dir(support::repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            files.push((
                format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()),
                read(&path),
            ));
        }
    }
    files.push(("models/Event.json".into(), MODEL.into()));
    files.push((
        "mappings/error.vtl".into(),
        r#"{"error": $context.error.messageString, "kind": "$context.error.responseType"}"#.into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let example = example.replacen(
        "[server]\n",
        "[server]\nopenapi_extensions = true\nbinary_media_types = [\"application/octet-stream\", \"image/*\"]\n",
        1,
    );
    support::Project::custom("openapi-rich", &format!("{example}{EXTRA_ROUTE}"), &refs)
}

#[test]
fn the_served_document_validates_and_imports_back_to_the_same_gateway() {
    let project = rich_project();
    let gw = support::Gateway::start_against(&project.config, "http://127.0.0.1:9");
    // The DEFAULT_4XX gateway response: its header, and its template's body.
    let denied = gw.post_json("/v1/events", r#"{"type": "click"}"#);
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.json(),
        json!({"error": "Forbidden", "kind": "INVALID_API_KEY"})
    );
    assert_eq!(denied.header("access-control-allow-origin"), Some("*"));
    let served = gw.request("GET", "/openapi.json", &[], b"");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = served.json();
    gw.stop_cleanly();

    // The offline command prints the same document.
    let printed = project.cli(&["export-openapi"]);
    assert!(printed.status.success());
    assert_eq!(
        serde_json::from_slice::<Json>(&printed.stdout).unwrap(),
        doc
    );

    // What clients see: the route, its parameters, its model, the key.
    let op = &doc["paths"]["/v1/tenants/{tenant}/events"]["post"];
    assert_eq!(op["security"], json!([{"api_key": []}]));
    let params: Vec<(&str, &str)> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["in"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        params,
        vec![
            ("path", "tenant"),
            ("query", "source"),
            ("header", "x-client")
        ]
    );
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Event"
    );
    assert!(
        doc["components"]["schemas"]["Event"]["properties"]["events"]["items"]["$ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("#/components/schemas/"))
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"],
        json!({"type": "apiKey", "name": "x-api-key", "in": "header"})
    );
    assert!(op["responses"]["201"]["headers"]["x-stage"].is_object());

    let dir = project.dir.join("export");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    if let Some(v) = validator() {
        let out = std::process::Command::new(v).arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Import it again: the same gateway, and nothing left out.
    let out = dir.join("imported");
    let (ok, report) = import(&file, &out);
    assert!(ok, "{report}");
    assert!(
        report.contains("everything in the document was translated"),
        "{report}"
    );
    let original = config::load(&project.config).unwrap();
    let imported = config::load(&out.join("gateway.toml")).unwrap();
    let (got, want) = (summary(&imported), summary(&original));
    // Route by route first, so a difference names its route.
    for w in want["routes"].as_array().unwrap() {
        let g = got["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == w["name"])
            .unwrap_or_else(|| panic!("{} was not imported", w["name"]));
        for (k, v) in w.as_object().unwrap() {
            assert_eq!(&g[k], v, "{}: {k}", w["name"]);
        }
    }
    // And the whole, in any route order (a document holds its paths in its own order).
    let sorted = |mut v: Json| {
        v["routes"]
            .as_array_mut()
            .unwrap()
            .sort_by_key(|r| r["name"].as_str().unwrap().to_string());
        v
    };
    assert_eq!(sorted(got), sorted(want));

    // A client-only document leaves the integration out and still validates.
    let public = std::fs::read_to_string(&project.config).unwrap().replacen(
        "openapi_extensions = true\n",
        "openapi_extensions = false\n",
        1,
    );
    std::fs::write(&project.config, public).unwrap();
    let gw = support::Gateway::start_against(&project.config, "http://127.0.0.1:9");
    let public = gw.request("GET", "/openapi.json", &[], b"");
    gw.stop_cleanly();
    let text = public.text();
    assert!(text.contains("/v1/tenants/{tenant}/events"));
    assert!(!text.contains("x-amazon-apigateway-integration"));
    assert!(!text.contains("x-ingest-gateway"));
    if let Some(v) = validator() {
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(v).arg(&file).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_api_gateway_export_imports_and_serves_against_the_emulator() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let sdk = support::aws(&endpoint).await;
    let (stream, queue, machine) = (
        support::unique("imported-events-"),
        support::unique("imported-partners-"),
        support::unique("imported-quotes-"),
    );
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(&queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    let machine_arn = sfn
        .create_state_machine()
        .name(&machine)
        .r#type(aws_sdk_sfn::types::StateMachineType::Express)
        .role_arn("arn:aws:iam::000000000000:role/states")
        .definition(r#"{"StartAt": "Quote", "States": {"Quote": {"Type": "Pass", "Parameters": {"price.$": "$.qty"}, "End": true}}}"#)
        .send()
        .await
        .unwrap()
        .state_machine_arn;

    let dir = std::env::temp_dir().join(support::unique("ingest-gateway-import-"));
    std::fs::create_dir_all(&dir).unwrap();
    let export = read(&support::repo().join("tests/fixtures/openapi/clickstream-export.yaml"))
        .replace("STREAM", &stream)
        .replace("QUEUE", &queue)
        .replace("MACHINE_ARN", &machine_arn);
    let file = dir.join("export.yaml");
    std::fs::write(&file, export).unwrap();
    let out = dir.join("gateway");
    let (ok, report) = import(&file, &out);
    assert!(ok, "{report}");
    assert!(report.contains("imported 4 routes"), "{report}");
    // The Lambda proxy route comes along as one.
    let config = read(&out.join("gateway.toml"));
    assert!(
        config.contains(
            "path = \"/v1/thumbnails\"\naction = \"lambda:Invoke\"\nintegration = \"proxy\"\n"
        ),
        "{config}"
    );
    assert!(
        !report.contains("gateway-responses"),
        "gateway responses are translated: {report}"
    );

    let project = support::Project {
        dir: out.clone(),
        config: out.join("gateway.toml"),
        suffix: String::new(),
    };
    let key = project.key("imported");
    let gw = support::Gateway::start(&project.config);
    let (gw, results) = tokio::task::spawn_blocking(move || {
        let with_key = |path: &str, body: &str| {
            gw.request(
                "POST",
                path,
                &[("content-type", "application/json"), ("x-api-key", &key)],
                body.as_bytes(),
            )
        };
        let events = with_key(
            "/v1/events",
            r#"{"events": [{"userId": "u-1", "type": "click"}, {"userId": "u-2", "type": "view"}]}"#,
        );
        let invalid = with_key("/v1/events", r#"{"events": [{"type": "click"}]}"#);
        let keyless = gw.post_json("/v1/events", r#"{"events": [{"userId": "u-3", "type": "click"}]}"#);
        let message = with_key("/v1/partners/acme/messages", r#"{"order": 42}"#);
        let quote = gw.post_json("/v1/quotes", r#"{"qty": 3}"#);
        (gw, vec![events, invalid, keyless, message, quote])
    })
    .await
    .unwrap();
    let [events, invalid, keyless, message, quote] =
        <[support::Response; 5]>::try_from(results).unwrap();

    assert_eq!(events.status, 200, "{}", events.text());
    assert_eq!(events.json(), json!({"accepted": 2, "failed": 0}));
    assert_eq!(events.header("x-failed-count"), Some("0"));
    assert!(
        events
            .header("x-upstream-content-type")
            .is_some_and(|v| v.starts_with("application/")),
        "a header of the service's response: {:?}",
        events.header("x-upstream-content-type")
    );
    assert_eq!(invalid.status, 400);
    // The export's DEFAULT_4XX template shapes the gateway's own error bodies.
    assert_eq!(
        invalid.json(),
        json!({"message": "Invalid request body", "type": "BAD_REQUEST_BODY"})
    );
    assert_eq!(keyless.status, 403);
    assert_eq!(
        keyless.json(),
        json!({"message": "Forbidden", "type": "INVALID_API_KEY"})
    );
    // The export's gateway responses: errors carry its CORS header, successes do not.
    assert_eq!(invalid.header("access-control-allow-origin"), Some("*"));
    assert_eq!(keyless.header("access-control-allow-origin"), Some("*"));
    assert_eq!(events.header("access-control-allow-origin"), None);
    assert_eq!(message.status, 200, "{}", message.text());
    assert_eq!(quote.status, 200, "{}", quote.text());
    assert_eq!(quote.json(), json!({"price": 3}));

    // The records and the message arrived.
    let users: Vec<String> = support::stream_data(&kinesis, &stream)
        .await
        .iter()
        .map(|d| {
            serde_json::from_slice::<Json>(d).unwrap()["userId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        users,
        vec!["u-1", "u-2"],
        "only the valid request's records"
    );
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert_eq!(bodies, vec![r#"{"order": 42}"#]);
    tokio::task::spawn_blocking(move || gw.stop_cleanly())
        .await
        .unwrap();
}

#[test]
fn gateway_responses_name_a_known_type_and_valid_headers() {
    let project = support::Project::custom(
        "gateway-responses",
        "[gateway_responses.DEFAULT_4XX]\nheaders = { \"bad header\" = \"'x'\" }\n\n[gateway_responses.AUTHORIZER_FAILURE]\nstatus = 500\n",
        &[],
    );
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "gateway_responses.AUTHORIZER_FAILURE: not a response type the gateway produces"
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_responses.DEFAULT_4XX.headers: "bad header""#),
        "{text}"
    );
}
