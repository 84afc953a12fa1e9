//! Lambda, mock and HTTP integrations through the real binary: Python functions the test
//! creates in the emulator's Lambda (proxy, custom with a mapped error, asynchronous), a
//! mock, and HTTP backends the test runs on loopback (pass-through and templated, a host
//! from a stage variable, hop-by-hop headers, a backend that hangs and one that refuses, a
//! path trying to climb out of the configured prefix).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};

const PROXY_FUNCTION: &str = r#"
import base64, json, os

def handler(event, context):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps(event) + "\n")
    q = event.get("queryStringParameters") or {}
    mode = q.get("mode")
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(b"\x00\x01\x02").decode(), "isBase64Encoded": True}
    if mode == "malformed":
        return {"body": "no status"}
    if mode == "raise":
        raise Exception("boom")
    return {"statusCode": 201,
            "headers": {"x-echo": event["httpMethod"], "content-type": "application/json"},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
            "body": json.dumps({"path": event["path"], "resource": event["resource"],
                                "id": event["pathParameters"]["id"],
                                "mq": event["multiValueQueryStringParameters"],
                                "body": event["body"], "b64": event["isBase64Encoded"],
                                "stage": event["requestContext"]["stage"],
                                "requestId": event["requestContext"]["requestId"]})}
"#;

const CUSTOM_FUNCTION: &str = r#"
import json, os

def handler(event, context):
    if os.environ.get("LOG"):
        with open(os.environ["LOG"], "a") as f:
            f.write(json.dumps(event) + "\n")
    if event.get("qty", 0) <= 0:
        raise ValueError("Bad Request: qty must be positive")
    return {"price": event["qty"] * 3, "sku": event.get("sku")}
"#;

/// An orders table in the emulator's DynamoDB: `customer` and `id`, both strings.
fn orders_table(endpoint: &str, name: &str) {
    support::botocore(
        endpoint,
        "c('dynamodb').create_table(TableName=sys.argv[2], BillingMode='PAY_PER_REQUEST', AttributeDefinitions=[{'AttributeName': 'customer', 'AttributeType': 'S'}, {'AttributeName': 'id', 'AttributeType': 'S'}], KeySchema=[{'AttributeName': 'customer', 'KeyType': 'HASH'}, {'AttributeName': 'id', 'KeyType': 'RANGE'}])",
        &[name],
    );
}

/// What the HTTP backend saw: method, path and query, headers, body.
type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>, String)>>>;

