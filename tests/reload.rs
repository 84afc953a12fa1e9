//! Configuration reload without a restart, on the real binary under load: a route added and
//! a template changed take effect, a broken file is refused with its location while the old
//! configuration keeps serving, and no request fails nor any batched record is lost or sent
//! twice across the reloads.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Gateway, Project};

const TEMPLATE: &str = r#"{"Records": [{"Data": "$util.base64Encode("v1 $input.path('$.pk')")", "PartitionKey": "$input.path('$.pk')"}]}"#;

fn config(admin: &str, with_other_route: bool) -> String {
    let mut text = format!(
        r#"[server]
admin_listen = "{admin}"

[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "events"
request_templates = {{ "application/json" = "records.vtl" }}
batch = {{ linger = "20ms" }}
"#
    );
    if with_other_route {
        text.push_str(
            r#"
[[routes]]
method = "POST"
path = "/v1/other"
action = "kinesis:PutRecords"
target = "events"
request_templates = { "application/json" = "records.vtl" }
"#,
        );
    }
    text
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing_and_refuse_broken_files() {
    let stub = support::stub_kinesis_with_latency(Duration::from_millis(10)).await;
    let admin = free_port();
    let project = Project::custom(
        "reload",
        &config(&admin, false),
        &[("records.vtl", TEMPLATE)],
    );
    let gw = Gateway::start_against(&project.config, &stub.endpoint);
    // API Gateway answers an unknown route 403.
    assert_eq!(gw.post_json("/v1/other", r#"{"pk": "x"}"#).status, 403);

    // Four clients post until told to stop, each event its own key.
    let stop = AtomicBool::new(false);
    let (results, ()) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (gw, stop) = (&gw, &stop);
                s.spawn(move || {
                    let mut sent = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let pk = format!("c{c}-{i}");
                        let r = gw.post_json("/v1/events", &format!(r#"{{"pk": "{pk}"}}"#));
                        sent.push((pk, r.status, r.text()));
                        i += 1;
                    }
                    sent
                })
            })
            .collect();
        let reloads = s.spawn(|| {
            // The clients stop however this ends (a failed assertion included).
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _stop = Stop(&stop);
            // The configuration with both routes, and the template at version `v`.
            let version = |v: u32| {
                std::fs::write(project.config.clone(), config(&admin, true)).unwrap();
                let template = TEMPLATE.replace("v1 ", &format!("v{v} "));
                std::fs::write(project.dir.join("records.vtl"), template).unwrap();
            };
            std::thread::sleep(Duration::from_millis(500));
            // A route added and the template changed, through `ingest-gateway reload`.
            version(2);
            let out = project.cli(&["reload"]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{out:?}");
            assert!(stdout.contains("reloaded: 2 routes, 1 kept"), "{stdout}");
            let r = gw.post_json("/v1/other", r#"{"pk": "other-1"}"#);
            assert_eq!(r.status, 200, "the added route serves: {}", r.text());
            std::thread::sleep(Duration::from_millis(300));

            // A broken template: refused, with where it is broken; the old one serves on.
            std::fs::write(project.dir.join("records.vtl"), "#if($input.path('$.pk')\n").unwrap();
            let out = project.cli(&["reload"]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!out.status.success(), "{out:?}");
            assert!(stderr.contains("not reloaded"), "{stderr}");
            assert!(
                stderr.contains("records.vtl:2:1: syntax error"),
                "the location: {stderr}"
            );
            assert_eq!(stderr.matches("syntax error").count(), 1, "once: {stderr}");
            // A configuration file that does not parse, the same.
            std::fs::write(project.config.clone(), "[[routes]\n").unwrap();
            assert!(!project.cli(&["reload"]).status.success());
            std::thread::sleep(Duration::from_millis(300));

            // Fixed again, and reloaded with SIGHUP.
            version(3);
            gw.hangup();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                let r = gw.post_json("/v1/other", r#"{"pk": "probe"}"#);
                assert_eq!(r.status, 200, "{}", r.text());
                if stub
                    .data
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|d| d.starts_with("v3 "))
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(300));
        });
        let results: Vec<_> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        reloads.join().unwrap();
        (results, ())
    });

    let failed: Vec<_> = results
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "no request fails because of a reload: {failed:?}"
    );
    assert!(
        results.len() > 100,
        "under load: {} requests",
        results.len()
    );
    // Every acknowledged event reached the stream exactly once.
    let accepted = stub.accepted.lock().unwrap().clone();
    let events: Vec<&String> = accepted.iter().filter(|pk| pk.starts_with('c')).collect();
    let unique: HashSet<&String> = events.iter().copied().collect();
    assert_eq!(unique.len(), events.len(), "no event sent twice");
    let sent: HashSet<&String> = results.iter().map(|(pk, _, _)| pk).collect();
    assert_eq!(unique, sent, "every acknowledged event delivered");
    // Each configuration's template rendered the events it served.
    let data = stub.data.lock().unwrap().clone();
    for v in 1..=3 {
        assert!(
            data.iter().any(|d| d.starts_with(&format!("v{v} "))),
            "version {v} of the template served"
        );
    }
    gw.stop_cleanly();
}

/// A replaced configuration is let go once its last request is answered (its batchers of
/// removed routes stop, their spools unlock), and no reload starts once shutdown has begun.
#[tokio::test]
async fn a_replaced_configuration_is_let_go_and_shutdown_stops_reloads() {
    use ingest_gateway::{auth, config, integrations, pipeline, server};
    use tower::ServiceExt as _;

    let stub = support::stub_kinesis().await;
    let project = Project::custom(
        "reload-drop",
        &config("127.0.0.1:1", false),
        &[("records.vtl", TEMPLATE)],
    );
    let loaded = config::load(&project.config).unwrap();
    let sdk = support::aws(&stub.endpoint).await;
    let clients = integrations::Clients::from_sdk_config(&sdk, true);
    let auth = std::sync::Arc::new(pipeline::authorizer(
        &loaded,
        auth::Snapshot::default(),
        vec![],
    ));
    let compiled = pipeline::compile_templates(&loaded).unwrap();
    let gw = pipeline::Gateway::new(loaded, compiled, clients, auth).unwrap();
    let live = pipeline::Live::new(std::sync::Arc::new(gw), Some(project.config.clone()));
    let first = std::sync::Arc::downgrade(&live.load());
    let app = server::live_app(live.clone());
    let status = |path: &'static str| {
        let req = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"pk": "a"}"#))
            .unwrap();
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/v1/events").await, 200);

    // The batched route replaced by another: nothing carries over.
    let moved = config("127.0.0.1:1", false).replace("/v1/events", "/v2/events");
    std::fs::write(&project.config, moved).unwrap();
    let reloaded = live.reload().await.unwrap();
    assert_eq!((reloaded.routes, reloaded.kept), (1, 0));
    assert_eq!(status("/v1/events").await, 403);
    assert_eq!(status("/v2/events").await, 200);
    let dropped = support::eventually(5, || async { first.upgrade().is_none().then_some(()) });
    assert!(dropped.await.is_some(), "the first configuration is let go");

    // A change of the listener's own settings waits for a restart, and says so.
    let restart = config("127.0.0.1:2", false).replace("/v1/events", "/v2/events");
    std::fs::write(&project.config, restart).unwrap();
    let reloaded = live.reload().await.unwrap();
    assert_eq!(reloaded.kept, 1);
    assert_eq!(reloaded.at_restart, vec!["server.admin_listen"]);

    live.stop();
    let refused = live.reload().await.unwrap_err();
    assert!(refused[0].contains("shutting down"), "{refused:?}");
    let ready = app
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}
