//! `[[routes]]`: method and path, the action and target, templates, timeout, keys and
//! throttle, batching (see `batch`), the spool mode, validation and integration responses
//! (see `responses`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use super::auth::RawThrottle;
use super::batch::RawBatch;
use super::responses::{HeaderSource, IntegrationResponse, RawResponse};
use crate::auth::plans::Throttle;
use crate::integrations::Action;
use crate::route::PathTemplate;

/// Paths the gateway serves itself (besides `server.openapi_path`).
pub const RESERVED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

#[derive(Debug, Clone, Deserialize)]
pub struct RawRoute {
    /// HTTP method (`GET`, `POST`, ... or `ANY`).
    pub method: Spanned<String>,
    /// Path with `{param}` segments and an optional final greedy `{name+}`.
    pub path: Spanned<String>,
    /// What the route performs: an AWS action, IAM-style (`kinesis:PutRecord`,
    /// `kinesis:PutRecords`, `firehose:PutRecord`, `firehose:PutRecordBatch`,
    /// `sqs:SendMessage`, `sqs:SendMessageBatch`, `states:StartExecution`,
    /// `states:StartSyncExecution`, or any `aws:SERVICE:Operation`), `lambda:Invoke`, `http`
    /// or `mock`.
    pub action: Spanned<String>,
    /// `proxy`: the request is handed over whole and the answer becomes the response (API
    /// Gateway's `aws_proxy` for Lambda, `http_proxy` for HTTP); default `custom`
    /// (templates and integration responses).
    pub integration: Option<Spanned<String>>,
    /// `lambda:Invoke`: `request_response` (default) or `event` (asynchronous, 202).
    pub invocation: Option<Spanned<String>>,
    /// `http`: the backend's URL, `{name}` in its path filled by `request_parameters` (or the
    /// route's path parameter of that name); `${stageVariables.NAME}` anywhere.
    pub uri: Option<Spanned<String>>,
    /// `http`: the backend's method (default: the request's).
    pub http_method: Option<Spanned<String>>,
    /// `http` over https: a PEM file of CA certificates the backend's certificate may chain
    /// to, besides the system's (an internal CA).
    pub backend_ca: Option<Spanned<String>>,
    /// API Gateway's request parameter mappings:
    /// `"integration.request.header.X-Source" = "method.request.header.X-Client"`.
    #[serde(default)]
    pub request_parameters: IndexMap<String, String>,
    /// The stream, delivery stream, queue or state machine the route writes to (name or
    /// ARN). When set, a rendered request that names another target is refused, so request
    /// data cannot redirect writes; it is also what `iam-policy` grants.
    pub target: Option<Spanned<String>>,
    /// Request templates by content type (`application/json` = "mappings/x.vtl").
    #[serde(default)]
    pub request_templates: IndexMap<String, Spanned<String>>,
    /// `when_no_match` (default), `when_no_templates` or `never`, as API Gateway.
    pub passthrough: Option<Spanned<String>>,
    /// Template rendering the client's response from the service's JSON response.
    pub response_template: Option<Spanned<String>>,
    /// Largest body this route accepts (default and at most `server.max_body_bytes`); larger
    /// gets 413.
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Upstream call timeout for this route (default `server.integration_timeout`).
    pub timeout: Option<Spanned<String>>,
    /// Integration responses: how the service's answer becomes the client's response.
    #[serde(default)]
    pub responses: Vec<Spanned<RawResponse>>,
    /// Whether callers must present an API key (`x-api-key` header).
    #[serde(default)]
    pub api_key_required: bool,
    /// A query parameter that may carry the key instead, for browsers and pixels.
    pub api_key_query: Option<String>,
    /// A path parameter that must name the key's customer (`keys create --customer`): on
    /// `/v1/partners/{partner}/messages` with `customer_param = "partner"`, a partner's key
    /// can write only as that partner (403 otherwise). Needs `api_key_required`.
    pub customer_param: Option<Spanned<String>>,
    /// A throttle for the whole route, all callers together.
    pub throttle: Option<RawThrottle>,
    /// The route's group, for `telemetry.route_label = "group"` (default: the first
    /// segment of its path, `/v1`).
    pub group: Option<Spanned<String>>,
    /// Send `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the key's quota.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Batching across requests (`kinesis:PutRecords`, `firehose:PutRecordBatch` and
    /// `sqs:SendMessageBatch` routes with a `target`; on by default for them, except FIFO
    /// queues): `false`, or `{ linger = "5ms", max_records = 500, max_bytes = 5242880 }`.
    pub batch: Option<RawBatch>,
    /// `off`, `fallback` or `always` (default: `spool.mode`); see `[spool]`.
    pub spool: Option<Spanned<String>>,
    /// A JSON Schema file the body must match (draft 4, as API Gateway's models, unless its
    /// `$schema` names another draft); otherwise 400 `Invalid request body`.
    pub request_model: Option<Spanned<String>>,
    /// Parameters requests must carry: `{ path = [...], querystring = [...], header = [...] }`;
    /// otherwise 400 `Missing required request parameters: [...]`.
    pub required_parameters: Option<Spanned<RawRequiredParameters>>,
    /// Validation failures also list what failed and where (`errors` in the 400 body).
    #[serde(default)]
    pub validation_details: bool,
    /// `false`, or this route's own CORS table (default: `[server.cors]`).
    pub cors: Option<super::edge::RawRouteCors>,
    /// Answers kept and served again (GET routes): `{ ttl, key, max_bytes, ... }`.
    pub cache: Option<Spanned<super::cache::RawCache>>,
    /// Client addresses (CIDRs) allowed on this route, beside `server.allow_ips`.
    #[serde(default)]
    pub allow_ips: Vec<Spanned<String>>,
    /// Client addresses (CIDRs) refused on this route.
    #[serde(default)]
    pub deny_ips: Vec<Spanned<String>>,
    /// A tracking pixel: a `GET` route answered with a 1x1 transparent GIF once its record
    /// is accepted (or spooled).
    #[serde(default)]
    pub pixel: bool,
    /// An authorizer of `[authorizers]` every request must pass (before its API key, as on
    /// API Gateway).
    pub authorizer: Option<Spanned<String>>,
    /// With a JWT authorizer: the token must grant one of these (`scope` or `scp`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where the API key comes from: `header` (the default: `x-api-key`, or the route's
    /// query parameter) or `authorizer` (the Lambda authorizer's `usageIdentifierKey`).
    pub api_key_source: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawRequiredParameters {
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
    #[serde(default)]
    pub header: Vec<String>,
}

/// How a route treats a request whose content type has no template (API Gateway's
/// `passthroughBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    WhenNoMatch,
    WhenNoTemplates,
    Never,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `None` matches any method.
    pub method: Option<http::Method>,
    pub path: PathTemplate,
    pub action: Action,
    pub target: Option<String>,
    /// Template files by lower-cased media type, in the file's order.
    pub request_templates: Vec<(String, PathBuf)>,
    pub passthrough: Passthrough,
    pub response_template: Option<PathBuf>,
    pub timeout: Duration,
    /// Its own body limit, below the server's.
    pub max_body_bytes: Option<usize>,
    pub responses: Vec<IntegrationResponse>,
    pub api_key_required: bool,
    pub api_key_query: Option<String>,
    /// The path parameter that must equal the key's customer.
    pub customer_param: Option<String>,
    /// Its group (`group`, or the first segment of its path), for
    /// `telemetry.route_label = "group"`.
    pub group: String,
    pub throttle: Option<Throttle>,
    pub rate_limit_headers: bool,
    /// Batching across requests, when on.
    pub batch: Option<crate::batch::policy::BatchPolicy>,
    /// When records go to the durable spool, if ever.
    pub spool: Option<crate::spool::Mode>,
    /// A JSON Schema file the body must match.
    pub request_model: Option<PathBuf>,
    pub required_parameters: RequiredParameters,
    /// Validation failures list what failed and where.
    pub validation_details: bool,
    pub cors: super::edge::RouteCors,
    pub cache: Option<super::cache::CacheSettings>,
    pub ip_policy: crate::edge::client_ip::IpPolicy,
    /// Answers with a 1x1 GIF.
    pub pixel: bool,
    /// The authorizer's name (`Config::authorizers`).
    pub authorizer: Option<String>,
    pub scopes: Vec<String>,
    /// The API key is the Lambda authorizer's `usageIdentifierKey`, not the request's.
    pub api_key_from_authorizer: bool,
    /// Proxying, an HTTP backend, request parameter mappings.
    pub integration: super::integration::IntegrationSettings,
}

