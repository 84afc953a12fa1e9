//! The cost of API keys: key lookup + throttle + quota per request, next to the cost of the
//! whole request in the same run, and start-up with 100,000 keys.
//!
//! - `authorize/100k_keys`: `Authorizer::authorize` alone, 100,000 keys loaded, a plan with
//!   a throttle and a quota.
//! - `request/keyless` and `request/keyed`: one whole request through the router (body
//!   read, routing, template render, the Kinesis call to a stub upstream on loopback, the
//!   response), on two routes that differ only in `api_key_required`.
//! - `startup/load_100k_keys`: reading 100,000 keys from SQLite into a snapshot.
//! - `authorize/jwt_es256`, `authorize/jwt_rs256`: a JWT authorizer's verification of a
//!   token (keys cached, as after the first request): signature, times, issuer, audience.
//! - `authorize/lambda_token_cached`, `authorize/lambda_request_cached`: a Lambda
//!   authorizer's decision for an identity it has decided before (within its ttl): reading
//!   and checking the identity, hashing it, the cache lookup, and the policy's evaluation
//!   for this request's method ARN. The function is asked once, before measuring.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use ingest_gateway::auth::store::{KeyStore, NewKey};
use ingest_gateway::auth::sync;
use ingest_gateway::config;
use ingest_gateway::integrations::Clients;
use ingest_gateway::pipeline::{self, Gateway};
use ingest_gateway::server;
use tower::ServiceExt;

const KEYS: usize = 100_000;

const CONFIG: &str = r#"
[auth]
key_store = "keys.db"
account_throttle = { rate = 1000000000, burst = 1000000000 }

[usage_plans.bench]
throttle = { rate = 1000000000, burst = 1000000000 }
quota = { limit = 1000000000000, period = "MONTH" }

[[routes]]
method = "POST"
path = "/keyed"
api_key_required = true
action = "kinesis:PutRecord"
target = "s"
request_templates = { "application/json" = "record.vtl" }

[[routes]]
method = "POST"
path = "/keyless"
action = "kinesis:PutRecord"
target = "s"
request_templates = { "application/json" = "record.vtl" }
"#;

const TEMPLATE: &str = r#"{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "$input.path('$.userId')"}"#;

fn key(i: usize) -> String {
    format!("bench-key-{i:030}")
}

/// A Kinesis stand-in that accepts every PutRecord.
async fn stub_upstream() -> String {
    use axum::routing::post;
    let app = axum::Router::new().fallback(post(|| async {
        (
            [("content-type", "application/x-amz-json-1.1")],
            r#"{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}"#,
        )
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn setup(dir: &Path) -> KeyStore {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("record.vtl"), TEMPLATE).unwrap();
    let _ = std::fs::remove_file(dir.join("keys.db"));
    let mut store = KeyStore::open(&dir.join("keys.db")).unwrap();
    let keys: Vec<NewKey> = (0..KEYS)
        .map(|i| NewKey {
            name: format!("k{i}"),
            plan: "bench".into(),
            value: Some(key(i)),
            enabled: true,
            ..NewKey::default()
        })
        .collect();
    for created in store.create_all(&keys, 0).unwrap() {
        created.unwrap();
    }
    store
}

fn benches(c: &mut Criterion) {
    let dir =
        std::env::temp_dir().join(format!("ingest-gateway-bench-auth-{}", std::process::id()));
    let store = ingest_gateway::auth::backend::Backend::Sqlite(setup(&dir));
    let config = config::parse(&dir.join("gateway.toml"), CONFIG, &dir).unwrap();

    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    g.bench_function("load_100k_keys", |b| {
        b.iter(|| sync::load(&store, 0).unwrap().snapshot.len())
    });
    g.finish();

    let loaded = sync::load(&store, 0).unwrap();
    assert_eq!(loaded.snapshot.len(), KEYS);
    let auth = Arc::new(pipeline::authorizer(&config, loaded.snapshot, loaded.usage));
    let now = 1_764_077_930_000;
    let mut i = 0usize;
    c.bench_function("authorize/100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(auth.authorize(0, Some(&key(i)), now).unwrap());
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    jwt_benches(c, &rt);
    lambda_benches(c, &rt);
    let endpoint = rt.block_on(stub_upstream());
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "t", "t", None, None, "bench",
            ))
            .load(),
    );
    let gw = {
        let _runtime = rt.enter();
        Arc::new(
            Gateway::new(
                config.clone(),
                pipeline::compile_templates(&config).unwrap(),
                Clients::from_sdk_config(&sdk, true),
                auth.clone(),
            )
            .expect("the gateway starts"),
        )
    };
    let app = server::app(gw);
    let body = r#"{"userId": "u-1", "type": "click", "ts": 1764077930000, "page": "/home"}"#;
    // Both routes in one loop, alternating, so drift of a shared machine between two
    // benchmark runs cannot pass for the cost of authorization.
    let mut g = c.benchmark_group("request");
    let send = |path: &str, n: usize| {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .header("x-api-key", key(n))
            .body(Body::from(body))
            .unwrap();
        let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
        assert_eq!(resp.status(), 200);
    };
    for (name, first, second) in [
        ("keyless+keyless", "/keyless", "/keyless"),
        ("keyless+keyed", "/keyless", "/keyed"),
    ] {
        let mut n = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                n = (n + 7919) % KEYS;
                send(first, n);
                send(second, n);
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// JWT verification, ES256 and RS256, with the issuer's keys served on loopback and cached
/// by the first verification.
fn jwt_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use base64::Engine as _;
    use ingest_gateway::authorize::jwt::JwtVerifier;
    use ingest_gateway::config::authorizers::{JwtAuthorizer, TokenSource};
    use rcgen::PublicKeyData as _;
    use x509_parser::prelude::FromDer as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let raw = ec.public_key_raw();
    let spki = rsa.subject_public_key_info();
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let Ok(x509_parser::public_key::PublicKey::RSA(pk)) = info.parsed() else {
        panic!("an RSA key")
    };
    let strip = |b: &[u8]| {
        b.iter()
            .skip_while(|x| **x == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    let jwks = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])},
        {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": b64(&strip(pk.modulus)), "e": b64(&strip(pk.exponent))},
    ]});
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/keys.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let verifier = JwtVerifier::new(JwtAuthorizer {
        name: "bench".into(),
        issuers: vec![(issuer.clone(), Some(format!("{issuer}/keys.json")))],
        audiences: vec!["bench-client".into()],
        source: TokenSource::Header("authorization".into()),
        cognito: false,
        user_pools: Vec::new(),
    })
    .unwrap();
    let claims = serde_json::json!({"iss": issuer, "sub": "user-1", "aud": "bench-client",
        "exp": 4_000_000_000u64, "iat": 1_764_077_930u64, "scope": "telemetry/write"});
    for (name, alg, kid, pem) in [
        (
            "authorize/jwt_es256",
            jsonwebtoken::Algorithm::ES256,
            "ec",
            ec.serialize_pem(),
        ),
        (
            "authorize/jwt_rs256",
            jsonwebtoken::Algorithm::RS256,
            "rsa",
            rsa.serialize_pem(),
        ),
    ] {
        let key = match alg {
            jsonwebtoken::Algorithm::ES256 => {
                jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
            }
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        rt.block_on(verifier.verify(&token))
            .expect("the token verifies");
        c.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(verifier.verify(&token)).unwrap()))
        });
    }
}

