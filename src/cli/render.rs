//! `ingest-gateway render TEMPLATE --request REQUEST.json`: renders a mapping template
//! locally, exactly as the gateway would for that request.
//! `ingest-gateway render --route "POST /v1/events" --body BODY.json`: renders the route's
//! request template (chosen by content type, as the gateway chooses it) with the
//! configuration's stage and stage variables.
//!
//! The request file is a JSON object with optional keys `body` (string), `params`
//! (`{"path":{}, "querystring":{}, "header":{}}`), `context` (overrides of `$context`) and
//! `stageVariables`; other keys are ignored. A TEMPLATE that a route of the configuration
//! (`--config`, default `gateway.toml`, when it loads) uses gets that route's method, path,
//! stage and stage variables too; the request file's `stageVariables` win.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::mapping::{self, MappingInput, Params, context};
use crate::vtl::{Limits, Template};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The mapping template (VTL) to render (or `--route`).
    #[arg(required_unless_present = "route")]
    pub template: Option<PathBuf>,
    /// A route of the configuration, as `"METHOD /path"` (`"POST /v1/events"`): renders its
    /// request template for the content type.
    #[arg(long, conflicts_with = "template")]
    pub route: Option<String>,
    /// A JSON file describing the request (`-` reads standard input).
    #[arg(long, short = 'r')]
    pub request: Option<PathBuf>,
    /// A file holding the request's body (instead of the request file's `body`).
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// The request's Content-Type, when the request file has no `Content-Type` header.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
}

/// What a configured route adds to a render: its method and path for `$context`, the
/// stage and the stage variables.
#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    pub method: String,
    pub path: String,
    pub stage: String,
    pub stage_variables: IndexMap<String, String>,
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
pub fn run(config: &Path, args: &RenderArgs) -> anyhow::Result<bool> {
    match render(config, args)? {
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

pub fn render(config: &Path, args: &RenderArgs) -> anyhow::Result<Outcome> {
    let mut request: Json = match &args.request {
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
    if let Some(path) = &args.body {
        let body =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match &mut request {
            Json::Object(m) => {
                m.insert("body".into(), Json::String(body));
            }
            _ => bail!("the request file must be a JSON object"),
        }
    }
    let (template, facts) = match (&args.route, &args.template) {
        (Some(route), _) => route_template(config, route, &args.content_type)?,
        (None, Some(t)) => (t.clone(), facts_for_template(config, t)),
        (None, None) => bail!("give a TEMPLATE or --route"),
    };
    let name = template.display().to_string();
    let source = std::fs::read(&template).with_context(|| format!("reading {name}"))?;
    let Ok(source) = String::from_utf8(source) else {
        bail!("{name}: the template is not valid UTF-8");
    };
    render_with(&name, &source, &request, &args.content_type, facts.as_ref())
}

/// The route named `"METHOD /path"` and its template for `content_type`.
fn route_template(
    config: &Path,
    route: &str,
    content_type: &str,
) -> anyhow::Result<(PathBuf, Option<RouteFacts>)> {
    let loaded = crate::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let wanted = normalize_route(route);
    let Some(r) = loaded
        .routes
        .iter()
        .find(|r| normalize_route(&r.name()) == wanted)
    else {
        let names: Vec<String> = loaded.routes.iter().map(|r| r.name()).collect();
        bail!(
            "{}: no route {route:?}; the routes are: {}",
            config.display(),
            names.join(", ")
        );
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((_, path)) = r.request_templates.iter().find(|(m, _)| *m == media) else {
        let types: Vec<&str> = r
            .request_templates
            .iter()
            .map(|(m, _)| m.as_str())
            .collect();
        bail!(
            "route {} has no request template for {media}; it has: {}",
            r.name(),
            if types.is_empty() {
                "none".to_string()
            } else {
                types.join(", ")
            }
        );
    };
    Ok((path.clone(), Some(facts_of(&loaded, r))))
}

fn normalize_route(name: &str) -> String {
    let mut parts = name.split_whitespace();
    let method = parts.next().unwrap_or("").to_ascii_uppercase();
    format!("{method} {}", parts.collect::<Vec<_>>().join(" "))
}

pub fn facts_of(config: &crate::config::Config, r: &crate::config::RouteConfig) -> RouteFacts {
    RouteFacts {
        method: r
            .method
            .as_ref()
            .map_or_else(|| "POST".to_string(), |m| m.to_string()),
        path: r.path.to_string(),
        stage: config.stage.clone(),
        stage_variables: config.stage_variables.clone(),
    }
}

/// The route of the configuration (if it loads) whose request template is `template`.
fn facts_for_template(config: &Path, template: &Path) -> Option<RouteFacts> {
    if !config.exists() {
        return None;
    }
    let loaded = crate::config::load(config).ok()?;
    let wanted = std::fs::canonicalize(template).ok()?;
    let route = loaded.routes.iter().find(|r| {
        r.request_templates
            .iter()
            .any(|(_, p)| std::fs::canonicalize(p).is_ok_and(|p| p == wanted))
    })?;
    Some(facts_of(&loaded, route))
}

/// Renders template text against a request object (the request file's format).
pub fn render_source(
    name: &str,
    source: &str,
    request: &Json,
    content_type: &str,
) -> anyhow::Result<Outcome> {
    render_with(name, source, request, content_type, None)
}

/// As [`render_source`], with what a configured route adds.
pub fn render_with(
    name: &str,
    source: &str,
    request: &Json,
    content_type: &str,
    route: Option<&RouteFacts>,
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
    let mut stage_variables: IndexMap<String, String> =
        route.map(|r| r.stage_variables.clone()).unwrap_or_default();
    for (k, v) in &request.stage_variables {
        stage_variables.insert(
            k.clone(),
            v.as_str().map_or_else(|| v.to_string(), str::to_string),
        );
    }
    let overrides = request.context.clone();
    let mut facts = default_facts();
    if let Some(r) = route {
        facts.http_method.clone_from(&r.method);
        facts.resource_path.clone_from(&r.path);
        facts.path = format!("/{}{}", r.stage, r.path);
        facts.stage.clone_from(&r.stage);
    }
    let build_context = || {
        let mut ctx = context::build(&facts);
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
        client_cert: None,
        authorizer: None,
        is_canary: None,
        ws: None,
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