/// Parameters a route's requests must carry (header names lower-case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredParameters {
    pub path: Vec<String>,
    pub querystring: Vec<String>,
    pub header: Vec<String>,
}
impl RequiredParameters {
    pub fn is_empty(&self) -> bool {
        self.path.is_empty() && self.querystring.is_empty() && self.header.is_empty()
    }
}

impl RouteConfig {
    /// `"METHOD /path"`, as usage plans name routes.
    pub fn name(&self) -> String {
        format!(
            "{} {}",
            self.method.as_ref().map_or("ANY", http::Method::as_str),
            self.path
        )
    }
}

impl Validator<'_> {
    pub(super) fn route(
        &mut self,
        route: &Spanned<RawRoute>,
        base: &Path,
        default_timeout: Duration,
        default_spool: Option<crate::spool::Mode>,
        server_max_body: usize,
        stage_variables: &IndexMap<String, String>,
    ) -> Option<RouteConfig> {
        let r = route.get_ref();
        let errors_before = self.errors.len();
        let method = match r.method.get_ref().to_ascii_uppercase().as_str() {
            "ANY" => None,
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => {
                Some(http::Method::from_bytes(m.as_bytes()).expect("a standard method"))
            }
            other => {
                self.error(
                    Some(r.method.span()),
                    format!("unknown HTTP method {other:?}"),
                );
                None
            }
        };
        let path = PathTemplate::parse(r.path.get_ref())
            .map_err(|e| {
                self.error(
                    Some(r.path.span()),
                    format!("path {:?}: {e}", r.path.get_ref()),
                )
            })
            .ok();
        let action = Action::parse(r.action.get_ref());
        if action.is_none() {
            self.error(
                Some(r.action.span()),
                format!(
                    "unknown action {:?}; expected one of {} or aws:SERVICE:Operation",
                    r.action.get_ref(),
                    Action::NAMES.join(", ")
                ),
            );
        }
        let request_model = r.request_model.as_ref().map(|m| {
            let max = Some(super::MAX_TEMPLATE_BYTES);
            self.named_file(Some(m.span()), base, m.get_ref(), "model file", max)
        });
        let required_parameters = match &r.required_parameters {
            None => RequiredParameters::default(),
            Some(req) => {
                let names = path
                    .as_ref()
                    .map(PathTemplate::param_names)
                    .unwrap_or_default();
                for p in &req.get_ref().path {
                    if !names.contains(&p.as_str()) {
                        self.error(
                            Some(req.span()),
                            format!("required_parameters.path: {p:?} is not a parameter of the route's path"),
                        );
                    }
                }
                for h in &req.get_ref().header {
                    if http::HeaderName::try_from(h.as_str()).is_err() {
                        self.error(
                            Some(req.span()),
                            format!("required_parameters.header: {h:?} is not a header name"),
                        );
                    }
                }
                RequiredParameters {
                    path: req.get_ref().path.clone(),
                    querystring: req.get_ref().querystring.clone(),
                    header: req
                        .get_ref()
                        .header
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                }
            }
        };
        let mut request_templates = Vec::new();
        for (media, file) in &r.request_templates {
            let max = Some(super::MAX_TEMPLATE_BYTES);
            let path = self.named_file(
                Some(file.span()),
                base,
                file.get_ref(),
                "template file",
                max,
            );
            request_templates.push((media.to_ascii_lowercase(), path));
        }
        let passthrough = match r
            .passthrough
            .as_ref()
            .map(|p| (p.get_ref().to_ascii_lowercase(), p.span()))
        {
            None => Passthrough::WhenNoMatch,
            Some((p, span)) => match p.as_str() {
                "when_no_match" => Passthrough::WhenNoMatch,
                "when_no_templates" => Passthrough::WhenNoTemplates,
                "never" => Passthrough::Never,
                _ => {
                    self.error(
                        Some(span),
                        "passthrough: expected when_no_match, when_no_templates or never",
                    );
                    Passthrough::WhenNoMatch
                }
            },
        };
        let response_template = r.response_template.as_ref().map(|f| {
            let max = Some(super::MAX_TEMPLATE_BYTES);
            self.named_file(Some(f.span()), base, f.get_ref(), "template file", max)
        });
        let timeout = self.duration(r.timeout.as_ref(), default_timeout, "timeout");
        let max_body_bytes = r.max_body_bytes.as_ref().and_then(|n| {
            if *n.get_ref() == 0 || *n.get_ref() > server_max_body as u64 {
                self.error(
                    Some(n.span()),
                    format!(
                        "max_body_bytes must be 1 to server.max_body_bytes ({server_max_body})"
                    ),
                );
                return None;
            }
            Some(*n.get_ref() as usize)
        });
        let responses: Vec<IntegrationResponse> = r
            .responses
            .iter()
            .map(|resp| self.response(resp, base))
            .collect();
        let throttle = r
            .throttle
            .and_then(|t| self.throttle(t, "route throttle", Some(route.span())));
        let customer_param = r.customer_param.as_ref().map(|c| {
            let names = path
                .as_ref()
                .map(PathTemplate::param_names)
                .unwrap_or_default();
            if !names.contains(&c.get_ref().as_str()) {
                self.error(
                    Some(c.span()),
                    format!(
                        "customer_param: {:?} is not a parameter of the route's path",
                        c.get_ref()
                    ),
                );
            }
            if !r.api_key_required {
                self.error(
                    Some(c.span()),
                    "customer_param needs api_key_required = true",
                );
            }
            c.get_ref().clone()
        });
        if r.api_key_query.as_ref().is_some_and(|q| q.is_empty()) {
            self.error(
                Some(route.span()),
                "api_key_query must name a query parameter",
            );
        }
        let batch = action.and_then(|a| self.batch(route, a, r.target.is_some()));
        let header_from_upstream = responses.iter().any(|resp: &IntegrationResponse| {
            resp.headers
                .iter()
                .any(|(_, s)| matches!(s, HeaderSource::ResponseHeader(_)))
        });
        if batch.is_some() && !r.request_parameters.is_empty() {
            self.error(
                Some(route.span()),
                "request_parameters need a route that does not batch (one call carries many requests there): set batch = false",
            );
        }
        if batch.is_some() && header_from_upstream {
            self.error(
                Some(route.span()),
                "integration.response.header.* needs a route that does not batch (one call answers many requests there): set batch = false",
            );
        }
        // Spooled records are replayed through the route's batch sink.
        let can_spool = batch.is_some()
            && action
                .and_then(|a| Some((crate::integrations::of(a)?, a)))
                .is_some_and(|(i, a)| i.spools(a));
        let spool = match &r.spool {
            None => default_spool.filter(|_| can_spool),
            Some(v) => {
                let mode = self.spool_mode(v, "spool");
                if mode.is_some() && !can_spool {
                    self.error(
                        Some(v.span()),
                        format!(
                            "spool: works for {} routes that batch",
                            super::batch::actions_that(|i, a| i.spools(a))
                        ),
                    );
                }
                mode
            }
        };
        let (Some(path), Some(mut action)) = (path, action) else {
            return None;
        };
        let name = format!("{} {}", r.method.get_ref(), r.path.get_ref());
        let backend_ca = r.backend_ca.as_ref().map(|c| {
            let max = Some(1 << 20);
            (
                self.named_file(Some(c.span()), base, c.get_ref(), "CA file", max),
                c.span(),
            )
        });
        let integration = self.integration(
            &name,
            &mut action,
            &super::integration::RawIntegration {
                integration: r.integration.as_ref(),
                invocation: r.invocation.as_ref(),
                uri: r.uri.as_ref(),
                http_method: r.http_method.as_ref(),
                backend_ca,
                request_parameters: &r.request_parameters,
                has_templates: !r.request_templates.is_empty(),
                has_responses: !r.responses.is_empty(),
                has_target: r.target.is_some(),
            },
            (&path.param_names(), path.greedy_param()),
            stage_variables,
            Some(route.span()),
        );
        if self.errors.len() > errors_before {
            return None;
        }
        let cors = self.route_cors(r.cors.as_ref(), &name);
        let cache = self.route_cache(
            r.cache.as_ref(),
            &name,
            method.as_ref(),
            &path.param_names(),
        );
        let ip_policy = crate::edge::client_ip::IpPolicy {
            allow: self.nets(&r.allow_ips, &format!("route {name}: allow_ips")),
            deny: self.nets(&r.deny_ips, &format!("route {name}: deny_ips")),
        };
        if let Some(s) = &r.api_key_source
            && !["header", "authorizer"].contains(&s.get_ref().to_ascii_lowercase().as_str())
        {
            self.error(
                Some(s.span()),
                format!("route {name}: api_key_source must be \"header\" or \"authorizer\""),
            );
        }
        if !r.scopes.is_empty() && r.authorizer.is_none() {
            self.error(
                Some(route.span()),
                format!("route {name}: scopes need an authorizer"),
            );
        }
        if r.pixel && method != Some(http::Method::GET) {
            self.error(
                Some(r.method.span()),
                format!("route {name}: pixel routes answer GET requests (method = \"GET\")"),
            );
        }
        let group = self.route_group(r.group.as_ref(), r.path.get_ref());
        Some(RouteConfig {
            customer_param,
            group,
            max_body_bytes,
            method,
            path,
            action,
            target: r.target.as_ref().map(|t| t.get_ref().clone()),
            integration,
            request_templates,
            passthrough,
            response_template,
            timeout,
            responses,
            api_key_required: r.api_key_required,
            api_key_query: r.api_key_query.clone(),
            throttle,
            rate_limit_headers: r.rate_limit_headers,
            batch,
            spool,
            request_model,
            required_parameters,
            validation_details: r.validation_details,
            cors,
            cache,
            ip_policy,
            pixel: r.pixel,
            authorizer: r.authorizer.as_ref().map(|a| a.get_ref().clone()),
            scopes: r.scopes.clone(),
            api_key_from_authorizer: r
                .api_key_source
                .as_ref()
                .is_some_and(|s| s.get_ref().eq_ignore_ascii_case("authorizer")),
        })
    }

    /// Every route, checked against the others and the server's settings.
    pub(super) fn routes(
        &mut self,
        raw: &[Spanned<RawRoute>],
        base: &Path,
        server: &super::server::Server,
        default_spool: Option<crate::spool::Mode>,
        stage_variables: &IndexMap<String, String>,
    ) -> Vec<RouteConfig> {
        let mut routes: Vec<RouteConfig> = Vec::new();
        // The methods declared on each path shape so far (`None`: ANY), to find clashes in
        // one pass.
        let mut declared: std::collections::HashMap<String, Vec<Option<http::Method>>> =
            std::collections::HashMap::new();
        for route in raw {
            if let Some(r) = self.route(
                route,
                base,
                server.integration_timeout,
                default_spool,
                server.max_body_bytes,
                stage_variables,
            ) {
                let methods = declared.entry(r.path.shape()).or_default();
                let clash = methods
                    .iter()
                    .any(|m| m.is_none() || r.method.is_none() || *m == r.method);
                methods.push(r.method.clone());
                if clash {
                    self.error(
                        Some(route.span()),
                        format!(
                            "route {} {} is declared twice",
                            route.get_ref().method.get_ref(),
                            r.path
                        ),
                    );
                }
                if RESERVED_PATHS.contains(&r.path.as_str()) {
                    self.error(
                        Some(route.span()),
                        format!(
                            "route {}: {} is the gateway's own (reserved: {})",
                            r.name(),
                            r.path,
                            RESERVED_PATHS.join(", ")
                        ),
                    );
                }
                if r.timeout > server.request_timeout {
                    self.error(
                        Some(route.span()),
                        format!(
                            "route {}: timeout {:?} is longer than server.request_timeout {:?}, which would cut it short",
                            r.name(),
                            r.timeout,
                            server.request_timeout
                        ),
                    );
                }
                routes.push(r);
            }
        }
        if let Some(p) = &server.openapi_path
            && routes.iter().any(|r| {
                r.path.as_str() == p && r.method.as_ref().is_none_or(|m| m == http::Method::GET)
            })
        {
            self.error(
                None,
                format!("a GET route on {p} clashes with server.openapi_path; set another path, or \"\" to turn the document off"),
            );
        }
        routes
    }
}