/// Answers every event with an Allow of the devices' paths (asked once per identity).
struct AllowDevices;

impl ingest_gateway::authorize::lambda::Invoke for AllowDevices {
    fn invoke<'a>(
        &'a self,
        _function: &'a str,
        _payload: Vec<u8>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<ingest_gateway::authorize::lambda::Invoked, String>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async {
            Ok(ingest_gateway::authorize::lambda::Invoked {
                function_error: None,
                payload: serde_json::json!({
                    "principalId": "partner-7",
                    "policyDocument": {"Version": "2012-10-17", "Statement": [
                        {"Effect": "Allow", "Action": "execute-api:Invoke",
                         "Resource": "arn:aws:execute-api:us-east-1:*:*/prod/*/v1/devices/*"}]},
                    "context": {"tenant": "acme"},
                })
                .to_string()
                .into_bytes(),
            })
        })
    }
}

fn lambda_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use ingest_gateway::authorize::lambda::{self, ApiFacts, LambdaVerifier};
    use ingest_gateway::config::authorizers::{
        IdentitySource, LambdaAuthorizer, LambdaKind, TokenSource,
    };
    let api = ApiFacts {
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
        api_id: "ingest-gateway".into(),
        stage: "prod".into(),
        stage_variables: Default::default(),
    };
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "authorization",
        "Bearer partner-7.abcdefghijklmnop".parse().unwrap(),
    );
    headers.insert("x-webhook-secret", "s3cret-s3cret-s3cret".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("user-agent", "bench/1.0".parse().unwrap());
    let req = ingest_gateway::request::Request {
        method: axum::http::Method::POST,
        path: "/v1/devices/42".into(),
        query: Vec::new(),
        headers,
        body: Default::default(),
        source_ip: "192.0.2.1".into(),
        client_ip: "192.0.2.1".parse().unwrap(),
        peer: "192.0.2.1".parse().unwrap(),
        client_cert: None,
        request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef".into(),
        received: std::time::Instant::now(),
        received_epoch_ms: 1_764_077_930_000,
        ws: None,
    };
    let params = vec![("id".to_string(), "42".to_string())];
    for (name, kind) in [
        (
            "authorize/lambda_token_cached",
            LambdaKind::Token {
                source: TokenSource::Header("authorization".into()),
                validation_regex: Some("^Bearer [-0-9a-zA-Z._]+$".into()),
            },
        ),
        (
            "authorize/lambda_request_cached",
            LambdaKind::Request {
                sources: vec![
                    IdentitySource::Header("x-webhook-secret".into()),
                    IdentitySource::Path("id".into()),
                ],
            },
        ),
    ] {
        let v = LambdaVerifier::new(
            LambdaAuthorizer {
                name: "bench".into(),
                function: "partner-auth".into(),
                kind,
                ttl: std::time::Duration::from_secs(300),
            },
            Arc::new(AllowDevices),
            api.clone(),
        )
        .unwrap();
        let decide = || {
            let presented = v.identify(&req, "/v1/devices/{id}", &params).unwrap();
            let event = || v.event(&presented, &req, "/v1/devices/{id}", &params);
            let lambda::Outcome::Decided(d) = rt.block_on(v.decide(presented.key, event)) else {
                panic!("a decision")
            };
            assert_eq!(
                lambda::evaluate(&d.statements, &presented.method_arn),
                lambda::Effect::Allow
            );
            d
        };
        decide();
        c.bench_function(name, |b| b.iter(|| black_box(decide())));
    }
}

criterion_group! {
    name = auth;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(auth);
