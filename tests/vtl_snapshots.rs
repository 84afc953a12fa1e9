//! Snapshot tests of the template language: every file in `tests/fixtures/vtl/` holds a
//! request (the `render` command's request format), a `---` line, then a template. The
//! snapshot is the rendered text, or the error exactly as `render` prints it.

use ingest_gateway::cli::render::{Outcome, render_source};

#[test]
fn fixtures() {
    insta::glob!("fixtures/vtl/*.vtl", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let (request, template) = text.split_once("\n---\n").expect("request, ---, template");
        let request: serde_json::Value = serde_json::from_str(request).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let shown = match render_source(&name, template, &request, "application/json").unwrap() {
            Outcome::Rendered(out) => format!("OK\n{out}"),
            Outcome::TemplateError(e) => format!("ERROR\n{e}"),
        };
        insta::assert_snapshot!(shown);
    });
}
