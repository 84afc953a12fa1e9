//! Every template shipped in `mappings/` renders against its sample requests in
//! `tests/fixtures/mappings/<template>/`, so a shipped template cannot silently break.

use std::path::Path;

use base64::Engine as _;
use ingest_gateway::cli::render::{Outcome, render_source};
use serde_json::Value as Json;

fn render(template: &Path, request: &Path) -> String {
    let source = std::fs::read_to_string(template).unwrap();
    let request: Json = serde_json::from_str(&std::fs::read_to_string(request).unwrap()).unwrap();
    let name = template.file_name().unwrap().to_string_lossy();
    match render_source(&name, &source, &request, "application/json").unwrap() {
        Outcome::Rendered(out) => out,
        Outcome::TemplateError(e) => panic!("{} with {}: {e}", template.display(), request),
    }
}

#[test]
fn shipped_mappings_render() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut templates: Vec<_> = std::fs::read_dir(root.join("mappings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vtl"))
        .collect();
    templates.sort();
    assert!(!templates.is_empty());
    for template in templates {
        let stem = template.file_stem().unwrap().to_string_lossy().to_string();
        let samples = root.join("tests/fixtures/mappings").join(&stem);
        let mut requests: Vec<_> = std::fs::read_dir(&samples)
            .unwrap_or_else(|_| {
                panic!(
                    "mappings/{stem}.vtl has no samples in {}",
                    samples.display()
                )
            })
            .map(|e| e.unwrap().path())
            .collect();
        requests.sort();
        assert!(!requests.is_empty(), "no sample requests for {stem}");
        for request in requests {
            let out = render(&template, &request);
            if out.trim_start().starts_with('{') {
                serde_json::from_str::<Json>(&out)
                    .unwrap_or_else(|e| panic!("{stem}: output is not JSON ({e}):\n{out}"));
            }
            let case = request.file_stem().unwrap().to_string_lossy();
            insta::assert_snapshot!(format!("{stem}__{case}"), out);
        }
    }
}

/// The clickstream template turns each event into one newline-terminated JSON line that
/// keeps the event's fields and adds the `ingest` enrichment.
#[test]
fn clickstream_records_are_json_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = render(
        &root.join("mappings/clickstream-put-records.vtl"),
        &root.join("tests/fixtures/mappings/clickstream-put-records/batch.json"),
    );
    let call: Json = serde_json::from_str(&out).unwrap();
    let records = call["Records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let b64 = base64::engine::general_purpose::STANDARD;
    for (record, (user, pk)) in records.iter().zip([("u-1", "s-1"), ("u-2", "u-2")]) {
        let data = b64.decode(record["Data"].as_str().unwrap()).unwrap();
        let line = String::from_utf8(data).unwrap();
        assert!(
            line.ends_with('\n') && !line[..line.len() - 1].contains('\n'),
            "{line:?}"
        );
        let event: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(event["userId"], user);
        assert_eq!(
            event["ingest"]["requestId"],
            "6f1c1e3e-8c7a-4c1e-9a53-2d1f0c9b7a10"
        );
        assert_eq!(event["ingest"]["sourceIp"], "203.0.113.9");
        assert_eq!(event["ingest"]["apiKeyId"], "k-partner-1");
        assert_eq!(event["ingest"]["receivedAt"], 1764077930000i64);
        assert_eq!(record["PartitionKey"], pk);
    }
}
