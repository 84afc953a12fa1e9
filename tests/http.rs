//! The HTTP surface through `server::app` (no network listener): routing, body limits,
//! content types, template and upstream failures, and the API-Gateway-compatible error
//! bodies for each. Upstreams here are a closed port or a listener that never answers, so a
//! 500 (not 502) also proves no upstream call was made.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ingest_gateway::auth::Snapshot;
use ingest_gateway::config;
use ingest_gateway::integrations::Clients;
use ingest_gateway::pipeline::{self, Gateway};
use ingest_gateway::server;
use serde_json::{Value as Json, json};
use tower::ServiceExt;

const CONFIG: &str = r#"
[server]
max_body_bytes = 1024

[stage_variables]
stream = "s"

[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "events.vtl" }
passthrough = "never"
timeout = "300ms"

[[routes]]
method = "POST"
path = "/v1/broken"
action = "kinesis:PutRecord"
request_templates = { "application/json" = "not-json.vtl" }

[[routes]]
method = "POST"
path = "/v1/raw"
action = "kinesis:PutRecord"
target = "s"
request_templates = { "application/json" = "events.vtl" }
passthrough = "when_no_match"
timeout = "300ms"
"#;

const EVENTS: &str = r#"{"StreamName": "$stageVariables.stream", "Records": [
#foreach($e in $input.path('$.events'))
{"Data": "$util.base64Encode($input.json("$.events[$foreach.index]"))", "PartitionKey": "k"}#if($foreach.hasNext),#end
#end
]}"#;

/// A gateway whose AWS endpoint is `endpoint`.
async fn gateway(endpoint: &str) -> Arc<Gateway> {
    let dir = std::env::temp_dir().join(format!("ingest-gateway-http-{}", support_unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("events.vtl"), EVENTS).unwrap();
    std::fs::write(dir.join("not-json.vtl"), "this is not JSON").unwrap();
    let config = config::parse(Path::new("test.toml"), CONFIG, &dir).unwrap();
    let compiled = pipeline::compile_templates(&config).unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "t", "t", None, None, "tests",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let auth = Arc::new(pipeline::authorizer(&config, Snapshot::default(), vec![]));
    let clients = Clients::from_sdk_config(&sdk, true);
    Arc::new(Gateway::new(config, compiled, clients, auth).expect("the gateway starts"))
}

fn support_unique() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A port with nothing listening.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(gw: &Arc<Gateway>, req: Request<Body>) -> Reply {
    let resp = server::app(gw.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(body.into()).unwrap()
}

/// The API Gateway error shape: `{"message": ...}`, the error type, and a request id.
fn assert_error(r: &Reply, status: StatusCode, message: &str, error_type: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({ "message": message }));
    assert_eq!(r.headers["x-amzn-errortype"], error_type);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-amzn-requestid"].len(), 36);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_403() {
    let gw = gateway(&closed_port()).await;
    for req in [
        post("/nope", Some("application/json"), "{}"),
        Request::get("/v1/events").body(Body::empty()).unwrap(),
        post("/v1/events/", Some("application/json"), "{}"),
        post("/v1/../v1/events", Some("application/json"), "{}"),
    ] {
        let r = send(&gw, req).await;
        assert_error(
            &r,
            StatusCode::FORBIDDEN,
            "Missing Authentication Token",
            "MissingAuthenticationTokenException",
        );
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let gw = gateway(&closed_port()).await;
    let r = send(
        &gw,
        post("/v1/events", Some("application/json"), vec![b' '; 1025]),
    )
    .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request Too Long",
        "RequestTooLongException",
    );
    // Without a Content-Length (streamed), the limit still holds.
    let chunks = futures_stream(vec![vec![b' '; 600], vec![b' '; 600]]);
    let r = send(&gw, post("/v1/events", Some("application/json"), chunks)).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request Too Long",
        "RequestTooLongException",
    );
    let r = send(
        &gw,
        post("/v1/events", Some("application/json"), vec![b' '; 1024]),
    )
    .await;
    assert_ne!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// A body without a Content-Length, streamed in chunks.
fn futures_stream(chunks: Vec<Vec<u8>>) -> Body {
    let items = chunks
        .into_iter()
        .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c)));
    Body::from_stream(futures_util::stream::iter(items))
}

