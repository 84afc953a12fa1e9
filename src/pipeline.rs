//! One request, start to finish:
//!
//! ```text
//! route -> choose template -> render -> dispatch (AWS call) -> respond
//! ```
//!
//! This module decides the order of the stages and holds the per-request data; the stages
//! themselves live in their modules. Authorization and validation will slot in between
//! route and render.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode};
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::config::{Config, Passthrough, RouteConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::integrations::{self, Clients};
use crate::mapping::{self, MappingInput, Params, context};
use crate::respond;
use crate::route::RouteTable;
use crate::telemetry;
use crate::vtl::Template;

/// Everything the gateway needs to serve, built once at start-up.
pub struct Gateway {
    pub config: Config,
    pub routes: RouteTable,
    pub compiled: Vec<CompiledRoute>,
    pub clients: Clients,
    /// False once shutdown begins: `/readyz` fails so balancers stop sending traffic.
    pub ready: AtomicBool,
}

/// A route's templates, compiled.
pub struct CompiledRoute {
    /// By lower-cased media type.
    pub request_templates: Vec<(String, Template)>,
    pub response_template: Option<Template>,
}

/// Compiles every route's templates; errors name the file, line and column.
pub fn compile_templates(config: &Config) -> Result<Vec<CompiledRoute>, Vec<String>> {
    let mut errors = Vec::new();
    let mut load = |path: &std::path::Path| -> Option<Template> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => {
                errors.push(format!("{name}: cannot read the template: {e}"));
                None
            }
            Ok(source) => match Template::compile(&name, &source) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    None
                }
            },
        }
    };
    let compiled: Vec<CompiledRoute> = config
        .routes
        .iter()
        .map(|r| CompiledRoute {
            request_templates: r
                .request_templates
                .iter()
                .filter_map(|(media, path)| Some((media.clone(), load(path)?)))
                .collect(),
            response_template: r.response_template.as_deref().and_then(&mut load),
        })
        .collect();
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// A request as the pipeline sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names as received (lower-cased by HTTP/2 and by hyper for HTTP/1).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub source_ip: String,
    pub request_id: String,
    pub received: Instant,
    pub received_epoch_ms: i64,
}

/// What happened, for the access log.
pub struct Outcome {
    pub route: Option<String>,
    pub integration_ms: Option<f64>,
    pub error: Option<GatewayError>,
}

/// Runs the pipeline; never fails: errors become responses here.
pub async fn handle(gw: &Arc<Gateway>, req: Request) -> (Response<Body>, Outcome) {
    let mut outcome = Outcome {
        route: None,
        integration_ms: None,
        error: None,
    };
    let resp = match run(gw, &req, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            let resp = respond::error(&e, &req.request_id);
            outcome.error = Some(e);
            resp
        }
    };
    (resp, outcome)
}

async fn run(
    gw: &Arc<Gateway>,
    req: &Request,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let Some(matched) = gw.routes.lookup(&req.method, &req.path) else {
        return Err(GatewayError::new(
            ErrorKind::NoRoute,
            format!("no route for {} {}", req.method, req.path),
        ));
    };
    let route = &gw.config.routes[matched.route];
    let compiled = &gw.compiled[matched.route];
    outcome.route = Some(format!(
        "{} {}",
        route.method.as_ref().map_or("ANY", Method::as_str),
        route.path
    ));

    let content_type = media_type(&req.headers);
    let template = choose_template(route, compiled, &content_type)?;
    let body = std::str::from_utf8(&req.body).map_err(|_| {
        GatewayError::new(ErrorKind::InvalidBody, "the request body is not UTF-8 text")
    })?;

    let params = params(req, &matched.params);
    let facts = facts(gw, req, route);
    let build_context = || context::build(&facts);
    let (rendered, overrides) = match template {
        None => (body.to_string(), None),
        Some(t) => {
            let input = MappingInput {
                body,
                params: &params,
                stage_variables: &gw.config.stage_variables,
                context: &build_context,
            };
            let r = mapping::render(t, &input, &gw.config.limits)
                .map_err(|e| GatewayError::new(ErrorKind::Template, format!("{e}")))?;
            let overrides = r.context.as_ref().map(|c| c["responseOverride"].clone());
            (r.body, overrides)
        }
    };

    let started = Instant::now();
    let result = integrations::call(
        &gw.clients,
        route.action,
        route.target.as_deref(),
        &rendered,
        route.timeout,
    )
    .await;
    outcome.integration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    telemetry::upstream_call(route.action.name(), result.is_ok());
    let upstream = result?;

    let body = match &compiled.response_template {
        None => upstream.to_string(),
        Some(t) => render_response(gw, t, &upstream, &params, &build_context)?,
    };
    let mut resp = respond::json_response(StatusCode::OK, body, &req.request_id);
    respond::apply_overrides(&mut resp, overrides.as_ref());
    Ok(resp)
}

/// The request's media type, lower-cased without parameters; none means JSON, as on API
/// Gateway.
fn media_type(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/json".to_string())
}

/// API Gateway's template selection and passthrough rules.
fn choose_template<'a>(
    route: &RouteConfig,
    compiled: &'a CompiledRoute,
    media: &str,
) -> Result<Option<&'a Template>, GatewayError> {
    if let Some((_, t)) = compiled.request_templates.iter().find(|(m, _)| m == media) {
        return Ok(Some(t));
    }
    let has_templates = !compiled.request_templates.is_empty();
    let pass = match route.passthrough {
        Passthrough::WhenNoMatch => true,
        Passthrough::WhenNoTemplates => !has_templates,
        Passthrough::Never => false,
    };
    if pass {
        Ok(None)
    } else {
        Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType,
            format!("no request template for {media}"),
        ))
    }
}

fn params(req: &Request, path_params: &[(String, String)]) -> Params {
    let mut p = Params::default();
    p.path.extend(path_params.iter().cloned());
    for (k, v) in &req.query {
        p.querystring.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &req.headers {
        p.header.entry(k.clone()).or_insert_with(|| v.clone());
    }
    p
}

fn facts(gw: &Gateway, req: &Request, route: &RouteConfig) -> context::RequestFacts {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    context::RequestFacts {
        request_id: req.request_id.clone(),
        extended_request_id: req.request_id.replace('-', "")[..16].to_string(),
        http_method: req.method.to_string(),
        resource_path: route.path.to_string(),
        path: format!("/{}{}", gw.config.stage, req.path),
        stage: gw.config.stage.clone(),
        api_id: "ingest-gateway".into(),
        account_id: String::new(),
        domain_name: header("host").unwrap_or_default(),
        protocol: "HTTP/1.1".into(),
        source_ip: req.source_ip.clone(),
        user_agent: header("user-agent"),
        api_key: None,
        api_key_id: None,
        request_time_epoch_ms: req.received_epoch_ms,
    }
}

/// A response template sees the service's response as `$input`; `$input.params()` still
/// returns the client request's parameters.
fn render_response(
    gw: &Gateway,
    template: &Template,
    upstream: &Json,
    params: &Params,
    build_context: &dyn Fn() -> Json,
) -> Result<String, GatewayError> {
    let text = upstream.to_string();
    let empty: IndexMap<String, String> = IndexMap::new();
    let stage = if gw.config.stage_variables.is_empty() {
        &empty
    } else {
        &gw.config.stage_variables
    };
    let input = MappingInput {
        body: &text,
        params,
        stage_variables: stage,
        context: build_context,
    };
    mapping::render(template, &input, &gw.config.limits)
        .map(|r| r.body)
        .map_err(|e| GatewayError::new(ErrorKind::Template, format!("response template: {e}")))
}
