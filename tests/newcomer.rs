//! The first hour with the gateway: the README's example block works pasted as it is, and
//! the answers a newcomer meets first say what to do.

mod support;

use std::process::Command;

use serde_json::json;

/// The README's block of example commands, the one that follows "With `scripts/dev`
/// running".
fn readme_block() -> String {
    let readme = std::fs::read_to_string(support::repo().join("README.md")).unwrap();
    let after = readme
        .split_once("With `scripts/dev` running")
        .expect("the README's example block")
        .1;
    let block = after.split_once("```sh\n").unwrap().1;
    block.split_once("\n```").unwrap().0.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_block_works_as_pasted() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let p = support::Project::new("readme");
    p.provision();
    let gw = support::Gateway::start_with_env(
        &p.config,
        &[("AWS_ENDPOINT_URL", &endpoint), ("RUST_LOG", "error")],
    );
    // `bin/ingest-gateway` as the checkout has it, beside this copy of the configuration.
    std::fs::create_dir_all(p.dir.join("bin")).unwrap();
    std::os::unix::fs::symlink(support::bin(), p.dir.join("bin/ingest-gateway")).unwrap();
    // Only the port differs from what scripts/dev serves.
    let block = readme_block().replace("localhost:8080", &gw.addr);
    let addr = gw.addr.clone();
    let dir = p.dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON answer per curl, none of them an error.
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(answers.len(), 5, "{stdout}");
    for a in &answers {
        assert!(a.get("message").is_none(), "an error from {addr}: {a}");
    }
    assert_eq!(answers[0]["FailedRecordCount"], 0, "{stdout}");
    assert_eq!(answers[1]["FailedRecordCount"], 0, "{stdout}");
    assert!(
        answers[2]["SendMessageResponse"]["SendMessageResult"]["MessageId"].is_string(),
        "{stdout}"
    );
    assert!(answers[3]["executionArn"].is_string(), "{stdout}");
    assert!(answers[4]["quote"].is_object(), "{stdout}");
    gw.stop_cleanly();
}

const CONFIG: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
passthrough = "never"
max_body_bytes = 2048
batch = { linger = "5ms" }
"#;

const TEMPLATE: &str = r#"{"StreamName": "s", "Records": [{"Data": "$util.base64Encode($input.json('$'))", "PartitionKey": "k"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_answers_say_what_to_do_and_metrics_name_the_route() {
    let stub = support::stub_kinesis().await;
    let p = support::Project::custom("first-answers", CONFIG, &[("records.vtl", TEMPLATE)]);
    let gw = support::Gateway::start_against(&p.config, &stub.endpoint);
    // curl -d without a content type: 415, naming what the route takes.
    let r = gw.request(
        "POST",
        "/v1/events",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"{}",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"message": "Unsupported Media Type", "acceptedContentTypes": ["application/json"]})
    );
    for _ in 0..5 {
        assert_eq!(gw.post_json("/v1/events", r#"{"a": 1}"#).status, 200);
    }
    // Too large for this route: counted under the route, not as unmatched.
    let big = json!({"pad": "x".repeat(4096)}).to_string();
    assert_eq!(gw.post_json("/v1/events", &big).status, 413);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    let line = |start: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start}:\n{metrics}"))
            .to_string()
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total{")
                && l.contains("route=\"POST /v1/events\"")
                && l.contains("status=\"413\"")),
        "{metrics}"
    );
    assert!(
        line("gateway_batch_queue_depth{route=\"POST /v1/events\"}").ends_with(" 0"),
        "an idle queue is empty:\n{metrics}"
    );
    gw.stop_cleanly();
}

/// A gateway started before its upstreams exist says so at once: a warning naming each
/// missing target and the endpoint, `gateway_upstream_ready` at 0, and (with
/// `server.require_upstreams`) `/readyz` failing with the list, until they are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_upstreams_are_named_at_start_and_keep_readyz_failing() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let p = support::Project::new("upstreams");
    let text = std::fs::read_to_string(&p.config).unwrap();
    std::fs::write(
        &p.config,
        text.replacen("[server]\n", "[server]\nrequire_upstreams = true\n", 1),
    )
    .unwrap();
    let gw = support::Gateway::start_with_env(&p.config, &[("AWS_ENDPOINT_URL", &endpoint)]);
    let stream = p.name("clickstream-events");
    let readyz = || gw.request("GET", "/readyz", &[], b"");
    let unready = support::eventually(10, || async {
        let r = readyz();
        (r.status == 503 && r.text().contains(&stream)).then(|| r.text())
    })
    .await
    .expect("/readyz names the missing stream");
    assert!(unready.contains("POST /v1/events"), "{unready}");
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("gateway_upstream_ready{route=\"POST /v1/events\"} 0"),
        "{metrics}"
    );
    // Created now: ready at the next check.
    p.provision();
    let ready = support::eventually(25, || async { (readyz().status == 200).then_some(()) }).await;
    assert!(ready.is_some(), "{}", readyz().text());
    let (_, log) = gw.stop();
    assert!(
        log.contains("missing or unreachable") && log.contains(&stream) && log.contains(&endpoint),
        "{log}"
    );
}

/// `check-config` reports every problem of a run once: an unknown field and a missing
/// template do not hide a syntax error in another, a template two routes use is reported once, and an error on
/// the last line points at it, with a caret.
#[test]
fn check_config_reports_every_problem_once_with_a_caret() {
    let route = |path: &str, template: &str| {
        format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"{path}\"\naction = \"kinesis:PutRecords\"\ntarget = \"s\"\nrequest_templates = {{ \"application/json\" = \"{template}\" }}\n"
        )
    };
    let config = format!(
        "{}{}targett = \"x\"\n{}{}timeout = \"soon\"\n",
        route("/a", "missing.vtl"),
        route("/b", "broken.vtl"),
        route("/c", "broken.vtl"),
        route("/d", "fine.vtl"),
    );
    let p = support::Project::custom(
        "check-all",
        &config,
        &[("broken.vtl", "#if($x)\nno end"), ("fine.vtl", "{}")],
    );
    let out = p.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("missing.vtl does not exist"), "{err}");
    assert!(
        err.contains("gateway.toml:13:1: unknown field `targett` in routes[1]"),
        "{err}"
    );
    assert_eq!(
        err.matches("broken.vtl:").count(),
        1,
        "reported once:\n{err}"
    );
    let last_line = config.lines().count();
    assert!(
        err.contains(&format!("gateway.toml:{last_line}:")),
        "the last line, not the one after it:\n{err}"
    );
    assert!(
        err.contains("  timeout = \"soon\"\n  "),
        "the line, then a caret:\n{err}"
    );
    assert!(err.contains("4 problems"), "{err}");
}
