//! Lambda TOKEN and REQUEST authorizers through the real binary, with Python functions the
//! test creates in the emulator's Lambda (which runs them locally). Each function appends
//! the event it was given to a file, so the test sees exactly what the gateway sent and how
//! often. Records go to the stub Kinesis, which counts calls: refused requests make none.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::{Value as Json, json};

const TOKEN_FUNCTION: &str = r#"
import json, os

def policy(principal, statements, **extra):
    out = {"principalId": principal,
           "policyDocument": {"Version": "2012-10-17", "Statement": statements}}
    out.update(extra)
    return out

def handler(event, context):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps(event) + "\n")
    token = event["authorizationToken"].split(" ", 1)[-1]
    api = event["methodArn"].split("/")[0]
    allow = lambda resource: {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
    if token.startswith("allow-"):
        return policy(token[6:], [allow(api + "/*/*/v1/devices/*")],
                      context={"tenant": "acme", "n": 3, "beta": True})
    if token.startswith("key-"):
        return policy("keyed", [allow(api + "/*")], usageIdentifierKey=token[4:])
    if token == "deny":
        return policy("mallory", [allow(api + "/*"),
            {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": api + "/*/POST/v1/devices/secret"}])
    if token == "unauthorized":
        raise Exception("Unauthorized")
    if token == "malformed":
        return {"principalId": 1}
    if token == "nested":
        return policy("n", [allow("*")], context={"obj": {"a": 1}})
    raise Exception("boom")
"#;

const REQUEST_FUNCTION: &str = r#"
import json, os

def handler(event, context):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps(event) + "\n")
    ok = event["headers"].get("x-webhook-secret") == "s3cret"
    return {"principalId": event["pathParameters"]["source"],
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow" if ok else "Deny",
                 "Resource": event["methodArn"]}]},
            "context": {"source": event["pathParameters"]["source"]}}
"#;

/// Creates (or replaces) a Python function that logs to `log`.
fn create_function(endpoint: &str, name: &str, code: &str, log: &Path) {
    support::lambda_function(endpoint, name, code, &[("LOG", log.to_str().unwrap())]);
}

/// The events a function was given, in order.
fn events(log: &Path) -> Vec<Json> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const TEMPLATE: &str = r#"#set($q = '"')
#set($data = "{${q}principal${q}: ${q}$context.authorizer.principalId${q}, ${q}tenant${q}: ${q}$context.authorizer.tenant${q}, ${q}n${q}: ${q}$context.authorizer.n${q}, ${q}source${q}: ${q}$context.authorizer.source${q}, ${q}key${q}: ${q}$context.identity.apiKeyId${q}}")
{"StreamName": "auth-stream", "Records": [{"Data": "$util.base64Encode($data)", "PartitionKey": "pk"}]}
"#;

fn config(token_fn: &str, request_fn: &str) -> String {
    let route = |method: &str, path: &str, authorizer: &str, extra: &str| {
        format!(
            r#"
[[routes]]
method = "{method}"
path = "{path}"
authorizer = "{authorizer}"
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}
{extra}
"#
        )
    };
    let mut c = format!(
        r#"
[authorizers.partners]
type = "lambda_token"
function = "arn:aws:lambda:us-east-1:000000000000:function:{token_fn}"
identity_source = "header:Authorization"
validation_regex = "^Bearer [-0-9a-zA-Z._~]+$"
ttl = "300s"

[authorizers.webhooks]
type = "lambda_request"
function = "{request_fn}"
identity_sources = ["header:x-webhook-secret", "path:source"]
ttl = "60s"

[usage_plans.partners]
quota = {{ limit = 2, period = "DAY" }}
"#
    );
    c += &route("POST", "/v1/devices/{id}", "partners", "");
    c += &route("POST", "/v1/other", "partners", "");
    c += &route(
        "POST",
        "/v1/keyed",
        "partners",
        "api_key_required = true\napi_key_source = \"authorizer\"",
    );
    c += &route("POST", "/hooks/{source}", "webhooks", "");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_authorizers_decide_with_api_gateways_events_policies_and_cache() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let stub = support::stub_kinesis().await;
    let (token_fn, request_fn) = (
        support::unique("partner-auth"),
        support::unique("webhook-auth"),
    );
    let project = support::Project::custom(
        "lambda-authz",
        &config(&token_fn, &request_fn),
        &[("record.vtl", TEMPLATE)],
    );
    let dir = project.config.parent().unwrap().to_path_buf();
    let (token_log, request_log) = (dir.join("token.log"), dir.join("request.log"));
    create_function(&endpoint, &token_fn, TOKEN_FUNCTION, &token_log);
    create_function(&endpoint, &request_fn, REQUEST_FUNCTION, &request_log);
    let api_key = project.key("partners");
    let gw = support::Gateway::start_with_env(
        &project.config,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_KINESIS", &stub.endpoint),
        ],
    );
    let (calls, data) = (stub.calls.clone(), stub.data.clone());
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, headers: &[(&str, &str)]| {
            let mut h = vec![("content-type", "application/json")];
            h.extend_from_slice(headers);
            gw.request("POST", path, &h, b"{}")
        };
        let bearer = |t: &str| format!("Bearer {t}");
        let record = || -> Json {
            serde_json::from_str(data.lock().unwrap().last().unwrap()).unwrap()
        };
        let invoked = |log: &Path| events(log).len();

        // 401 without a token, or with one the validation pattern refuses: the function is
        // never asked.
        for (case, headers) in [
            ("no token", vec![]),
            ("an empty token", vec![("authorization", "")]),
            (
                "a token the pattern refuses",
                vec![("authorization", "Bearer not valid!")],
            ),
            ("no Bearer", vec![("authorization", "allow-alice")]),
        ] {
            let r = post("/v1/devices/1", &headers);
            assert_eq!(r.status, 401, "{case}: {}", r.text());
            assert_eq!(r.json(), json!({"message": "Unauthorized"}), "{case}");
        }
        assert_eq!(invoked(&token_log), 0);

        // Allowed: the principal and context reach the template; the event is API
        // Gateway's TOKEN event.
        let alice = bearer("allow-alice");
        let r = post("/v1/devices/1", &[("authorization", &alice)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            record(),
            json!({"principal": "alice", "tenant": "acme", "n": "3", "source": "", "key": ""})
        );
        let e = &events(&token_log)[0];
        assert_eq!(e["type"], "TOKEN");
        assert_eq!(e["authorizationToken"], "Bearer allow-alice");
        let arn = e["methodArn"].as_str().unwrap();
        assert!(
            arn.starts_with("arn:aws:execute-api:us-east-1:000000000000:ingest-gateway/")
                && arn.ends_with("/POST/v1/devices/1"),
            "{arn}"
        );
        // The cached policy serves other paths it covers, and refuses those it does not,
        // without asking again.
        assert_eq!(
            post("/v1/devices/2", &[("authorization", &alice)]).status,
            200
        );
        let r = post("/v1/other", &[("authorization", &alice)]);
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(
            r.json(),
            json!({"Message": "User is not authorized to access this resource"})
        );
        assert_eq!(invoked(&token_log), 1, "one decision, cached");

        // An explicit Deny wins over an Allow of everything.
        let r = post("/v1/devices/secret", &[("authorization", &bearer("deny"))]);
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json(),
            json!({"Message": "User is not authorized to access this resource with an explicit deny"})
        );
        assert_eq!(
            post("/v1/devices/open", &[("authorization", &bearer("deny"))]).status,
            200
        );
        // The function raising Unauthorized: 401. Failing, or answering something that is
        // not a policy: 500 AuthorizerConfigurationException.
        let r = post("/v1/devices/1", &[("authorization", &bearer("unauthorized"))]);
        assert_eq!(r.status, 401, "{}", r.text());
        for t in ["boom", "malformed", "nested"] {
            let r = post("/v1/devices/1", &[("authorization", &bearer(t))]);
            assert_eq!(r.status, 500, "{t}: {}", r.text());
            assert_eq!(r.json(), json!({"message": null}), "{t}");
            assert_eq!(
                r.header("x-amzn-ErrorType"),
                Some("AuthorizerConfigurationException")
            );
        }
        // Failures are not cached: asked again.
        let before = invoked(&token_log);
        post("/v1/devices/1", &[("authorization", &bearer("boom"))]);
        assert_eq!(invoked(&token_log), before + 1);

        // Eight concurrent requests for one new identity share one invocation.
        let before = invoked(&token_log);
        let bob = bearer("allow-bob");
        let statuses = support::concurrently(8, |_| {
            post("/v1/devices/9", &[("authorization", &bob)]).status
        });
        assert_eq!(statuses, vec![200; 8]);
        assert_eq!(invoked(&token_log), before + 1, "single flight");

        // usageIdentifierKey selects the key and its plan (quota 2 a day).
        let keyed = bearer(&format!("key-{api_key}"));
        for _ in 0..2 {
            let r = post("/v1/keyed", &[("authorization", &keyed)]);
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(
                record()["key"].as_str().is_some_and(|k| !k.is_empty()),
                "{}",
                record()
            );
        }
        assert_eq!(post("/v1/keyed", &[("authorization", &keyed)]).status, 429);
        // The x-api-key header is not the key on such a route.
        let r = post(
            "/v1/keyed",
            &[
                ("authorization", &bearer("key-nokey")),
                ("x-api-key", &api_key),
            ],
        );
        assert_eq!(r.status, 403, "{}", r.text());

        // REQUEST: every identity source is required; the event has the request.
        let calls_before = calls.load(Ordering::SeqCst);
        let r = post("/hooks/github", &[]);
        assert_eq!(r.status, 401);
        assert_eq!(invoked(&request_log), 0);
        let r = post("/hooks/github", &[("x-webhook-secret", "wrong")]);
        assert_eq!(r.status, 403);
        assert_eq!(calls.load(Ordering::SeqCst), calls_before, "no upstream call");
        let r = gw.request(
            "POST",
            "/hooks/github?delivery=1&delivery=2",
            &[
                ("content-type", "application/json"),
                ("x-webhook-secret", "s3cret"),
            ],
            b"{}",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(record()["source"], "github");
        assert_eq!(record()["principal"], "github");
        let e = events(&request_log).pop().unwrap();
        assert_eq!(e["type"], "REQUEST");
        assert_eq!(e["resource"], "/hooks/{source}");
        assert_eq!(e["path"], "/hooks/github");
        assert_eq!(e["httpMethod"], "POST");
        assert_eq!(e["headers"]["x-webhook-secret"], "s3cret");
        assert_eq!(e["pathParameters"], json!({"source": "github"}));
        assert_eq!(e["queryStringParameters"], json!({"delivery": "2"}));
        assert_eq!(
            e["multiValueQueryStringParameters"],
            json!({"delivery": ["1", "2"]})
        );
        assert_eq!(e["requestContext"]["resourcePath"], "/hooks/{source}");
        assert_eq!(e["requestContext"]["httpMethod"], "POST");
        assert!(e["requestContext"]["identity"]["sourceIp"].is_string());
        // Cached by the identity sources' values: the same secret and source again.
        let n = invoked(&request_log);
        post("/hooks/github", &[("x-webhook-secret", "s3cret")]);
        assert_eq!(invoked(&request_log), n);

        // Metrics: decisions, cache hits and misses, the function's latency.
        let metrics = gw.request("GET", "/metrics", &[], b"").text();
        for needle in [
            "gateway_authorizer_decisions_total{authorizer=\"partners\",result=\"allowed\"}",
            "gateway_authorizer_decisions_total{authorizer=\"partners\",result=\"denied\"}",
            "gateway_authorizer_cache_total{authorizer=\"partners\",result=\"hit\"}",
            "gateway_authorizer_cache_total{authorizer=\"partners\",result=\"miss\"}",
            "gateway_authorizer_lambda_duration_seconds_count{authorizer=\"webhooks\"}",
        ] {
            assert!(metrics.contains(needle), "{needle}");
        }
        // The access log names the principal, never the token.
        let log = gw.kill();
        assert!(log.contains("\"principal\":\"alice\""), "{log}");
        assert!(!log.contains("allow-alice\""), "the token is not logged");
    })
    .await
    .unwrap();
}

/// An API Gateway export (Swagger 2.0, as `aws apigateway get-export` writes it) with a
/// Cognito user pool, a TOKEN and a REQUEST authorizer.
fn export(pool_arn: &str, token_fn: &str, request_fn: &str) -> Json {
    let uri = |f: &str| {
        format!(
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:{f}/invocations"
        )
    };
    let op = |scheme: &str| {
        json!({
            "security": [{scheme: []}],
            "responses": {"200": {"description": "200 response"}},
            "x-amazon-apigateway-integration": {
                "type": "aws",
                "httpMethod": "POST",
                "uri": "arn:aws:apigateway:us-east-1:kinesis:action/PutRecords",
                "requestTemplates": {"application/json": TEMPLATE},
                "responses": {"default": {"statusCode": "200"}},
            },
        })
    };
    json!({
        "swagger": "2.0",
        "info": {"title": "partner-ingest", "version": "2026-12-01"},
        "basePath": "/prod",
        "paths": {
            "/users": {"post": op("CognitoAuth")},
            "/partners/{id}": {"post": op("PartnerAuth")},
            "/hooks/{source}": {"post": op("HookAuth")},
        },
        "securityDefinitions": {
            "CognitoAuth": {
                "type": "apiKey", "name": "Authorization", "in": "header",
                "x-amazon-apigateway-authtype": "cognito_user_pools",
                "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools", "providerARNs": [pool_arn]},
            },
            "PartnerAuth": {
                "type": "apiKey", "name": "Authorization", "in": "header",
                "x-amazon-apigateway-authtype": "custom",
                "x-amazon-apigateway-authorizer": {
                    "type": "token", "authorizerUri": uri(token_fn),
                    "authorizerResultTtlInSeconds": 300,
                    "identityValidationExpression": "^Bearer [-0-9a-zA-Z._~]+$",
                },
            },
            "HookAuth": {
                "type": "apiKey", "name": "Unused", "in": "header",
                "x-amazon-apigateway-authtype": "custom",
                "x-amazon-apigateway-authorizer": {
                    "type": "request", "authorizerUri": uri(request_fn),
                    "authorizerResultTtlInSeconds": 60,
                    "identitySource": "method.request.header.x-webhook-secret, method.request.path.source",
                },
            },
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_export_with_every_authorizer_kind_serves_end_to_end() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let user = support::cognito_user(&endpoint);
    let pool_arn = format!(
        "arn:aws:cognito-idp:us-east-1:000000000000:userpool/{}",
        user["pool"].as_str().unwrap()
    );
    let (token_fn, request_fn) = (
        support::unique("export-partner-auth"),
        support::unique("export-webhook-auth"),
    );
    let dir = std::env::temp_dir().join(support::unique("ingest-gateway-export-authz-"));
    std::fs::create_dir_all(&dir).unwrap();
    create_function(&endpoint, &token_fn, TOKEN_FUNCTION, &dir.join("token.log"));
    create_function(
        &endpoint,
        &request_fn,
        REQUEST_FUNCTION,
        &dir.join("request.log"),
    );
    let file = dir.join("export.json");
    std::fs::write(&file, export(&pool_arn, &token_fn, &request_fn).to_string()).unwrap();
    let out = std::process::Command::new(support::bin())
        .arg("import-openapi")
        .arg(&file)
        .arg("--out")
        .arg(dir.join("imported"))
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("3 routes"), "{report}");
    assert!(
        report.contains("everything in the document was translated"),
        "{report}"
    );
    let config = dir.join("imported/gateway.toml");
    let stub = support::stub_kinesis().await;
    let gw = support::Gateway::start_with_env(
        &config,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_KINESIS", &stub.endpoint),
        ],
    );
    let data = stub.data.clone();
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, headers: &[(&str, &str)]| {
            let mut h = vec![("content-type", "application/json")];
            h.extend_from_slice(headers);
            gw.request("POST", path, &h, b"{}")
        };
        let record =
            || -> Json { serde_json::from_str(data.lock().unwrap().last().unwrap()).unwrap() };
        // Cognito: the pool's id token.
        assert_eq!(post("/users", &[]).status, 401);
        let r = post("/users", &[("authorization", user["id"].as_str().unwrap())]);
        assert_eq!(r.status, 200, "{}", r.text());
        // TOKEN.
        assert_eq!(
            post("/partners/1", &[("authorization", "Bearer nope!")]).status,
            401
        );
        let r = post("/partners/1", &[("authorization", "Bearer allow-carol")]);
        assert_eq!(
            r.status,
            403,
            "the policy allows /v1/devices/* only: {}",
            r.text()
        );
        let r = post("/partners/1", &[("authorization", "Bearer key-anything")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(record()["principal"], "keyed");
        // REQUEST.
        assert_eq!(post("/hooks/github", &[]).status, 401);
        let r = post("/hooks/github", &[("x-webhook-secret", "s3cret")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(record()["source"], "github");
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}
