//! `ingest-gateway render` through the real binary: the DESIGN.md contract (exact stdout,
//! errors on stderr with position and caret, exit status 2).

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ingest-gateway"))
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ingest-gateway-render-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Writes `template` and `request` to files and runs `render` on them.
fn render_files(dir: &std::path::Path, template: &str, request: &str) -> Output {
    let (t, r) = (dir.join("case.vtl"), dir.join("case.json"));
    std::fs::write(&t, template).unwrap();
    std::fs::write(&r, request).unwrap();
    run(
        &[
            "render",
            t.to_str().unwrap(),
            "--request",
            r.to_str().unwrap(),
        ],
        None,
    )
}

#[test]
fn renders_exactly_the_template_output() {
    let out = render_files(
        &temp_dir(),
        r#"{"id": $input.json('$.id'), "ip": "$context.identity.sourceIp"}"#,
        r#"{"body": "{\"id\": 7}", "context": {"identity": {"sourceIp": "198.51.100.4"}}, "note": "ignored"}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        r#"{"id": 7, "ip": "198.51.100.4"}"#
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn reads_the_request_from_stdin() {
    let dir = temp_dir();
    let template = dir.join("t.vtl");
    std::fs::write(
        &template,
        "$input.params('h')|$input.params('Content-Type')",
    )
    .unwrap();
    let out = run(
        &[
            "render",
            template.to_str().unwrap(),
            "--request",
            "-",
            "--content-type",
            "text/plain",
        ],
        Some(r#"{"params": {"header": {"h": "v"}}}"#),
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "v|text/plain");
}

#[test]
fn template_errors_show_position_and_caret_with_status_2() {
    let dir = temp_dir();
    let template = dir.join("broken.vtl");
    std::fs::write(&template, "{\n  #if($input.path('$.a'))\n  \"a\": 1\n}").unwrap();
    let out = run(&["render", template.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = format!(
        "{}:2:3: syntax error: #if without a matching #end\n    #if($input.path('$.a'))\n    ^\n",
        template.display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn runtime_errors_show_position_with_status_2() {
    let dir = temp_dir();
    let template = dir.join("loop.vtl");
    std::fs::write(&template, "ok\n#foreach($i in [0..5000])x#end").unwrap();
    let out = run(&["render", template.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(":2:1: loop limit exceeded"), "{stderr}");
}

#[test]
fn unreadable_inputs_are_errors_with_status_2() {
    let dir = temp_dir();
    let missing = run(&["render", dir.join("nope.vtl").to_str().unwrap()], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.vtl"));

    let template = dir.join("t.vtl");
    std::fs::write(&template, "x").unwrap();
    let bad = run(
        &["render", template.to_str().unwrap(), "--request", "-"],
        Some("{not json"),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid request file"));

    std::fs::write(&template, [0xff, 0xfe]).unwrap();
    let binary = run(&["render", template.to_str().unwrap()], None);
    assert_eq!(binary.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&binary.stderr).contains("not valid UTF-8"));
}

/// The compatibility reference's cases through the binary, as an outside tester runs them.
#[test]
fn reference_cases_through_the_binary() {
    let dir = temp_dir();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/apigw-cases.json"
    );
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in cases.as_array().unwrap() {
        let out = render_files(&dir, case["template"].as_str().unwrap(), &case.to_string());
        let name = &case["name"];
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = case["expected"].as_str().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{name}");
    }
}

/// `render --route` renders a route's template as the gateway would: the template for the
/// content type, with the configuration's stage variables; so does a TEMPLATE a route uses.
#[test]
fn a_route_renders_with_its_configuration() {
    let dir = temp_dir();
    let body = dir.join("event.json");
    std::fs::write(&body, r#"{"type": "click", "userId": "u-1"}"#).unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");
    let out = run(
        &[
            "--config",
            config,
            "render",
            "--route",
            "POST /v1/events",
            "--body",
            body.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rendered["StreamName"], "clickstream-events");
    assert_eq!(rendered["Records"][0]["PartitionKey"], "u-1");

    // The template file itself, as a route of the configuration uses it.
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mappings/clickstream-put-records.vtl"
    );
    let request = dir.join("request.json");
    std::fs::write(&request, r#"{"body": "{\"type\": \"view\"}"}"#).unwrap();
    let out = run(
        &[
            "--config",
            config,
            "render",
            template,
            "--request",
            request.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rendered["StreamName"], "clickstream-events");

    // A route that is not there: the routes that are.
    let out = run(
        &["--config", config, "render", "--route", "POST /v2/nothing"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no route") && err.contains("POST /v1/events"),
        "{err}"
    );
    // A content type the route has no template for: the ones it has.
    let out = run(
        &[
            "--config",
            config,
            "render",
            "--route",
            "POST /v1/events",
            "--content-type",
            "application/xml",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("application/json"), "{err}");
}
