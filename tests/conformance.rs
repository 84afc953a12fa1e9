//! Conformance with Amazon API Gateway's template engine.
//!
//! - `apigw-cases.json`: the compatibility reference's cases (`$input`, `$util`, `$context`,
//!   Velocity 1.7 details), rendered through the same code path as `ingest-gateway render`.
//! - `apigw-recorded.json`: templates whose output was recorded on API Gateway itself,
//!   rendered behind the same prelude the recording used.
//!
//! Every failing case is reported, not just the first.

use ingest_gateway::cli::render::{Outcome, render_source};
use serde_json::Value as Json;

fn load(name: &str) -> Json {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn render(template: &str, request: &Json) -> String {
    match render_source("case.vtl", template, request, "application/json").unwrap() {
        Outcome::Rendered(s) => s,
        Outcome::TemplateError(e) => format!("<error: {e}>"),
    }
}

fn report(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_cases() {
    let cases = load("apigw-cases.json");
    let cases = cases.as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let got = render(case["template"].as_str().unwrap(), case);
        let want = case["expected"].as_str().unwrap();
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case["name"]));
        }
    }
    report(&failures, cases.len());
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn recorded_on_api_gateway() {
    let doc = load("apigw-recorded.json");
    let cases = doc["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let vars = case["vars"].as_object().unwrap();
        let defs: Vec<String> = vars
            .keys()
            .map(|k| format!("#set(${k} = $bodyJSON.{k})"))
            .collect();
        let template = format!(
            "#set($body = $input.body)\n#set($bodyJSON = $util.parseJson($body)) {}\n{}",
            defs.join(" "),
            case["template"].as_str().unwrap()
        );
        let request = serde_json::json!({ "body": Json::Object(vars.clone()).to_string() });
        let mut got = render(&template, &request);
        let mut want = case["expected"].as_str().unwrap().to_string();
        if case["normalize_whitespace"] == Json::Bool(true) {
            got = collapse_whitespace(&got);
            want = collapse_whitespace(&want);
        }
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case["name"]));
        }
    }
    report(&failures, cases.len());
}

/// `$context` read as a whole, recorded on API Gateway (see the fixture's `about`): the
/// keys in API Gateway's order, nested maps printed as empty strings, no `authorizer`
/// without an authorizer. Values the recording replaced with placeholders must be there.
#[test]
fn context_as_a_whole_recorded_on_api_gateway() {
    let case = load("apigw-context-recorded.json");
    let out = render(case["template"].as_str().unwrap(), &case["request"]);
    let rendered: Json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut body: Json = serde_json::from_str(rendered["MessageBody"].as_str().unwrap()).unwrap();
    let want = &case["expected_message_body"];
    for section in ["context", "identity"] {
        for key in case["placeholders"].as_array().unwrap() {
            let key = key.as_str().unwrap();
            let Some(recorded) = want[section].get(key) else {
                continue;
            };
            let ours = &mut body[section][key];
            assert!(
                ours.as_str().is_some_and(|s| !s.is_empty()),
                "{section}.{key}: {ours} where API Gateway has a value"
            );
            *ours = recorded.clone();
        }
    }
    // Compared as text: the order of keys is part of what was recorded.
    assert_eq!(body.to_string(), want.to_string());
}
