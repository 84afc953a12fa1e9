//! JWT and Cognito authorizers through the real binary: a local issuer the test controls
//! (its JWKS served by the test, rotated, counted) for algorithms, claims and hostile
//! tokens, and the emulator's Cognito user pools for real id and access tokens. The
//! upstream is the stub Kinesis (which counts calls: refused requests make none) or, for
//! Cognito, the emulator.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value as Json, json};

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Json,
}

impl Key {
    fn ec(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw[0], 4, "an uncompressed point");
        Key {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
        }
    }

    fn rsa(kid: &str) -> Key {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        use rcgen::PublicKeyData as _;
        use x509_parser::prelude::FromDer as _;
        let spki = pair.subject_public_key_info();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.parsed() else {
            panic!("an RSA key")
        };
        let strip = |b: &[u8]| {
            b.iter()
                .skip_while(|x| **x == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        Key {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&strip(rsa.modulus)), "e": b64(&strip(rsa.exponent))}),
        }
    }

    fn sign(&self, claims: &Json) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The test's issuer: its OpenID configuration and JWKS, with fetches counted.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Json>>>,
    fetches: Arc<AtomicUsize>,
}

async fn issuer() -> Issuer {
    let keys: Arc<Mutex<Vec<Json>>> = Arc::default();
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (k, f, u) = (keys.clone(), fetches.clone(), url.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let u = u.clone();
                async move { axum::Json(json!({"issuer": u, "jwks_uri": format!("{u}/keys.json")})) }
            }),
        )
        .route(
            "/keys.json",
            axum::routing::get(move || {
                let (k, f) = (k.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let keys = k.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Issuer { url, keys, fetches }
}

const TEMPLATE: &str = r#"#set($q = '"')
#set($data = "{${q}sub${q}: ${q}$context.authorizer.claims.sub${q}, ${q}principal${q}: ${q}$context.authorizer.principalId${q}, ${q}n${q}: ${q}$context.authorizer.claims.n${q}}")
{"StreamName": "auth-stream", "Records": [{"Data": "$util.base64Encode($data)", "PartitionKey": "pk"}]}
"#;

fn config(issuer: &str) -> String {
    format!(
        r#"
[authorizers.users]
type = "jwt"
issuer = "{issuer}"
audiences = ["app-client"]

[authorizers.cookies]
type = "jwt"
issuer = "{issuer}"
jwks_url = "{issuer}/keys.json"
identity_source = "cookie:session"

[usage_plans.apps]

[[routes]]
method = "POST"
path = "/v1/events"
authorizer = "users"
scopes = ["telemetry/write"]
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}

[[routes]]
method = "POST"
path = "/v1/both"
authorizer = "users"
api_key_required = true
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}

[[routes]]
method = "POST"
path = "/v1/cookie"
authorizer = "cookies"
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_verified_and_hostile_ones_refused_without_an_upstream_call() {
    let stub = support::stub_kinesis().await;
    let iss = issuer().await;
    let ec = Key::ec("ec-1");
    let rsa = Key::rsa("rsa-1");
    iss.keys
        .lock()
        .unwrap()
        .extend([ec.jwk.clone(), rsa.jwk.clone()]);
    let project = support::Project::custom("authz", &config(&iss.url), &[("record.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let api_key = project.key("apps");
    let good = json!({"iss": iss.url, "sub": "user-1", "aud": "app-client", "exp": now() + 600,
        "iat": now(), "scope": "openid telemetry/write", "n": 5});
    let (calls, data) = (stub.calls.clone(), stub.data.clone());
    let fetches = iss.fetches.clone();
    let keys = iss.keys.clone();
    let url = iss.url.clone();
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, auth: Option<&str>, extra: &[(&str, &str)]| {
            let mut h = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            h.extend_from_slice(extra);
            gw.request("POST", path, &h, b"{}")
        };
        let unauthorized = |r: &support::Response, case: &str| {
            assert_eq!(r.status, 401, "{case}: {}", r.text());
            assert_eq!(r.json(), json!({"message": "Unauthorized"}), "{case}");
            assert_eq!(r.header("x-amzn-ErrorType"), Some("UnauthorizedException"));
        };

        // ES256 and RS256, with and without "Bearer ": the claims reach the template.
        let t = ec.sign(&good);
        let r = post("/v1/events", Some(&format!("Bearer {t}")), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let record: Json = serde_json::from_str(data.lock().unwrap().last().unwrap()).unwrap();
        assert_eq!(
            record,
            json!({"sub": "user-1", "principal": "user-1", "n": "5"})
        );
        let rs256 = rsa.sign(&good);
        assert_eq!(post("/v1/events", Some(&rs256), &[]).status, 200);
        // The same token again: from the verified-token cache; one byte changed: not.
        assert_eq!(post("/v1/events", Some(&rs256), &[]).status, 200);
        let mut flipped = rs256.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(post("/v1/events", Some(&flipped), &[]).status, 401);
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "the keys are fetched once, then cached"
        );
        // An access token: no aud, the client in client_id; scopes as scp.
        let access = json!({"iss": url, "sub": "user-2", "client_id": "app-client",
            "exp": now() + 600, "scp": ["telemetry/write"]});
        assert_eq!(post("/v1/events", Some(&ec.sign(&access)), &[]).status, 200);
        // The cookie source.
        let cookie = format!("theme=dark; session={}", ec.sign(&good));
        assert_eq!(post("/v1/cookie", None, &[("cookie", &cookie)]).status, 200);
        let before = calls.load(Ordering::SeqCst);

        // Claims that do not hold.
        let with = |k: &str, v: Json| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        for (case, claims) in [
            ("expired", with("exp", json!(now() - 120))),
            ("not yet valid", with("nbf", json!(now() + 600))),
            ("issued in the future", with("iat", json!(now() + 600))),
            ("another issuer", with("iss", json!("https://evil.example"))),
            ("another audience", with("aud", json!("someone-else"))),
            ("no exp", {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
        ] {
            unauthorized(&post("/v1/events", Some(&ec.sign(&claims)), &[]), case);
        }
        // Hostile tokens.
        let header = |h: Json| b64(h.to_string().as_bytes());
        let payload = b64(good.to_string().as_bytes());
        let t = ec.sign(&good);
        let sig = t.rsplit('.').next().unwrap().to_string();
        let hs256_with_public_key = {
            let pem = rsa.jwk.to_string();
            jsonwebtoken::encode(
                &Header {
                    kid: Some("rsa-1".into()),
                    ..Header::new(Algorithm::HS256)
                },
                &good,
                &EncodingKey::from_secret(pem.as_bytes()),
            )
            .unwrap()
        };
        let tampered = {
            let other = with("sub", json!("admin"));
            let parts: Vec<&str> = t.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                b64(other.to_string().as_bytes()),
                parts[2]
            )
        };
        let huge = format!(
            "{}.{}.{sig}",
            header(json!({"alg": "ES256", "kid": "ec-1"})),
            "A".repeat(17_000)
        );
        for (case, token) in [
            (
                "alg none",
                format!(
                    "{}.{payload}.",
                    header(json!({"alg": "none", "kid": "ec-1"}))
                ),
            ),
            ("HS256 with the public key as secret", hs256_with_public_key),
            ("a tampered payload", tampered),
            (
                "two segments",
                format!("{}.{payload}", header(json!({"alg": "ES256"}))),
            ),
            ("not base64", "!!!.???.***".to_string()),
            ("an empty token", "Bearer ".to_string()),
            ("the RSA key's kid on an EC signature", {
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some("rsa-1".into());
                jsonwebtoken::encode(&h, &good, &ec.encoding).unwrap()
            }),
        ] {
            unauthorized(&post("/v1/events", Some(&token), &[]), case);
        }
        unauthorized(&post("/v1/events", None, &[]), "no token");
        // A token larger than a request head may be (16 KiB) is refused with the head.
        assert_eq!(
            post("/v1/events", Some(&huge), &[]).status,
            431,
            "oversized"
        );
        // A valid token without the route's scope: 403.
        let r = post(
            "/v1/events",
            Some(&ec.sign(&with("scope", json!("openid")))),
            &[],
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json(), json!({"message": "Forbidden"}));
        // Authorizer and key: the authorizer first (401 without a token, key or no key),
        // then the key (403 without one).
        unauthorized(
            &post("/v1/both", None, &[("x-api-key", &api_key)]),
            "both, no token",
        );
        assert_eq!(post("/v1/both", Some(&ec.sign(&good)), &[]).status, 403);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "no upstream call for any refusal"
        );
        let r = post(
            "/v1/both",
            Some(&ec.sign(&good)),
            &[("x-api-key", &api_key)],
        );
        assert_eq!(r.status, 200, "{}", r.text());

        // A flood of made-up kids costs at most one fetch per interval.
        let fetched = fetches.load(Ordering::SeqCst);
        for i in 0..50 {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(format!("random-{i}"));
            let t = jsonwebtoken::encode(&h, &good, &ec.encoding).unwrap();
            unauthorized(&post("/v1/events", Some(&t), &[]), "unknown kid");
        }
        assert!(
            fetches.load(Ordering::SeqCst) <= fetched + 1,
            "{} fetches for 50 unknown kids",
            fetches.load(Ordering::SeqCst) - fetched
        );
        // A key the issuer rotates in is found (after the refetch interval), no restart.
        let ec2 = Key::ec("ec-2");
        keys.lock().unwrap().push(ec2.jwk.clone());
        std::thread::sleep(Duration::from_millis(10_200));
        let r = post("/v1/events", Some(&ec2.sign(&good)), &[]);
        assert_eq!(r.status, 200, "the rotated-in key: {}", r.text());
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_by_claim_count_each_tenant_exactly_and_usage_reports_them() {
    let stub = support::stub_kinesis().await;
    let iss = issuer().await;
    let ec = Key::ec("ec-1");
    iss.keys.lock().unwrap().push(ec.jwk.clone());
    let config = format!(
        r#"
[authorizers.users]
type = "jwt"
issuer = "{}"

[usage_plans.tenants]
identity = "claim:tenant"
quota = {{ limit = 5, period = "DAY" }}

[usage_plans.people]
identity = "principal"
throttle = {{ rate = 0.001, burst = 2 }}
routes = ["POST /v1/people"]

[[routes]]
method = "POST"
path = "/v1/events"
authorizer = "users"
rate_limit_headers = true
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}

[[routes]]
method = "POST"
path = "/v1/people"
authorizer = "users"
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}
"#,
        iss.url
    );
    let project = support::Project::custom("authz-plans", &config, &[("record.vtl", TEMPLATE)]);
    // `tenants` covers every route with an authorizer but the one `people` names.
    let out = project.cli(&["check-config"]);
    assert!(
        !out.status.success(),
        "two plans by identity on one route are refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("all count its principals"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = config.replace(
        "quota = { limit = 5, period = \"DAY\" }",
        "quota = { limit = 5, period = \"DAY\" }\nroutes = [\"POST /v1/events\"]",
    );
    std::fs::write(&project.config, &config).unwrap();
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let token = |sub: &str, tenant: Option<&str>| {
        let mut c = json!({"iss": iss.url, "sub": sub, "exp": now() + 600});
        if let Some(t) = tenant {
            c["tenant"] = json!(t);
        }
        ec.sign(&c)
    };
    let (acme_1, acme_2, globex, none) = (
        token("u1", Some("acme")),
        token("u2", Some("acme")),
        token("u3", Some("globex")),
        token("u4", None),
    );
    let calls = stub.calls.clone();
    let project_dir = project.config.clone();
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, t: &str| {
            gw.request(
                "POST",
                path,
                &[("content-type", "application/json"), ("authorization", t)],
                b"{}",
            )
        };
        // Two users of one tenant share its quota of 5, exactly.
        for i in 0..5 {
            let t = if i % 2 == 0 { &acme_1 } else { &acme_2 };
            let r = post("/v1/events", t);
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            assert_eq!(
                r.header("x-ratelimit-remaining"),
                Some((4 - i).to_string().as_str())
            );
        }
        let before = calls.load(Ordering::SeqCst);
        let r = post("/v1/events", &acme_2);
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.json(), json!({"message": "Limit Exceeded"}));
        assert_eq!(calls.load(Ordering::SeqCst), before, "no upstream call");
        // Another tenant has its own.
        assert_eq!(post("/v1/events", &globex).status, 200);
        // A token without the claim cannot be counted: refused.
        assert_eq!(post("/v1/events", &none).status, 403);
        // Per principal: each user has its own burst of 2.
        for t in [&acme_1, &acme_1] {
            assert_eq!(post("/v1/people", t).status, 200);
        }
        let r = post("/v1/people", &acme_1);
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").is_some());
        assert_eq!(post("/v1/people", &acme_2).status, 200);
        gw.stop_cleanly();
    })
    .await
    .unwrap();
    // The counts were flushed to the store at shutdown; `usage` names each tenant.
    let _ = project_dir;
    let out = project.cli(&["usage"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let count = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(count("tenants/acme").as_deref(), Some("5"), "{text}");
    assert_eq!(count("tenants/globex").as_deref(), Some("1"), "{text}");
}

#[test]
fn check_config_reports_authorizers_that_cannot_work() {
    let config = r#"
[authorizers.a]
type = "jwt"
[authorizers.b]
type = "cognito_user_pools"
user_pools = ["us-east-1_AbC123"]
[authorizers.c]
type = "lambda_token"
[authorizers.e]
type = "lambda_request"
function = "hooks"
[authorizers.f]
type = "lambda_token"
function = "partner-auth"
validation_regex = "(unclosed"
ttl = "2h"
[usage_plans.by_tenant]
identity = "claim:tenant"
routes = ["POST /v1/y"]
[usage_plans.by_nothing]
identity = "email"
[authorizers.d]
type = "jwt"
issuer = "https://issuer.example"
identity_source = "body:token"
[[routes]]
method = "POST"
path = "/v1/x"
authorizer = "nobody"
action = "kinesis:PutRecords"
target = "s"
[[routes]]
method = "POST"
path = "/v1/y"
scopes = ["a/b"]
action = "kinesis:PutRecords"
target = "s"
[[routes]]
method = "POST"
path = "/v1/z"
authorizer = "f"
scopes = ["a/b"]
api_key_source = "authorizer"
action = "kinesis:PutRecords"
target = "s"
"#;
    let project = support::Project::custom("authz-check", config, &[]);
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "authorizer a: a jwt authorizer needs issuer",
        "\"us-east-1_AbC123\" is not a user pool ARN",
        "authorizer c: a Lambda authorizer needs function",
        "authorizer e: a cached REQUEST authorizer needs identity_sources",
        "authorizer f: validation_regex",
        "authorizer f: ttl is at most 3600s",
        "route POST /v1/z: api_key_source = \"authorizer\" needs a Lambda authorizer and api_key_required = true",
        "route POST /v1/z: scopes apply to JWT and Cognito authorizers",
        "usage plan by_tenant: route POST /v1/y has no authorizer",
        "usage plan by_nothing: identity \"email\"",
        "identity_source \"body:token\"",
        "no authorizer \"nobody\"",
        "scopes need an authorizer",
    ] {
        assert!(err.contains(expected), "{expected}:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_user_pool_tokens_are_accepted_from_the_emulator() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let user = support::cognito_user(&endpoint);
    let pool = user["pool"].as_str().unwrap();
    let stub = support::stub_kinesis().await;
    let config = format!(
        r#"
[authorizers.cognito]
type = "cognito_user_pools"
user_pools = ["arn:aws:cognito-idp:us-east-1:000000000000:userpool/{pool}"]

[[routes]]
method = "POST"
path = "/v1/events"
authorizer = "cognito"
action = "kinesis:PutRecords"
target = "auth-stream"
request_templates = {{ "application/json" = "record.vtl" }}
batch = {{ linger = "1ms" }}
"#
    );
    let project = support::Project::custom("authz-cognito", &config, &[("record.vtl", TEMPLATE)]);
    // The pool's keys come from the emulator (the endpoint override); the stub takes records.
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
    let data = stub.data.clone();
    tokio::task::spawn_blocking(move || {
        for kind in ["id", "access"] {
            let token = user[kind].as_str().unwrap();
            let r = gw.request(
                "POST",
                "/v1/events",
                &[
                    ("content-type", "application/json"),
                    ("authorization", token),
                ],
                b"{}",
            );
            assert_eq!(r.status, 200, "{kind} token: {}", r.text());
            let record: Json = serde_json::from_str(data.lock().unwrap().last().unwrap()).unwrap();
            assert!(
                record["sub"].as_str().is_some_and(|s| !s.is_empty()),
                "{record}"
            );
            assert_eq!(record["sub"], record["principal"]);
        }
        // The id token with its payload changed is refused.
        let id = user["id"].as_str().unwrap();
        let parts: Vec<&str> = id.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"admin"}"#), parts[2]);
        let r = gw.request("POST", "/v1/events", &[("authorization", &forged)], b"{}");
        assert_eq!(r.status, 401);
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}
