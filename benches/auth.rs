//! The cost of API keys: key lookup + throttle + quota per request, next to the cost of the
//! whole request in the same run, and start-up with 100,000 keys.
//!
//! - `authorize/100k_keys`: `Authorizer::authorize` alone, 100,000 keys loaded, a plan with
//!   a throttle and a quota.
//! - `request/keyless` and `request/keyed`: one whole request through the router (body
//!   read, routing, template render, the Kinesis call to a stub upstream on loopback, the
//!   response), on two routes that differ only in `api_key_required`.
//! - `startup/load_100k_keys`: reading 100,000 keys from SQLite into a snapshot.

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
    let keys: Vec<(NewKey, String)> = (0..KEYS)
        .map(|i| {
            let new = NewKey {
                name: format!("k{i}"),
                plan: "bench".into(),
                enabled: true,
                ..NewKey::default()
            };
            (new, key(i))
        })
        .collect();
    store.create_many(&keys, 0).unwrap();
    store
}

fn benches(c: &mut Criterion) {
    let dir =
        std::env::temp_dir().join(format!("ingest-gateway-bench-auth-{}", std::process::id()));
    let store = setup(&dir);
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

criterion_group! {
    name = auth;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(auth);
