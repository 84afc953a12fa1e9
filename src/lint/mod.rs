//! The template linter: renders each request template against requests shaped like what it
//! reads, with hostile but legal data (apostrophes, quotes, backslashes, `\u2028`,
//! non-ASCII, control characters, empty and one-element arrays, missing fields, numbers as
//! strings), and checks that the output is what the route's service accepts. API Gateway
//! would only say so at request time, with a 500; this says which input breaks which
//! template, where, by the pitfall's name, and how to fix it. It never calls AWS.
//!
//! The core here is pure: the caller renders (see `cli::lint`).

pub mod checks;
pub mod inputs;

use serde_json::{Value as Json, json};

pub use checks::{Expect, Pitfall};
use inputs::{Kind, Variant};

use crate::upstream::Action;

/// A request template to lint.
pub struct Subject<'a> {
    pub source: &'a str,
    pub expect: Expect,
    /// The route's JSON Schema model: bodies it refuses never reach the template.
    pub accepts: Option<&'a dyn Fn(&Json) -> bool>,
    /// The model itself, for the fields it describes.
    pub model: Option<&'a Json>,
}

/// One finding: the pitfall, the input that showed it and the output around the fault.
#[derive(Debug, Clone)]
pub struct Finding {
    pub pitfall: Pitfall,
    pub detail: String,
    /// The request (`body` and `params`, the `render` command's request format).
    pub input: Json,
    /// The output's line around the fault, and the fault's column in it.
    pub excerpt: String,
    pub caret: usize,
}

/// What a route's action takes as the rendered request (its integration says).
pub fn expect(action: Action) -> Expect {
    crate::integrations::of(action).map_or(Expect::Json, |i| i.request_format(action))
}

/// Lints one template; `render` renders it for a request (the `render` command's request
/// format) and returns the output or the template's error.
pub fn lint(
    subject: &Subject<'_>,
    render: &mut dyn FnMut(&Json) -> Result<String, String>,
) -> Vec<Finding> {
    let reads = inputs::reads(subject.source);
    let mut paths = reads.paths.clone();
    if let Some(model) = subject.model {
        paths.extend(inputs::model_paths(model));
    }
    // A template reading only the whole body gets an object with a field.
    if paths.iter().all(Vec::is_empty) {
        paths.push(vec![inputs::Step::Key("message".into())]);
    }
    paths.sort();
    paths.dedup();
    let types = subject.model.map(inputs::model_types).unwrap_or_default();
    // Which leaves the template writes inside strings, and which bare.
    let (markers, leaves) = inputs::marker_body(&paths);
    let params = |value: &dyn Fn(usize) -> String| {
        let mut p = serde_json::Map::new();
        for (i, name) in reads.params.iter().enumerate() {
            p.insert(name.clone(), json!(value(leaves + i)));
        }
        let mut query = p.clone();
        if reads.whole_query {
            query.insert("page".into(), json!(value(usize::MAX)));
        }
        json!({"path": p.clone(), "querystring": query, "header": p})
    };
    let marker_request = json!({
        "body": markers.to_string(),
        "params": params(&|i| if i == usize::MAX { "x".into() } else { inputs::marker(i) }),
    });
    let kinds = match render(&marker_request) {
        Ok(out) if out.trim_start().starts_with(['{', '[']) => {
            inputs::kinds_from_markers(&out, leaves + reads.params.len())
        }
        _ => vec![Kind::Text; leaves + reads.params.len()],
    };
    let mut findings: Vec<Finding> = Vec::new();
    for variant in Variant::ALL {
        let body = inputs::variant_body(&paths, &types, &kinds, variant);
        if subject.accepts.is_some_and(|ok| !ok(&body)) {
            continue;
        }
        let text_param = |i: usize| match kinds.get(i) {
            Some(Kind::Number) => "1".to_string(),
            _ if matches!(
                variant,
                Variant::NoElements | Variant::OneElement | Variant::Missing
            ) =>
            {
                "sample".to_string()
            }
            _ => variant.text().to_string(),
        };
        let request = json!({"body": body.to_string(), "params": params(&text_param)});
        let hostile = matches!(
            variant,
            Variant::Quote | Variant::Backslash | Variant::ControlCharacters
        );
        let fault = match render(&request) {
            Ok(out) => checks::check(subject.expect, &out, subject.source, hostile).map(|f| {
                let (excerpt, caret) = checks::excerpt(&out, f.at, 100);
                (f.pitfall, f.detail, excerpt, caret)
            }),
            Err(e) => Some((Pitfall::TemplateFails, e, String::new(), 0)),
        };
        let Some((pitfall, detail, excerpt, caret)) = fault else {
            continue;
        };
        if findings.iter().any(|f| f.pitfall == pitfall) {
            continue;
        }
        findings.push(Finding {
            pitfall,
            detail,
            input: request,
            excerpt,
            caret,
        });
    }
    findings
}
