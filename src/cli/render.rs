//! `ingest-gateway render TEMPLATE --request REQUEST.json`: renders a mapping template
//! locally, exactly as the gateway would for that request.
//!
//! The request file is a JSON object with optional keys `body` (string), `params`
//! (`{"path":{}, "querystring":{}, "header":{}}`), `context` (overrides of `$context`) and
//! `stageVariables`; other keys are ignored.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::mapping::{self, MappingInput, Params, context};
use crate::vtl::{Limits, Template};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The mapping template (VTL) to render.
    pub template: PathBuf,
    /// A JSON file describing the request (`-` reads standard input).
    #[arg(long, short = 'r')]
    pub request: Option<PathBuf>,
    /// The request's Content-Type, when the request file has no `Content-Type` header.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequestFile {
    body: Option<Json>,
    params: Params,
    context: Option<Json>,
    #[serde(rename = "stageVariables")]
    stage_variables: IndexMap<String, Json>,
}

/// Outcome of a render: what goes to stdout, or a message for stderr.
pub enum Outcome {
    Rendered(String),
    TemplateError(String),
}

/// Renders and writes the result; returns whether it succeeded.
pub fn run(args: &RenderArgs) -> anyhow::Result<bool> {
    match render(args)? {
        Outcome::Rendered(text) => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(true)
        }
        Outcome::TemplateError(message) => {
            eprintln!("{message}");
            Ok(false)
        }
    }
}

pub fn render(args: &RenderArgs) -> anyhow::Result<Outcome> {
    let name = args.template.display().to_string();
    let source = std::fs::read(&args.template).with_context(|| format!("reading {name}"))?;
    let Ok(source) = String::from_utf8(source) else {
        bail!("{name}: the template is not valid UTF-8");
    };
    let request: Json = match &args.request {
        None => Json::Object(Default::default()),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid request file", path.display()))?
        }
    };
    render_source(&name, &source, &request, &args.content_type)
}

/// Renders template text against a request object (the request file's format).
pub fn render_source(
    name: &str,
    source: &str,
    request: &Json,
    content_type: &str,
) -> anyhow::Result<Outcome> {
    let request = RequestFile::deserialize(request).context("not a valid request file")?;
    let template = match Template::compile(name, source) {
        Ok(t) => t,
        Err(e) => return Ok(Outcome::TemplateError(format!("{e:#}"))),
    };
    let body = match &request.body {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let mut params = request.params.clone();
    if !params
        .header
        .keys()
        .any(|k| k.eq_ignore_ascii_case("content-type"))
    {
        params
            .header
            .insert("Content-Type".into(), content_type.to_string());
    }
    let stage_variables: IndexMap<String, String> = request
        .stage_variables
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect();
    let overrides = request.context.clone();
    let build_context = || {
        let mut ctx = context::build(&default_facts());
        if let Some(o) = &overrides {
            context::merge(&mut ctx, o);
        }
        ctx
    };
    let input = MappingInput {
        body: &body,
        params: &|| params.clone(),
        stage_variables: &stage_variables,
        context: &build_context,
    };
    Ok(
        match mapping::render(&template, &input, &Limits::default()) {
            Ok(r) => Outcome::Rendered(r.body),
            Err(e) => Outcome::TemplateError(format!("{e:#}")),
        },
    )
}

/// `$context` values for a local render: a fresh request id and the current time, like a
/// real request; override any of them with the request file's `context`.
fn default_facts() -> context::RequestFacts {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let id = request_id();
    context::RequestFacts {
        extended_request_id: id.replace('-', "").chars().take(16).collect(),
        request_id: id,
        http_method: "POST".into(),
        resource_path: "/".into(),
        path: "/local/".into(),
        stage: "local".into(),
        api_id: "local".into(),
        account_id: "000000000000".into(),
        domain_name: "localhost".into(),
        protocol: "HTTP/1.1".into(),
        source_ip: "127.0.0.1".into(),
        user_agent: Some("ingest-gateway-render".into()),
        api_key: None,
        api_key_id: None,
        request_time_epoch_ms: now_ms,
    }
}

/// A random version-4 UUID, from the standard library's randomly seeded hasher.
pub fn request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    let (a, b) = (word(), word());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}