#[tokio::test]
async fn content_types_follow_passthrough_rules() {
    let gw = gateway(&closed_port()).await;
    // passthrough = never: no template for the type is a 415, before any upstream call.
    for ct in ["text/csv", "application/x-www-form-urlencoded"] {
        let r = send(&gw, post("/v1/events", Some(ct), "a,b")).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(r.json()["message"], "Unsupported Media Type");
        assert_eq!(
            r.json()["acceptedContentTypes"],
            json!(["application/json"])
        );
        assert_eq!(
            r.headers["x-amzn-errortype"],
            "UnsupportedMediaTypeException"
        );
    }
    // No content type means application/json; parameters and case are ignored.
    let body = json!({"events": [{"a": 1}]}).to_string();
    for ct in [None, Some("Application/JSON; charset=utf-8")] {
        let r = send(&gw, post("/v1/events", ct, body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{ct:?} should reach the (closed) upstream"
        );
    }
    // when_no_match: an unmatched type passes the body through as the service request.
    let r = send(&gw, post("/v1/raw", Some("text/plain"), "not json")).await;
    assert_error(
        &r,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        "InternalServerErrorException",
    );
}

#[tokio::test]
async fn invalid_utf8_bodies_are_400() {
    let gw = gateway(&closed_port()).await;
    let r = send(
        &gw,
        post(
            "/v1/events",
            Some("application/json"),
            vec![b'{', 0xff, 0xfe, b'}'],
        ),
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "Invalid request body",
        "BadRequestException",
    );
}

#[tokio::test]
async fn template_and_rendering_failures_without_an_upstream_call() {
    let gw = gateway(&closed_port()).await;
    // 1,001 events exceed the #foreach limit.
    let events: Vec<Json> = (0..1001).map(|i| json!({"i": i})).collect();
    let big = json!({ "events": events }).to_string();
    let gw_big = {
        let mut c = gw.config.clone();
        c.max_body_bytes = 1 << 20;
        Arc::new(
            Gateway::new(
                c,
                pipeline::compile_templates(&gw.config).unwrap(),
                gw.clients.clone(),
                gw.auth.clone(),
            )
            .expect("the gateway starts"),
        )
    };
    // What the request holds made the template fail: the client's 400, saying what.
    let r = send(&gw_big, post("/v1/events", Some("application/json"), big)).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "The request body could not be mapped: #foreach over 1001 items; at most 1000 iterations are allowed",
        "BadRequestException",
    );
    // A template that renders something Kinesis cannot take, whatever the request: 500.
    let r = send(&gw, post("/v1/broken", Some("application/json"), "{}")).await;
    assert_error(
        &r,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        "InternalServerErrorException",
    );
    // An empty batch renders zero records, which PutRecords does not accept: the client's.
    let r = send(
        &gw,
        post("/v1/events", Some("application/json"), r#"{"events": []}"#),
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "The request could not be mapped to a kinesis:PutRecords request: Records must hold 1 to 500 records, not 0",
        "BadRequestException",
    );
    assert!(r.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn unreachable_upstream_is_502_with_retry_after() {
    let gw = gateway(&closed_port()).await;
    let r = send(
        &gw,
        post(
            "/v1/events",
            Some("application/json"),
            r#"{"events": [{"a": 1}]}"#,
        ),
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_GATEWAY,
        "Bad Gateway",
        "BadGatewayException",
    );
    assert_eq!(r.headers["retry-after"], "1");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let gw = gateway(&format!("http://{addr}")).await;
    let started = std::time::Instant::now();
    let r = send(
        &gw,
        post(
            "/v1/events",
            Some("application/json"),
            r#"{"events": [{"a": 1}]}"#,
        ),
    )
    .await;
    assert_error(
        &r,
        StatusCode::GATEWAY_TIMEOUT,
        "Endpoint request timed out",
        "IntegrationTimeoutException",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let gw = gateway(&closed_port()).await;
    let r = send(&gw, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let r = send(&gw, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    gw.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let r = send(&gw, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let _ = ingest_gateway::telemetry::prometheus();
    send(&gw, post("/nope", None, "")).await;
    let r = send(&gw, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("gateway_requests_total{route=\"unmatched\",status=\"403\"}"),
        "{text}"
    );
}