/// A backend on loopback: echoes under `/in/` and `/items/`, hangs at `/hang`.
async fn backend() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            s.lock().unwrap().push((
                parts.method.to_string(),
                path.clone(),
                headers,
                String::from_utf8(body.to_vec())
                    .unwrap_or_else(|e| format!("bytes:{:?}", e.into_bytes())),
            ));
            if path.starts_with("/hang") {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let status = if path.contains("missing") { 404 } else { 200 };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("x-backend", "yes"), ("content-type", "application/json")],
                json!({"path": path, "method": parts.method.to_string()}).to_string(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn config(backend: &str, proxy_fn: &str, custom_fn: &str, async_fn: &str) -> String {
    format!(
        r#"
[stage_variables]
backend = "{backend}"

[[routes]]
method = "POST"
path = "/v1/things/{{id}}"
action = "lambda:Invoke"
integration = "proxy"
target = "{proxy_fn}"

[[routes]]
method = "OPTIONS"
path = "/v1/things/{{id}}"
action = "mock"
request_templates = {{ "application/json" = "mock.vtl" }}
passthrough = "when_no_templates"

[[routes.responses]]
status = 204
headers = {{ "Access-Control-Allow-Methods" = "'POST,OPTIONS'" }}

[[routes]]
method = "POST"
path = "/v1/quote"
action = "lambda:Invoke"
target = "{custom_fn}"
request_templates = {{ "application/json" = "quote.vtl" }}

[[routes.responses]]
error_pattern = "Bad Request.*"
status = 400
template = "error.vtl"

[[routes.responses]]
status = 200

[[routes]]
method = "POST"
path = "/v1/later"
action = "lambda:Invoke"
invocation = "event"
target = "{async_fn}"
request_templates = {{ "application/json" = "quote.vtl" }}

[[routes]]
method = "ANY"
path = "/collect/{{proxy+}}"
action = "http"
integration = "proxy"
uri = "http://${{stageVariables.backend}}/in/{{proxy}}"
request_parameters = {{ "integration.request.header.x-gateway-request" = "context.requestId" }}

[[routes]]
method = "POST"
path = "/v1/forward/{{id}}"
action = "http"
uri = "http://{backend}/items/{{id}}"
request_templates = {{ "application/json" = "forward.vtl" }}
request_parameters = {{ "integration.request.header.x-source" = "'gateway'", "integration.request.querystring.src" = "method.request.querystring.s" }}

[[routes]]
method = "GET"
path = "/hang"
action = "http"
integration = "proxy"
uri = "http://{backend}/hang"
timeout = "1s"

[[routes]]
method = "GET"
path = "/refused"
action = "http"
integration = "proxy"
uri = "http://127.0.0.1:1/x"
"#
    )
}

const FILES: [(&str, &str); 4] = [
    ("mock.vtl", r#"{"statusCode": 200}"#),
    ("quote.vtl", "$input.json('$')"),
    (
        "error.vtl",
        r#"{"error": "$util.escapeJavaScript($input.path('$.errorMessage'))"}"#,
    ),
    ("forward.vtl", r#"{"wrapped": $input.json('$')}"#),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_mock_and_http_routes_serve_as_api_gateway_does() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (backend_addr, seen) = backend().await;
    let (proxy_fn, custom_fn, async_fn) = (
        support::unique("proxy-fn"),
        support::unique("custom-fn"),
        support::unique("async-fn"),
    );
    let project = support::Project::custom(
        "integrations",
        &config(&backend_addr, &proxy_fn, &custom_fn, &async_fn),
        &FILES,
    );
    let dir = project.config.parent().unwrap().to_path_buf();
    let (proxy_log, async_log) = (dir.join("proxy.log"), dir.join("async.log"));
    support::lambda_function(
        &endpoint,
        &proxy_fn,
        PROXY_FUNCTION,
        &[("LOG", proxy_log.to_str().unwrap())],
    );
    support::lambda_function(&endpoint, &custom_fn, CUSTOM_FUNCTION, &[]);
    support::lambda_function(
        &endpoint,
        &async_fn,
        CUSTOM_FUNCTION,
        &[("LOG", async_log.to_str().unwrap())],
    );
    let gw = support::Gateway::start_on_emulator(&project.config, &endpoint);
    tokio::task::spawn_blocking(move || {
        // Lambda proxy: the event and the function's answer, headers and all.
        let r = gw.request(
            "POST",
            "/v1/things/42?tag=a&tag=b",
            &[("content-type", "application/json")],
            br#"{"n": 1}"#,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("x-echo"), Some("POST"));
        let cookies: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cookies, vec!["a=1", "b=2"]);
        let echo = r.json();
        assert_eq!(echo["path"], "/v1/things/42");
        assert_eq!(echo["resource"], "/v1/things/{id}");
        assert_eq!(echo["id"], "42");
        assert_eq!(echo["mq"], json!({"tag": ["a", "b"]}));
        assert_eq!(echo["body"], r#"{"n": 1}"#);
        assert_eq!(echo["b64"], false);
        assert_eq!(echo["stage"], "prod");
        assert_eq!(
            Some(echo["requestId"].as_str().unwrap()),
            r.header("x-amzn-RequestId")
        );
        let event: Json = serde_json::from_str(
            std::fs::read_to_string(&proxy_log)
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        for field in [
            "resource",
            "path",
            "httpMethod",
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "stageVariables",
            "requestContext",
            "body",
            "isBase64Encoded",
        ] {
            assert!(event.get(field).is_some(), "the event has {field}");
        }
        assert_eq!(event["requestContext"]["httpMethod"], "POST");
        assert!(event["requestContext"]["requestTimeEpoch"].is_i64());
        // A binary answer, a malformed one, a function that raised.
        let r = gw.request("POST", "/v1/things/1?mode=binary", &[], b"");
        assert_eq!((r.status, r.body.as_slice()), (200, &[0u8, 1, 2][..]));
        for mode in ["malformed", "raise"] {
            let r = gw.request("POST", &format!("/v1/things/1?mode={mode}"), &[], b"");
            assert_eq!(r.status, 502, "{mode}: {}", r.text());
            assert_eq!(
                r.json(),
                json!({"message": "Internal server error"}),
                "{mode}"
            );
        }

        // Mock: the template picks the status, the response its headers; no upstream.
        let r = gw.request(
            "OPTIONS",
            "/v1/things/1",
            &[("content-type", "application/json")],
            b"",
        );
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("POST,OPTIONS")
        );

        // Custom Lambda: the answer, and a raised error selected by its message.
        let r = gw.post_json("/v1/quote", r#"{"qty": 2, "sku": "A-1"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"price": 6, "sku": "A-1"}));
        let r = gw.post_json("/v1/quote", r#"{"qty": 0}"#);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(
            r.json(),
            json!({"error": "Bad Request: qty must be positive"})
        );

        // Asynchronous: 202 at once, and the function runs.
        let r = gw.post_json("/v1/later", r#"{"qty": 5, "sku": "later"}"#);
        assert_eq!(r.status, 202, "{}", r.text());
        let ran = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::read_to_string(&async_log).is_ok_and(|t| t.contains("later"))
        });
        assert!(ran, "the event reached the function");

        // HTTP proxy: the path under the prefix, the query, the headers (hop-by-hop ones
        // dropped, X-Forwarded-For appended, a mapped one added); the answer as it is.
        let r = gw.request(
            "PUT",
            "/collect/a/b%20c?x=1&x=2",
            &[
                ("content-type", "text/plain"),
                ("x-client", "c1"),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("proxy-authorization", "Basic Zm9v"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            b"raw body",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-backend"), Some("yes"));
        let (method, path, headers, body) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PUT", "/in/a/b%20c?x=1&x=2")
        );
        assert_eq!(body, "raw body");
        // Bytes that are not text, of a type not among binary_media_types, pass as they are.
        let r = gw.request(
            "PUT",
            "/collect/bin",
            &[("content-type", "application/x-protobuf")],
            b"\x0a\xff\x00\xfe",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let (_, _, _, body) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(body, "bytes:[10, 255, 0, 254]");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("x-client").as_deref(), Some("c1"));
        assert_eq!(header("x-hop"), None, "named by Connection: hop-by-hop");
        assert_eq!(header("proxy-authorization"), None);
        assert_eq!(
            header("x-forwarded-for").as_deref(),
            Some("198.51.100.7, 127.0.0.1")
        );
        assert!(header("x-gateway-request").is_some_and(|id| id.len() == 36));
        assert_eq!(
            header("host").as_deref(),
            Some(backend_addr.as_str()),
            "the backend's host"
        );
        // The backend's own status comes back as it is.
        assert_eq!(gw.request("GET", "/collect/missing", &[], b"").status, 404);
        // A path climbing out of the prefix, or naming another host, goes nowhere else.
        let before = seen.lock().unwrap().len();
        for path in [
            "/collect/../admin",
            "/collect/a/%2e%2e/admin",
            "/collect/..%2Fadmin",
        ] {
            let r = gw.request("GET", path, &[], b"");
            assert!(
                r.status == 400 || r.status == 403,
                "{path}: {} {}",
                r.status,
                r.text()
            );
        }
        let r = gw.request("GET", "/collect/@evil.example/x", &[], b"");
        assert_eq!(r.status, 200);
        let (_, path, headers, _) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(path, "/in/%40evil.example/x");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "host" && v == &backend_addr)
        );
        assert_eq!(seen.lock().unwrap().len(), before + 1);

        // HTTP with a template: the rendered body, mapped header and query only.
        let r = gw.request(
            "POST",
            "/v1/forward/7?s=web&other=no",
            &[("content-type", "application/json"), ("x-client", "c1")],
            br#"{"a": 1}"#,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json(),
            json!({"path": "/items/7?src=web", "method": "POST"})
        );
        let (_, _, headers, body) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            serde_json::from_str::<Json>(&body).unwrap(),
            json!({"wrapped": {"a": 1}})
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-source" && v == "gateway")
        );
        assert!(
            !headers.iter().any(|(k, _)| k == "x-client"),
            "only mapped headers"
        );

        // A backend that hangs: 504 after the route's timeout; one that refuses: 502.
        let started = std::time::Instant::now();
        let r = gw.request("GET", "/hang", &[], b"");
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = gw.request("GET", "/refused", &[], b"");
        assert_eq!(r.status, 502, "{}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[test]
fn check_config_refuses_integrations_that_cannot_work() {
    let config = r#"
[[routes]]
method = "POST"
path = "/a"
action = "lambda:Invoke"

[[routes]]
method = "POST"
path = "/b"
action = "http"
uri = "http://{host}/x"

[[routes]]
method = "POST"
path = "/c/{id}"
action = "http"
uri = "http://backend.internal/items/{item}"

[[routes]]
method = "POST"
path = "/d"
action = "kinesis:PutRecords"
target = "s"
integration = "proxy"

[[routes]]
method = "POST"
path = "/e"
action = "lambda:Invoke"
target = "f"
integration = "proxy"
invocation = "event"

[[routes]]
method = "POST"
path = "/f"
action = "mock"
target = "t"

[[routes]]
method = "POST"
path = "/g"
action = "http"
uri = "http://${stageVariables.nope}/x"

[[routes]]
method = "POST"
path = "/h"
action = "lambda:Invoke"
target = "f"
request_parameters = { "integration.request.body.x" = "'v'" }

[[routes]]
method = "POST"
path = "/i"
action = "aws:cognito-idp:ListUsers"

[[routes]]
method = "POST"
path = "/j"
action = "aws:ssm:GetParameter"

[aws.services.ssm]
protocol = "json"

[aws.services.dynamodb]
protocol = "json"
target_prefix = "X"

[aws.services.ec2]
protocol = "query"
api_version = "2016"
"#;
    let project = support::Project::custom("integrations-check", config, &[]);
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "route POST /a: a lambda:Invoke route names its function in target",
        "its host must be fixed",
        "{item} is neither mapped",
        "integration = \"proxy\" is for lambda:Invoke and http routes",
        "invocation = \"event\" is for lambda:Invoke routes without integration = \"proxy\"",
        "a mock route has no target",
        "no stage variable \"nope\"",
        "\"integration.request.body.x\" is not integration.request.path.NAME",
        "the gateway does not know the protocol of AWS service \"cognito-idp\"",
        "(describe others in [aws.services.NAME])",
        "aws.services.ssm: a json service needs target_prefix",
        "aws.services.dynamodb: the gateway knows dynamodb already",
        "aws.services.ec2: a query service needs api_version, as YYYY-MM-DD",
    ] {
        assert!(err.contains(expected), "{expected}:\n{err}");
    }
}

const PUT_ORDER: &str = r#"{
  "Item": {
    "customer": {"S": "$input.params('customer')"},
    "id": {"S": "$input.path('$.id')"},
    "total": {"N": "$input.path('$.total')"}
  }
}"#;
const GET_ORDER: &str = r#"{"Key": {"customer": {"S": "$input.params('customer')"}, "id": {"S": "$input.params('id')"}}}"#;
const ORDER: &str = r#"#set($item = $input.path('$.Item'))
#if("$!item" == "")
#set($context.responseOverride.status = 404)
{"message": "no such order"}
#else
{"id": "$item.id.S", "total": $item.total.N}
#end"#;
const QUERY_ORDERS: &str = r#"{"KeyConditionExpression": "customer = :c", "ExpressionAttributeValues": {":c": {"S": "$input.params('customer')"}}}"#;
const ORDERS: &str = r#"#set($inputRoot = $input.path('$'))
{"orders": [#foreach($elem in $inputRoot.Items){"id": "$elem.id.S", "total": $elem.total.N}#if($foreach.hasNext),#end#end]}"#;
const PUT_EVENTS: &str = r#"{"Entries": [{"Source": "web", "DetailType": "click", "Detail": "$util.escapeJavaScript($input.json('$'))"}]}"#;
const PUBLISH: &str = "Message=$util.urlEncode($input.json('$'))&Subject=alert";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_aws_action_is_signed_and_sent_as_the_services_own_api() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (table, bus, topic) = (
        support::unique("orders-"),
        support::unique("clicks-"),
        support::unique("alerts-"),
    );
    let topic_arn = support::botocore(
        &endpoint,
        r#"
table, bus, topic = sys.argv[2:5]
c("dynamodb").create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "customer", "AttributeType": "S"}, {"AttributeName": "id", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"}, {"AttributeName": "id", "KeyType": "RANGE"}])
c("events").create_event_bus(Name=bus)
print(c("sns").create_topic(Name=topic)["TopicArn"])
"#,
        &[&table, &bus, &topic],
    );
    let topic_arn = topic_arn.trim();
    // A service the gateway has no table entry for, described by configuration.
    let pool = support::cognito_user(&endpoint)["pool"]
        .as_str()
        .unwrap()
        .to_string();
    let route = |method: &str,
                 path: &str,
                 action: &str,
                 target: &str,
                 template: &str,
                 extra: &str| {
        format!(
            "\n[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\naction = \"{action}\"\ntarget = \"{target}\"\nrequest_templates = {{ \"application/json\" = \"{template}\" }}\n{extra}\n"
        )
    };
    let mut config = String::from(
        "[aws.services.cognito-idp]\nprotocol = \"json\"\njson_version = \"1.1\"\ntarget_prefix = \"AWSCognitoIdentityProviderService\"\ntarget_field = \"UserPoolId\"\n",
    );
    config += &route(
        "GET",
        "/v1/users",
        "aws:cognito-idp:ListUsers",
        &pool,
        "list-users.vtl",
        "response_template = \"users.vtl\"\n",
    );
    config += &route(
        "POST",
        "/v1/customers/{customer}/orders",
        "aws:dynamodb:PutItem",
        &table,
        "put-order.vtl",
        "[[routes.responses]]\nstatus = 201\ntemplate = \"created.vtl\"\n",
    );
    config += &route(
        "GET",
        "/v1/customers/{customer}/orders/{id}",
        "aws:dynamodb:GetItem",
        &table,
        "get-order.vtl",
        "response_template = \"order.vtl\"\n",
    );
    config += &route(
        "GET",
        "/v1/customers/{customer}/orders",
        "aws:dynamodb:Query",
        &table,
        "query-orders.vtl",
        "response_template = \"orders.vtl\"\n",
    );
    config += &route(
        "POST",
        "/v1/clicks",
        "aws:events:PutEvents",
        &bus,
        "put-events.vtl",
        "",
    );
    config += &route(
        "POST",
        "/v1/alerts",
        "aws:sns:Publish",
        topic_arn,
        "publish.vtl",
        "",
    );
    config += &route(
        "POST",
        "/v1/missing",
        "aws:dynamodb:PutItem",
        "no-such-table",
        "put-order.vtl",
        "[[routes.responses]]\nerror_pattern = \"ResourceNotFoundException\"\nstatus = 404\n",
    );
    let project = support::Project::custom(
        "integrations-aws",
        &config,
        &[
            ("put-order.vtl", PUT_ORDER),
            ("created.vtl", r#"{"created": true}"#),
            ("get-order.vtl", GET_ORDER),
            ("order.vtl", ORDER),
            ("query-orders.vtl", QUERY_ORDERS),
            ("orders.vtl", ORDERS),
            ("put-events.vtl", PUT_EVENTS),
            ("publish.vtl", PUBLISH),
            ("list-users.vtl", r#"{"Limit": 10}"#),
            (
                "users.vtl",
                r##"{"users": [#foreach($u in $input.path('$.Users'))"$u.Username"#if($foreach.hasNext),#end#end]}"##,
            ),
        ],
    );
    let gw = support::Gateway::start_on_emulator(&project.config, &endpoint);
    tokio::task::spawn_blocking(move || {
        // The pool the route's target pins, through the described JSON 1.1 protocol.
        let r = gw.request("GET", "/v1/users", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"users": ["alice"]}));

        for (id, total) in [("o-1", 12), ("o-2", 30)] {
            let r = gw.post_json(
                "/v1/customers/acme/orders",
                &json!({"id": id, "total": total}).to_string(),
            );
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(r.json(), json!({"created": true}));
        }
        let r = gw.request("GET", "/v1/customers/acme/orders/o-2", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"id": "o-2", "total": 30}));
        let r = gw.request("GET", "/v1/customers/acme/orders/o-9", &[], b"");
        assert_eq!(r.status, 404, "{}", r.text());
        let r = gw.request("GET", "/v1/customers/acme/orders", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json(),
            json!({"orders": [{"id": "o-1", "total": 12}, {"id": "o-2", "total": 30}]})
        );
        // The service's error code selects a response.
        let r = gw.post_json("/v1/missing", r#"{"id": "x", "total": 1}"#);
        assert_eq!(r.status, 404, "{}", r.text());

        let r = gw.post_json("/v1/clicks", r#"{"page": "/home"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["FailedEntryCount"], 0);
        assert!(r.json()["Entries"][0]["EventId"].is_string());

        // SNS speaks the query protocol: its XML answer comes back as it is.
        let r = gw.post_json("/v1/alerts", r#"{"level": "high"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("<MessageId>"), "{}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    // What the gateway wrote is in the table.
    let items = support::botocore(
        &endpoint,
        "print(json.dumps(c('dynamodb').get_item(TableName=sys.argv[2], Key={'customer': {'S': 'acme'}, 'id': {'S': 'o-1'}})['Item']))",
        &[&table],
    );
    let item: Json = serde_json::from_str(items.trim()).unwrap();
    assert_eq!(item["total"], json!({"N": "12"}));
}

/// An API Gateway export (Swagger 2.0, as `get-export` writes it) using a Lambda proxy, a
/// CORS mock, an HTTP proxy with a stage-variable host, and DynamoDB.
fn export(function_arn: &str, table: &str) -> Json {
    json!({
        "swagger": "2.0",
        "info": {"title": "mixed-integrations", "version": "2026-12-01"},
        "basePath": "/prod",
        "paths": {
            "/things/{id}": {
                "post": {
                    "parameters": [{"name": "id", "in": "path", "required": true, "type": "string"}],
                    "responses": {"200": {"description": "200 response"}},
                    "x-amazon-apigateway-integration": {
                        "type": "aws_proxy", "httpMethod": "POST", "passthroughBehavior": "when_no_match",
                        "uri": format!("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{function_arn}/invocations"),
                        "responses": {"default": {"statusCode": "200"}},
                    },
                },
                "options": {
                    "responses": {"200": {"description": "200 response", "headers": {"Access-Control-Allow-Origin": {"type": "string"}}}},
                    "x-amazon-apigateway-integration": {
                        "type": "mock",
                        "requestTemplates": {"application/json": "{\"statusCode\": 200}"},
                        "passthroughBehavior": "when_no_match",
                        "responses": {"default": {"statusCode": "200",
                            "responseParameters": {"method.response.header.Access-Control-Allow-Origin": "'*'"}}},
                    },
                },
            },
            "/collect/{proxy+}": {
                "x-amazon-apigateway-any-method": {
                    "parameters": [{"name": "proxy", "in": "path", "required": true, "type": "string"}],
                    "responses": {},
                    "x-amazon-apigateway-integration": {
                        "type": "http_proxy", "httpMethod": "ANY",
                        "uri": "http://${stageVariables.backend}/in/{proxy}",
                        "requestParameters": {"integration.request.path.proxy": "method.request.path.proxy"},
                        "passthroughBehavior": "when_no_match",
                        "responses": {"default": {"statusCode": "200"}},
                    },
                },
            },
            "/orders": {
                "post": {
                    "responses": {"200": {"description": "200 response"}},
                    "x-amazon-apigateway-integration": {
                        "type": "aws", "httpMethod": "POST",
                        "uri": "arn:aws:apigateway:us-east-1:dynamodb:action/PutItem",
                        "credentials": "arn:aws:iam::000000000000:role/apigw-dynamodb",
                        "requestParameters": {"integration.request.header.Content-Type": "'application/x-amz-json-1.0'"},
                        "requestTemplates": {"application/json": format!("{{\"TableName\": \"{table}\", \"Item\": {{\"customer\": {{\"S\": \"$input.path('$.customer')\"}}, \"id\": {{\"S\": \"$context.requestId\"}}}}}}")},
                        "passthroughBehavior": "never",
                        "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "{\"ok\": true}"}}},
                    },
                },
            },
        },
        "x-ingest-gateway": {"stage_variables": {"backend": "127.0.0.1:9"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_export_with_every_integration_kind_serves_end_to_end() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (backend_addr, seen) = backend().await;
    let function = support::unique("export-proxy-fn");
    let table = support::unique("export-orders-");
    let dir = std::env::temp_dir().join(support::unique("ingest-gateway-export-integrations-"));
    std::fs::create_dir_all(&dir).unwrap();
    support::lambda_function(
        &endpoint,
        &function,
        PROXY_FUNCTION,
        &[("LOG", dir.join("proxy.log").to_str().unwrap())],
    );
    orders_table(&endpoint, &table);
    let mut doc = export(
        &format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
        &table,
    );
    doc["x-ingest-gateway"]["stage_variables"]["backend"] = json!(backend_addr);
    let file = dir.join("export.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let report = support::import_openapi(&file, &dir.join("imported"));
    assert!(report.contains("imported 4 routes"), "{report}");
    assert!(
        report.contains("everything in the document was translated"),
        "{report}"
    );
    let gw = support::Gateway::start_on_emulator(&dir.join("imported/gateway.toml"), &endpoint);
    tokio::task::spawn_blocking(move || {
        let r = gw.post_json("/things/7", "{}");
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["id"], "7");
        let r = gw.request(
            "OPTIONS",
            "/things/7",
            &[("content-type", "application/json")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let r = gw.request("GET", "/collect/deep/path", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(seen.lock().unwrap().last().unwrap().1, "/in/deep/path");
        let r = gw.post_json("/orders", r#"{"customer": "acme"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"ok": true}));
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    let count = support::botocore(
        &endpoint,
        "print(c('dynamodb').scan(TableName=sys.argv[2])['Count'])",
        &[&table],
    );
    assert_eq!(count.trim(), "1");
}

#[test]
fn provision_creates_tables_buses_and_topics_and_checks_functions() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let (table, bus, topic, function) = (
        support::unique("prov-table-"),
        support::unique("prov-bus-"),
        support::unique("prov-topic-"),
        support::unique("prov-fn-"),
    );
    support::lambda_function(&endpoint, &function, CUSTOM_FUNCTION, &[]);
    let config = format!(
        r#"
[aws]
endpoint_url = "{endpoint}"
region = "us-east-1"

[[resources.dynamodb_tables]]
name = "{table}"
hash_key = "customer:S"
range_key = "id:S"

[[resources.event_buses]]
name = "{bus}"

[[resources.sns_topics]]
name = "{topic}"

[[resources.lambda_functions]]
name = "{function}"
"#
    );
    let project = support::Project::custom("provision-integrations", &config, &[]);
    let first = project.provision();
    for line in [
        format!("created   dynamodb table {table}"),
        format!("created   event bus {bus}"),
        format!("created   sns topic {topic}"),
        format!("exists    lambda function {function}"),
    ] {
        assert!(first.contains(&line), "{line}:\n{first}");
    }
    let second = project.provision();
    assert!(second.contains("0 created, 4 already existed"), "{second}");
    let described = support::botocore(
        &endpoint,
        "print(json.dumps(c('dynamodb').describe_table(TableName=sys.argv[2])['Table']['KeySchema']))",
        &[&table],
    );
    assert!(described.contains("\"RANGE\""), "{described}");
    // A function that does not exist is reported, and provision fails.
    std::fs::write(
        &project.config,
        config.replace(&function, "no-such-function-anywhere"),
    )
    .unwrap();
    let out = project.cli(&["provision"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("DIFFERS   lambda function no-such-function-anywhere: does not exist"),
        "{text}"
    );
}

/// A stub EventBridge (for fault injection): counts `PutEvents` calls and entries, refuses
/// entries whose `Source` is `bad`, and throttles a `flaky` entry the first time it sees it.
async fn stub_eventbridge() -> (String, Arc<Mutex<Vec<usize>>>) {
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let flaky_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let c = calls.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let (c, flaky_seen) = (c.clone(), flaky_seen.clone());
        async move {
            assert_eq!(headers["x-amz-target"], "AWSEvents.PutEvents");
            assert!(headers["authorization"].to_str().unwrap().starts_with("AWS4-HMAC-SHA256"));
            let req: Json = serde_json::from_str(&body).unwrap();
            let entries = req["Entries"].as_array().unwrap().clone();
            c.lock().unwrap().push(entries.len());
            let mut failed = 0;
            let results: Vec<Json> = entries
                .iter()
                .map(|e| match e["Source"].as_str() {
                    Some("bad") => {
                        failed += 1;
                        json!({"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."})
                    }
                    Some("flaky") if !flaky_seen.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                        failed += 1;
                        json!({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"})
                    }
                    _ => json!({"EventId": uuid_like(e)}),
                })
                .collect();
            (
                [("content-type", "application/x-amz-json-1.1")],
                json!({"FailedEntryCount": failed, "Entries": results}).to_string(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn uuid_like(e: &Json) -> String {
    format!("id-{}", e["Detail"].as_str().unwrap_or_default().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_entries_batch_across_requests_and_failed_ones_are_retried() {
    let (stub, calls) = stub_eventbridge().await;
    let config = r#"
[[routes]]
method = "POST"
path = "/v1/clicks"
action = "aws:events:PutEvents"
target = "clicks"
request_templates = { "application/json" = "put-events.vtl" }
batch = { linger = "20ms" }
"#;
    let template = r#"{"Entries": [{"Source": "$input.path('$.source')", "DetailType": "click", "Detail": "$util.escapeJavaScript($input.json('$'))"}]}"#;
    let project = support::Project::custom(
        "integrations-events",
        config,
        &[("put-events.vtl", template)],
    );
    let gw = support::Gateway::start_with_env(
        &project.config,
        &[
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", &stub),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let calls2 = calls.clone();
    tokio::task::spawn_blocking(move || {
        // Forty concurrent single-entry requests: far fewer calls, every entry once.
        let statuses = support::concurrently(40, |i| {
            gw.post_json("/v1/clicks", &json!({"source": "web", "n": i}).to_string())
                .status
        });
        assert_eq!(statuses, vec![200; 40]);
        let sent: Vec<usize> = calls2.lock().unwrap().clone();
        assert_eq!(sent.iter().sum::<usize>(), 40, "every entry once: {sent:?}");
        assert!(sent.len() < 40 && sent.iter().all(|n| *n <= 10), "{sent:?}");
        // A throttled entry is sent again and accepted.
        let before = calls2.lock().unwrap().len();
        let r = gw.post_json("/v1/clicks", r#"{"source": "flaky"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(calls2.lock().unwrap().len(), before + 2, "one retry");
        // An entry refused for good: the response names it.
        let r = gw.post_json("/v1/clicks", r#"{"source": "bad"}"#);
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["FailedEntryCount"], 1);
        assert_eq!(r.json()["Entries"][0]["ErrorCode"], "MalformedDetail");
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_publishes_batch_across_requests_and_answer_as_publish_does() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let topic = support::unique("batched-alerts-");
    let arn = support::botocore(
        &endpoint,
        "print(c('sns').create_topic(Name=sys.argv[2])['TopicArn'])",
        &[&topic],
    );
    let config = format!(
        r#"
[[routes]]
method = "POST"
path = "/v1/alerts"
action = "aws:sns:Publish"
target = "{}"
request_templates = {{ "application/json" = "publish.vtl" }}
batch = {{ linger = "20ms" }}
"#,
        arn.trim()
    );
    let project =
        support::Project::custom("integrations-sns", &config, &[("publish.vtl", PUBLISH)]);
    let gw = support::Gateway::start_on_emulator(&project.config, &endpoint);
    tokio::task::spawn_blocking(move || {
        let answers = support::concurrently(24, |i| {
            let r = gw.post_json("/v1/alerts", &json!({"n": i}).to_string());
            (r.status, r.text())
        });
        let mut ids = std::collections::HashSet::new();
        for (status, text) in &answers {
            assert_eq!(*status, 200, "{text}");
            let id = text
                .split("<MessageId>")
                .nth(1)
                .and_then(|r| r.split("</MessageId>").next())
                .unwrap_or_else(|| panic!("a Publish answer: {text}"));
            ids.insert(id.to_string());
        }
        assert_eq!(ids.len(), 24, "each request its own message");
        // Fewer calls than requests: the batch histogram counts calls.
        let metrics = gw.request("GET", "/metrics", &[], b"").text();
        let calls = support::batch_calls(&metrics, "POST /v1/alerts");
        assert!(
            (3.0..24.0).contains(&calls),
            "{calls} calls for 24 messages"
        );
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

/// A CA and a `localhost` certificate it signed: (CA PEM, certificate PEM, key PEM).
fn private_ca() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "collector internal CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

#[test]
fn an_https_backend_with_a_private_ca_is_trusted_only_through_backend_ca() {
    let (ca, cert, key) = private_ca();
    // The backend: a gateway over TLS with a mock route.
    let backend = support::Project::custom(
        "integrations-tls-backend",
        r#"
[server.tls]
cert = "tls.pem"
key = "tls.key"

[[routes]]
method = "GET"
path = "/in/ping"
action = "mock"

[[routes.responses]]
status = 200
headers = { "x-backend" = "'tls'" }
"#,
        &[("tls.pem", &cert), ("tls.key", &key)],
    );
    let b = support::Gateway::start(&backend.config);
    let port = b.addr.rsplit(':').next().unwrap().to_string();
    let route = |path: &str, ca_line: &str| {
        format!(
            "\n[[routes]]\nmethod = \"GET\"\npath = \"{path}/{{proxy+}}\"\naction = \"http\"\nintegration = \"proxy\"\nuri = \"https://localhost:{port}/in/{{proxy}}\"\n{ca_line}\n"
        )
    };
    let config = route("/trusted", "backend_ca = \"ca.pem\"") + &route("/untrusted", "");
    let front = support::Project::custom("integrations-tls-front", &config, &[("ca.pem", &ca)]);
    let gw = support::Gateway::start(&front.config);
    let r = gw.request("GET", "/trusted/ping", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-backend"), Some("tls"));
    // The system's CAs alone do not trust it: no request reaches the backend.
    let r = gw.request("GET", "/untrusted/ping", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
    gw.stop_cleanly();
    // The export carries the CA (API Gateway has no field for it), and its import trusts it.
    let exported = front.cli(&["export-openapi"]);
    assert!(exported.status.success());
    let dir = std::env::temp_dir().join(support::unique("ingest-gateway-export-ca-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("export.json"), &exported.stdout).unwrap();
    support::import_openapi(&dir.join("export.json"), &dir.join("imported"));
    let imported = support::Gateway::start(&dir.join("imported/gateway.toml"));
    let r = imported.request("GET", "/trusted/ping", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = imported.request("GET", "/untrusted/ping", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
    imported.stop_cleanly();
    b.stop_cleanly();
    // A CA file that holds no certificate is refused at load.
    std::fs::write(
        front.config.parent().unwrap().join("ca.pem"),
        "not a certificate",
    )
    .unwrap();
    let out = front.cli(&["check-config"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backend_ca holds no PEM certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_written_and_read_by_path_with_mapped_headers() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let bucket = support::unique("objects-");
    support::botocore(
        &endpoint,
        "c('s3').create_bucket(Bucket=sys.argv[2])",
        &[&bucket],
    );
    let config = format!(
        r#"
[[routes]]
method = "PUT"
path = "/v1/objects/{{item+}}"
action = "aws:s3:PutObject"
target = "{bucket}"
request_templates = {{ "application/json" = "object.vtl" }}
request_parameters = {{ "integration.request.path.key" = "method.request.path.item", "integration.request.header.Content-Type" = "'application/x-ndjson'", "integration.request.header.x-amz-meta-request" = "context.requestId" }}

[[routes.responses]]
status = 201

[[routes]]
method = "GET"
path = "/v1/objects/{{item+}}"
action = "aws:s3:GetObject"
target = "{bucket}"
request_parameters = {{ "integration.request.path.key" = "method.request.path.item" }}

[[routes.responses]]
error_pattern = "NoSuchKey"
status = 404
"#
    );
    let project = support::Project::custom(
        "integrations-s3",
        &config,
        &[("object.vtl", "$input.json('$')\n")],
    );
    let gw = support::Gateway::start_on_emulator(&project.config, &endpoint);
    tokio::task::spawn_blocking(move || {
        let r = gw.request(
            "PUT",
            "/v1/objects/2026/12/01/batch%201.json",
            &[("content-type", "application/json")],
            br#"{"events": [1, 2]}"#,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = gw.request("GET", "/v1/objects/2026/12/01/batch%201.json", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"events": [1, 2]}));
        let r = gw.request("GET", "/v1/objects/nope.json", &[], b"");
        assert_eq!(r.status, 404, "{}", r.text());
        // A key climbing out of its place is refused before any call.
        let r = gw.request("GET", "/v1/objects/a/%2e%2e/b", &[], b"");
        assert_eq!(r.status, 400, "{}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    let head = support::botocore(
        &endpoint,
        "h = c('s3').head_object(Bucket=sys.argv[2], Key='2026/12/01/batch 1.json'); print(json.dumps({'type': h['ContentType'], 'meta': h['Metadata']}))",
        &[&bucket],
    );
    let head: Json = serde_json::from_str(head.trim()).unwrap();
    assert_eq!(head["type"], "application/x-ndjson", "the mapped header");
    assert!(
        head["meta"]["request"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_puts_batch_into_batch_write_item_when_the_route_asks() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let table = support::unique("batched-orders-");
    orders_table(&endpoint, &table);
    let config = format!(
        r#"
[[routes]]
method = "POST"
path = "/v1/customers/{{customer}}/orders"
action = "aws:dynamodb:PutItem"
target = "{table}"
request_templates = {{ "application/json" = "put-order.vtl" }}
batch = {{ linger = "20ms" }}
"#
    );
    let project = support::Project::custom(
        "integrations-dynamodb-batch",
        &config,
        &[("put-order.vtl", PUT_ORDER)],
    );
    let gw = support::Gateway::start_on_emulator(&project.config, &endpoint);
    tokio::task::spawn_blocking(move || {
        let statuses = support::concurrently(30, |i| {
            gw.post_json(
                "/v1/customers/acme/orders",
                &json!({"id": format!("o-{i}"), "total": i}).to_string(),
            )
            .status
        });
        assert_eq!(statuses, vec![200; 30]);
        let metrics = gw.request("GET", "/metrics", &[], b"").text();
        let calls = support::batch_calls(&metrics, "POST /v1/customers/{customer}/orders");
        assert!((2.0..30.0).contains(&calls), "{calls} calls for 30 items");
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    let count = support::botocore(
        &endpoint,
        "print(c('dynamodb').scan(TableName=sys.argv[2])['Count'])",
        &[&table],
    );
    assert_eq!(count.trim(), "30", "every item once");
}
