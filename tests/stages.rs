//! Stages and canaries through the real binary: one route written once, served under
//! `/{stage}/...` and by host name, each stage with its variables and throttle, a canary's
//! share of requests, metrics by stage and canary, a reload that changes a stage, and the
//! configuration's refusals.

mod support;

use support::{Gateway, Project};

const CONFIG: &str = r#"
[stage_variables]
color = "grey"
shape = "square"

[stages.prod]
stage_variables = { color = "blue" }
hosts = ["api.example.test"]
canary = { percent = 25, stage_variables = { color = "green" } }

[stages.dev]
stage_variables = { color = "red" }
throttle = { rate = 0.01, burst = 2 }

[[routes]]
method = "GET"
path = "/whoami/{id}"
action = "mock"
request_templates = { "application/json" = "mock.vtl" }
passthrough = "when_no_templates"

[[routes.responses]]
status = 200
template = "who.vtl"
"#;

const FILES: [(&str, &str); 2] = [
    ("mock.vtl", r#"{"statusCode": 200}"#),
    (
        "who.vtl",
        r#"{"stage": "$context.stage", "color": "$stageVariables.color", "shape": "$stageVariables.shape", "canary": "$!context.isCanaryRequest", "path": "$context.path", "resource": "$context.resourcePath", "id": "$input.params('id')"}"#,
    ),
];

fn get(gw: &Gateway, path: &str, host: Option<&str>) -> support::Response {
    let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
    gw.request("GET", path, &headers, b"")
}

#[test]
fn stages_serve_one_route_with_their_own_variables_throttles_and_canary() {
    let project = Project::custom("stages", CONFIG, &FILES);
    let gw = Gateway::start(&project.config);

    // The path's first segment picks the stage; the route sees the rest.
    let r = get(&gw, "/dev/whoami/7", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let dev = r.json();
    assert_eq!(dev["stage"], "dev");
    assert_eq!(dev["color"], "red");
    assert_eq!(
        dev["shape"], "square",
        "the file's variables under the stage's"
    );
    assert_eq!(dev["canary"], "", "no canary on dev: no isCanaryRequest");
    assert_eq!(dev["path"], "/dev/whoami/7");
    assert_eq!(dev["resource"], "/whoami/{id}");
    assert_eq!(dev["id"], "7");

    // dev's throttle (burst 2, barely refilling) is dev's own: prod is not throttled.
    assert_eq!(get(&gw, "/dev/whoami/7", None).status, 200);
    let throttled = get(&gw, "/dev/whoami/7", None);
    assert_eq!(throttled.status, 429, "{}", throttled.text());

    // prod: a quarter of its requests on the canary's variables, flagged.
    let n = 2_000;
    let mut canary = 0;
    for i in 0..n {
        let r = get(&gw, &format!("/prod/whoami/{i}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["stage"], "prod");
        match (v["canary"].as_str(), v["color"].as_str()) {
            (Some("true"), Some("green")) => canary += 1,
            (Some("false"), Some("blue")) => {}
            other => panic!("a canary flag and its variables disagree: {other:?}"),
        }
    }
    let share = f64::from(canary) / f64::from(n) * 100.0;
    assert!(
        (21.0..29.0).contains(&share),
        "canary share {share}% (set: 25%)"
    );

    // A host mapped to prod serves it at the root, whatever the port.
    for host in ["api.example.test", "API.example.test:443"] {
        let r = get(&gw, "/whoami/9", Some(host));
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.json()["stage"], "prod");
    }

    // No stage: no route, as API Gateway answers an unknown path.
    for path in ["/whoami/9", "/staging/whoami/9", "/", "/prod"] {
        let r = get(&gw, path, None);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.json()["message"], "Missing Authentication Token");
    }

    // Request metrics by stage and canary.
    let metrics = get(&gw, "/metrics", None).text();
    for labels in [
        r#"stage="prod",canary="true""#,
        r#"stage="prod",canary="false""#,
        r#"stage="dev",canary="false""#,
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("gateway_requests_total") && l.contains(labels)),
            "no request series with {labels}:\n{metrics}"
        );
    }
    gw.stop_cleanly();
}

#[test]
fn a_reload_changes_a_stage_and_adds_one() {
    let project = Project::custom("stages-reload", CONFIG, &FILES);
    let gw = Gateway::start(&project.config);
    assert_eq!(get(&gw, "/dev/whoami/1", None).json()["color"], "red");
    let changed = CONFIG
        .replace(r#"color = "red""#, r#"color = "orange""#)
        .replace(
            "[[routes]]",
            "[stages.test]\nstage_variables = { color = \"white\" }\n\n[[routes]]",
        );
    std::fs::write(&project.config, changed).unwrap();
    gw.hangup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = get(&gw, "/test/whoami/1", None);
        if r.status == 200 {
            assert_eq!(r.json()["color"], "white");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not add stage test"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = get(&gw, "/dev/whoami/1", None);
    assert_eq!(r.json()["color"], "orange", "{}", r.text());
    gw.stop_cleanly();
}

#[test]
fn bad_stages_are_refused_with_their_locations() {
    let bad = CONFIG
        .replace("[stages.dev]", "[stages.\"de v\"]")
        .replace("percent = 25", "percent = 125")
        .replace(
            "[[routes]]",
            "[stages.other]\nhosts = [\"API.example.test\", \"http://x/\"]\n\n[[routes]]",
        );
    let project = Project::custom("stages-bad", &bad, &FILES);
    let out = project.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "stages.de v: a stage name is letters, digits",
        "stages.prod: canary: percent must be from 0 to 100, got 125",
        "host \"api.example.test\" is already stage",
        "stages.other: hosts: \"http://x/\" is not a host name",
    ] {
        assert!(err.contains(expected), "no {expected:?} in:\n{err}");
    }
    assert!(
        err.lines()
            .filter(|l| l.starts_with("stages") || l.contains(": stages"))
            .all(|l| l.contains("gateway.toml:") && l.contains(": stages.")),
        "every error has its location:\n{err}"
    );

    // A stage variable an integration needs, missing in one stage, is that stage's error.
    let missing = r#"
[stages.prod]
stage_variables = { backend = "127.0.0.1:9" }

[stages.dev]

[[routes]]
method = "GET"
path = "/x"
action = "http"
integration = "proxy"
uri = "http://${stageVariables.backend}/x"
"#;
    let project = Project::custom("stages-missing", missing, &[]);
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stages.dev: ") && err.contains("backend") && !err.contains("stages.prod: "),
        "{err}"
    );
}
