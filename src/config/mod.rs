//! `gateway.toml`: loaded raw ([`raw`]), then validated into the typed [`Config`] the rest
//! of the gateway uses. Validation collects every problem with its location, so
//! `ingest-gateway check-config` can print them all at once as `file:line:col: message`.
//!
//! This module reads files and parses; it never spawns tasks or builds AWS clients.

pub mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use crate::auth::plans::{Period, Quota, Throttle, UsagePlan};
use crate::batch::policy::BatchPolicy;

/// User records per batch when aggregating, at most.
const AGGREGATED_MAX_RECORDS: usize = 50_000;
/// User bytes per batch when aggregating, at most: 5 MiB less room for the aggregates'
/// framing, so one batch stays one `PutRecords` call.
const AGGREGATED_MAX_BYTES: usize = 4_718_592;
use crate::integrations::Action;
use crate::route::PathTemplate;
use crate::vtl::Limits;
use raw::RawConfig;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub stage: String,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// Serving on, with `/readyz` failing, after SIGTERM before connections are refused.
    pub shutdown_delay: Duration,
    /// Slow clients: headers and body must arrive within these.
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Nesting a JSON body may have (at most `MAX_JSON_DEPTH`).
    pub max_json_depth: usize,
    /// Lower-case media types (or `type/*`, `*/*`) whose bodies reach templates base64-encoded.
    pub binary_media_types: Vec<String>,
    /// Where `GET` serves the OpenAPI document, if anywhere.
    pub openapi_path: Option<String>,
    pub openapi_extensions: bool,
    pub max_headers: usize,
    pub aws: AwsSettings,
    pub stage_variables: IndexMap<String, String>,
    pub limits: Limits,
    pub routes: Vec<RouteConfig>,
    pub resources: raw::RawResources,
    pub key_store: PathBuf,
    pub account_throttle: Option<Throttle>,
    pub usage_plans: Vec<UsagePlan>,
    /// The directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// The spool's settings (used by routes with a spool mode).
    pub spool: crate::spool::Settings,
    /// Overrides of the gateway's error responses, by API Gateway's response type.
    pub gateway_responses: Vec<(String, GatewayResponse)>,
}

/// The deepest JSON body serde_json parses (its recursion limit), and the default bound.
pub const MAX_JSON_DEPTH: usize = 127;

/// How one type of the gateway's own error responses is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayResponse {
    pub status: Option<u16>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Renders the body, with `$context.error`.
    pub template: Option<PathBuf>,
}

/// API Gateway's gateway response types the gateway produces (see `respond::response_type`).
pub const GATEWAY_RESPONSE_TYPES: [&str; 13] = [
    "DEFAULT_4XX",
    "DEFAULT_5XX",
    "MISSING_AUTHENTICATION_TOKEN",
    "INVALID_API_KEY",
    "THROTTLED",
    "QUOTA_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "BAD_REQUEST_BODY",
    "BAD_REQUEST_PARAMETERS",
    "INTEGRATION_FAILURE",
    "INTEGRATION_TIMEOUT",
    "API_CONFIGURATION_ERROR",
];

#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// One attempt of one call, at most.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
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
    pub responses: Vec<IntegrationResponse>,
    pub api_key_required: bool,
    pub api_key_query: Option<String>,
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

/// How an integration's outcome becomes the client's response.
#[derive(Debug, Clone)]
pub struct IntegrationResponse {
    /// Anchored, over the upstream's HTTP status. With `error_pattern` also `None`, this is
    /// the default response.
    pub pattern: Option<regex::Regex>,
    /// Anchored, over the upstream's error code (`ResourceNotFoundException`).
    pub error_pattern: Option<regex::Regex>,
    pub status: u16,
    pub headers: Vec<(http::HeaderName, HeaderSource)>,
    pub template: Option<PathBuf>,
}

/// Where a response header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Literal(String),
    Context(String),
    StageVariable(String),
    /// A top-level field of the service's JSON response.
    ResponseBody(String),
    /// A header of the service's HTTP response (lower-case name), on routes that do not
    /// batch (a batch's call answers many requests).
    ResponseHeader(String),
}

impl std::fmt::Display for HeaderSource {
    /// As written in `gateway.toml` (and API Gateway's `responseParameters`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderSource::Literal(v) => write!(f, "'{v}'"),
            HeaderSource::Context(n) => write!(f, "context.{n}"),
            HeaderSource::StageVariable(n) => write!(f, "stageVariables.{n}"),
            HeaderSource::ResponseBody(n) => write!(f, "integration.response.body.{n}"),
            HeaderSource::ResponseHeader(n) => write!(f, "integration.response.header.{n}"),
        }
    }
}

impl HeaderSource {
    fn parse(s: &str) -> Option<HeaderSource> {
        let s = s.trim();
        if let Some(lit) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Some(HeaderSource::Literal(lit.to_string()));
        }
        if let Some(name) = s.strip_prefix("context.") {
            return Some(HeaderSource::Context(name.to_string()));
        }
        if let Some(name) = s.strip_prefix("stageVariables.") {
            return Some(HeaderSource::StageVariable(name.to_string()));
        }
        if let Some(name) = s.strip_prefix("integration.response.header.") {
            return Some(HeaderSource::ResponseHeader(name.to_ascii_lowercase()));
        }
        s.strip_prefix("integration.response.body.")
            .map(|f| HeaderSource::ResponseBody(f.to_string()))
    }
}

/// One problem in the file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// All the problems found in a file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            at: None,
            message: format!("cannot read the configuration: {e}"),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(path, &text, &base)
}

/// Parses and validates configuration text; `file` names it in errors and `base_dir`
/// anchors relative paths.
pub fn parse(file: &Path, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        file,
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().to_string();
            let at = e.span().map(|s| line_col(text, s.start));
            return Err(ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                at,
                message,
            }]));
        }
    };
    let config = v.validate(raw, base_dir);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses `500ms`, `29s`, `5m`, `1h`, `90d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    })
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            at: span.map(|s| line_col(self.text, s.start)),
            message: message.into(),
        });
    }

    fn duration(&mut self, v: Option<&Spanned<String>>, default: Duration, what: &str) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) if !d.is_zero() => d,
            _ => {
                self.error(
                    Some(v.span()),
                    format!("{what}: expected a duration such as \"500ms\", \"29s\" or \"5m\", got {:?}", v.get_ref()),
                );
                default
            }
        }
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Config {
        let listen = match &raw.server.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
                self.error(
                    Some(l.span()),
                    format!("server.listen: not an address:port: {:?}", l.get_ref()),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };
        let stage = match &raw.server.stage {
            None => "prod".to_string(),
            Some(s) => {
                let ok = !s.get_ref().is_empty()
                    && s.get_ref().len() <= 128
                    && s.get_ref()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    self.error(
                        Some(s.span()),
                        "server.stage: use 1-128 characters of A-Z a-z 0-9 _ -",
                    );
                }
                s.get_ref().clone()
            }
        };
        let max_body_bytes = match &raw.server.max_body_bytes {
            None => 10 * 1024 * 1024,
            Some(n) if *n.get_ref() == 0 => {
                self.error(Some(n.span()), "server.max_body_bytes must be at least 1");
                10 * 1024 * 1024
            }
            Some(n) => *n.get_ref() as usize,
        };
        let integration_timeout = self.duration(
            raw.server.integration_timeout.as_ref(),
            Duration::from_secs(29),
            "server.integration_timeout",
        );
        let shutdown_grace = self.duration(
            raw.server.shutdown_grace.as_ref(),
            Duration::from_secs(30),
            "server.shutdown_grace",
        );
        let shutdown_delay = self.duration(
            raw.server.shutdown_delay.as_ref(),
            Duration::ZERO,
            "server.shutdown_delay",
        );
        let header_read_timeout = self.duration(
            raw.server.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "server.header_read_timeout",
        );
        let body_read_timeout = self.duration(
            raw.server.body_read_timeout.as_ref(),
            Duration::from_secs(30),
            "server.body_read_timeout",
        );
        let idle_timeout = self.duration(
            raw.server.idle_timeout.as_ref(),
            Duration::from_secs(75),
            "server.idle_timeout",
        );
        let request_timeout = self.duration(
            raw.server.request_timeout.as_ref(),
            Duration::from_secs(60),
            "server.request_timeout",
        );
        let max_json_depth = match &raw.server.max_json_depth {
            None => MAX_JSON_DEPTH,
            Some(n) if !(1..=MAX_JSON_DEPTH as u64).contains(n.get_ref()) => {
                self.error(
                    Some(n.span()),
                    format!("server.max_json_depth must be 1 to {MAX_JSON_DEPTH}"),
                );
                MAX_JSON_DEPTH
            }
            Some(n) => *n.get_ref() as usize,
        };
        let max_headers = match &raw.server.max_headers {
            None => 100,
            Some(n) if !(1..=1000).contains(n.get_ref()) => {
                self.error(Some(n.span()), "server.max_headers must be 1 to 1000");
                100
            }
            Some(n) => *n.get_ref() as usize,
        };
        let defaults = Limits::default();
        let limits = Limits {
            max_loop_iterations: raw
                .templates
                .max_loop_iterations
                .unwrap_or(defaults.max_loop_iterations),
            max_steps: raw.templates.max_steps.unwrap_or(defaults.max_steps),
            max_output_bytes: raw
                .templates
                .max_output_bytes
                .unwrap_or(defaults.max_output_bytes),
            ..defaults
        };
        let openapi_path = match &raw.server.openapi_path {
            None => Some("/openapi.json".to_string()),
            Some(p) if p.get_ref().is_empty() => None,
            Some(p) => {
                if !p.get_ref().starts_with('/') {
                    self.error(Some(p.span()), "server.openapi_path must start with '/'");
                }
                Some(p.get_ref().clone())
            }
        };
        let (spool, spool_mode) = self.spool(&raw.spool, base);
        let mut routes: Vec<RouteConfig> = Vec::new();
        for route in &raw.routes {
            if let Some(r) = self.route(route, base, integration_timeout, spool_mode) {
                let clash = routes.iter().any(|o| {
                    o.path.shape() == r.path.shape()
                        && (o.method.is_none() || r.method.is_none() || o.method == r.method)
                });
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
                if r.timeout > request_timeout {
                    self.error(
                        Some(route.span()),
                        format!(
                            "route {}: timeout {:?} is longer than server.request_timeout {:?}, which would cut it short",
                            r.name(),
                            r.timeout,
                            request_timeout
                        ),
                    );
                }
                routes.push(r);
            }
        }
        if let Some(p) = &openapi_path
            && routes.iter().any(|r| {
                r.path.as_str() == p && r.method.as_ref().is_none_or(|m| m == http::Method::GET)
            })
        {
            self.error(
                None,
                format!("a GET route on {p} clashes with server.openapi_path; set another path, or \"\" to turn the document off"),
            );
        }
        self.resources(&raw.resources);
        let account_throttle = match raw.auth.account_throttle {
            Some(t) => self.throttle(t, "auth.account_throttle"),
            None => Some(Throttle {
                rate: 10_000.0,
                burst: 5_000,
            }),
        };
        let route_names: Vec<String> = routes.iter().map(RouteConfig::name).collect();
        let usage_plans = raw
            .usage_plans
            .iter()
            .map(|(name, p)| self.usage_plan(name, p, &route_names))
            .collect();
        let key_store = base.join(raw.auth.key_store.as_deref().unwrap_or("keys.db"));
        Config {
            key_store,
            account_throttle,
            usage_plans,
            listen,
            stage,
            max_body_bytes,
            shutdown_grace,
            shutdown_delay,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            request_timeout,
            max_json_depth,
            binary_media_types: raw
                .server
                .binary_media_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            openapi_path,
            openapi_extensions: raw.server.openapi_extensions.unwrap_or(true),
            max_headers,
            aws: AwsSettings {
                call_timeout: self.duration(
                    raw.aws.call_timeout.as_ref(),
                    Duration::from_secs(5),
                    "aws.call_timeout",
                ),
                connect_timeout: self.duration(
                    raw.aws.connect_timeout.as_ref(),
                    Duration::from_secs(2),
                    "aws.connect_timeout",
                ),
                region: raw.aws.region,
                endpoint_url: raw.aws.endpoint_url,
            },
            stage_variables: raw.stage_variables,
            limits,
            routes,
            resources: raw.resources,
            base_dir: base.to_path_buf(),
            spool,
            gateway_responses: self.gateway_responses(&raw.gateway_responses, base),
        }
    }

    fn gateway_responses(
        &mut self,
        raw: &IndexMap<String, Spanned<raw::RawGatewayResponse>>,
        base: &Path,
    ) -> Vec<(String, GatewayResponse)> {
        let mut out = Vec::new();
        for (kind, r) in raw {
            let span = Some(r.span());
            if !GATEWAY_RESPONSE_TYPES.contains(&kind.as_str()) {
                self.error(
                    span.clone(),
                    format!(
                        "gateway_responses.{kind}: not a response type the gateway produces; expected one of {}",
                        GATEWAY_RESPONSE_TYPES.join(", ")
                    ),
                );
                continue;
            }
            let r = r.get_ref();
            if let Some(s) = r.status
                && !(400..600).contains(&s)
            {
                self.error(
                    span.clone(),
                    format!("gateway_responses.{kind}.status must be 400 to 599"),
                );
            }
            let mut headers = Vec::new();
            for (name, value) in &r.headers {
                let literal = value
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .unwrap_or(value);
                match (
                    http::HeaderName::try_from(name.as_str()),
                    http::HeaderValue::try_from(literal),
                ) {
                    (Ok(n), Ok(v)) => headers.push((n, v)),
                    _ => self.error(
                        span.clone(),
                        format!("gateway_responses.{kind}.headers: {name:?} = {value:?} is not a valid header"),
                    ),
                }
            }
            let template = r.template.as_ref().map(|t| {
                let path = base.join(t);
                if !path.is_file() {
                    self.error(
                        span.clone(),
                        format!(
                            "gateway_responses.{kind}.template: {} does not exist",
                            path.display()
                        ),
                    );
                }
                path
            });
            out.push((
                kind.clone(),
                GatewayResponse {
                    status: r.status,
                    headers,
                    template,
                },
            ));
        }
        out
    }

    /// The `[spool]` settings and the mode routes get by default.
    fn spool(
        &mut self,
        raw: &raw::RawSpool,
        base: &Path,
    ) -> (crate::spool::Settings, Option<crate::spool::Mode>) {
        let mode = raw
            .mode
            .as_ref()
            .and_then(|m| self.spool_mode(m, "spool.mode"));
        let mut bytes = |v: Option<&Spanned<u64>>, default: u64, min: u64, what: &str| match v {
            None => default,
            Some(n) if *n.get_ref() < min => {
                self.error(
                    Some(n.span()),
                    format!("{what} must be at least {min} bytes"),
                );
                default
            }
            Some(n) => *n.get_ref(),
        };
        // A record is at most 1 MiB plus its keys: a segment and a spool hold several.
        let max_bytes = bytes(raw.max_bytes.as_ref(), 1 << 30, 16 << 20, "spool.max_bytes");
        let segment_bytes = bytes(
            raw.segment_bytes.as_ref(),
            64 << 20,
            4 << 20,
            "spool.segment_bytes",
        );
        let fsync = match &raw.fsync {
            None => crate::spool::Fsync::Always,
            Some(f) if f.get_ref() == "always" => crate::spool::Fsync::Always,
            Some(f) => match parse_duration(f.get_ref()) {
                Some(d) if !d.is_zero() => crate::spool::Fsync::Interval(d),
                _ => {
                    self.error(
                        Some(f.span()),
                        format!(
                            "spool.fsync: expected \"always\" or an interval such as \"100ms\", got {:?}",
                            f.get_ref()
                        ),
                    );
                    crate::spool::Fsync::Always
                }
            },
        };
        let replay_in_flight = match &raw.replay_in_flight {
            None => 8,
            Some(n) if !(1..=64).contains(n.get_ref()) => {
                self.error(Some(n.span()), "spool.replay_in_flight must be 1 to 64");
                8
            }
            Some(n) => *n.get_ref(),
        };
        let settings = crate::spool::Settings {
            dir: base.join(raw.dir.as_deref().unwrap_or("spool")),
            max_bytes,
            segment_bytes,
            fsync,
            replay_in_flight,
        };
        (settings, mode)
    }

    /// `off`, `fallback` or `always`.
    fn spool_mode(&mut self, v: &Spanned<String>, what: &str) -> Option<crate::spool::Mode> {
        match v.get_ref().as_str() {
            "off" => None,
            "fallback" => Some(crate::spool::Mode::Fallback),
            "always" => Some(crate::spool::Mode::Always),
            other => {
                self.error(
                    Some(v.span()),
                    format!("{what}: expected \"off\", \"fallback\" or \"always\", got {other:?}"),
                );
                None
            }
        }
    }

    fn throttle(&mut self, t: raw::RawThrottle, what: &str) -> Option<Throttle> {
        let throttle = Throttle {
            rate: t.rate,
            burst: t.burst,
        };
        if crate::auth::bucket(throttle).is_none() {
            self.error(
                None,
                format!("{what}: rate must be above 0 and burst at least 1"),
            );
            return None;
        }
        Some(throttle)
    }

    fn usage_plan(
        &mut self,
        name: &str,
        p: &Spanned<raw::RawUsagePlan>,
        routes: &[String],
    ) -> UsagePlan {
        let span = Some(p.span());
        let r = p.get_ref();
        let throttle = r
            .throttle
            .and_then(|t| self.throttle(t, &format!("usage plan {name}: throttle")));
        let mut route_throttles = Vec::new();
        for (route, t) in &r.route_throttles {
            if !routes.contains(route) {
                self.error(
                    span.clone(),
                    format!("usage plan {name}: no route {route:?} (routes are named like \"POST /v1/events\")"),
                );
            } else if let Some(t) = self.throttle(*t, &format!("usage plan {name}: {route}")) {
                route_throttles.push((route.clone(), t));
            }
        }
        let quota = r
            .quota
            .as_ref()
            .and_then(|q| match Period::parse(&q.period) {
                Some(period) if q.limit > 0 => Some(Quota {
                    limit: q.limit,
                    period,
                    offset: q.offset,
                }),
                Some(_) => {
                    self.error(
                        span.clone(),
                        format!("usage plan {name}: quota limit must be at least 1"),
                    );
                    None
                }
                None => {
                    self.error(
                        span.clone(),
                        format!("usage plan {name}: quota period must be DAY, WEEK or MONTH"),
                    );
                    None
                }
            });
        UsagePlan {
            name: name.to_string(),
            throttle,
            route_throttles,
            quota,
        }
    }

    fn route(
        &mut self,
        route: &Spanned<raw::RawRoute>,
        base: &Path,
        default_timeout: Duration,
        default_spool: Option<crate::spool::Mode>,
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
                    "unknown action {:?}; expected one of {}",
                    r.action.get_ref(),
                    Action::NAMES.join(", ")
                ),
            );
        }
        let request_model = r.request_model.as_ref().map(|m| {
            let file = base.join(m.get_ref());
            if !file.is_file() {
                self.error(
                    Some(m.span()),
                    format!("model file {} does not exist", file.display()),
                );
            }
            file
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
            let path = base.join(file.get_ref());
            if !path.is_file() {
                self.error(
                    Some(file.span()),
                    format!("template file {} does not exist", path.display()),
                );
            }
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
            let path = base.join(f.get_ref());
            if !path.is_file() {
                self.error(
                    Some(f.span()),
                    format!("template file {} does not exist", path.display()),
                );
            }
            path
        });
        let timeout = self.duration(r.timeout.as_ref(), default_timeout, "timeout");
        let responses: Vec<IntegrationResponse> = r
            .responses
            .iter()
            .map(|resp| self.response(resp, base))
            .collect();
        let throttle = r.throttle.and_then(|t| self.throttle(t, "route throttle"));
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
        if batch.is_some() && header_from_upstream {
            self.error(
                Some(route.span()),
                "integration.response.header.* needs a route that does not batch (one call answers many requests there): set batch = false",
            );
        }
        // Spooled records are replayed through the route's batch sink.
        let can_spool = batch.is_some()
            && matches!(
                action,
                Some(Action::KinesisPutRecords | Action::FirehosePutRecordBatch)
            );
        let spool = match &r.spool {
            None => default_spool.filter(|_| can_spool),
            Some(v) => {
                let mode = self.spool_mode(v, "spool");
                if mode.is_some() && !can_spool {
                    self.error(
                        Some(v.span()),
                        "spool: works for kinesis:PutRecords and firehose:PutRecordBatch routes that batch",
                    );
                }
                mode
            }
        };
        let (Some(path), Some(action)) = (path, action) else {
            return None;
        };
        if self.errors.len() > errors_before {
            return None;
        }
        Some(RouteConfig {
            method,
            path,
            action,
            target: r.target.as_ref().map(|t| t.get_ref().clone()),
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
        })
    }

    /// The batching policy of a route: on by default where batching is supported.
    fn batch(
        &mut self,
        route: &Spanned<raw::RawRoute>,
        action: Action,
        has_target: bool,
    ) -> Option<BatchPolicy> {
        let supported = matches!(
            action,
            Action::KinesisPutRecords
                | Action::FirehosePutRecordBatch
                | Action::SqsSendMessageBatch
        ) && has_target;
        // FIFO queues: resending only a batch's failed entries could reorder a message group,
        // so batching is on only when asked for.
        let fifo = route
            .get_ref()
            .target
            .as_ref()
            .is_some_and(|t| t.get_ref().ends_with(".fifo"));
        let settings = match &route.get_ref().batch {
            Some(raw::RawBatch::Enabled(false)) => return None,
            None if !supported || fifo => return None,
            None | Some(raw::RawBatch::Enabled(true)) => raw::RawBatchSettings {
                linger: None,
                max_records: None,
                max_bytes: None,
                queue: None,
                aggregate: false,
            },
            Some(raw::RawBatch::Settings(s)) => s.clone(),
        };
        if !supported {
            self.error(
                Some(route.span()),
                "batch: batching works for kinesis:PutRecords, firehose:PutRecordBatch and sqs:SendMessageBatch routes with a target",
            );
            return None;
        }
        let linger = match &settings.linger {
            None => crate::batch::DEFAULT_LINGER,
            Some(l) => match parse_duration(l) {
                Some(d) => d,
                None => {
                    self.error(
                        Some(route.span()),
                        format!("batch.linger: {l:?} is not a duration"),
                    );
                    crate::batch::DEFAULT_LINGER
                }
            },
        };
        if settings.aggregate && action != Action::KinesisPutRecords {
            self.error(
                Some(route.span()),
                "batch.aggregate: KPL aggregation works for kinesis:PutRecords routes",
            );
        }
        // Aggregated, the limits count user records: many fit in one upstream record.
        let (record_limit, byte_limit) = if action == Action::SqsSendMessageBatch {
            (
                crate::integrations::sqs::MAX_BATCH,
                crate::integrations::sqs::MAX_BATCH_BYTES,
            )
        } else if action == Action::FirehosePutRecordBatch {
            (
                crate::integrations::firehose::MAX_RECORDS,
                crate::integrations::firehose::MAX_BATCH_BYTES,
            )
        } else if settings.aggregate {
            (AGGREGATED_MAX_RECORDS, AGGREGATED_MAX_BYTES)
        } else {
            (
                crate::integrations::kinesis::MAX_RECORDS,
                crate::integrations::kinesis::MAX_BATCH_BYTES,
            )
        };
        let max_records = settings.max_records.unwrap_or(record_limit);
        let max_bytes = settings.max_bytes.unwrap_or(byte_limit);
        if max_records == 0 || max_records > record_limit {
            self.error(
                Some(route.span()),
                format!("batch.max_records must be 1 to {record_limit}"),
            );
        }
        if max_bytes == 0 || max_bytes > byte_limit {
            self.error(
                Some(route.span()),
                format!("batch.max_bytes must be 1 to {byte_limit}"),
            );
        }
        Some(BatchPolicy {
            max_records: max_records.clamp(1, record_limit),
            max_bytes: max_bytes.clamp(1, byte_limit),
            linger,
            queue: settings
                .queue
                .unwrap_or(crate::batch::QUEUE_CAPACITY)
                .max(1),
            aggregate: settings.aggregate,
        })
    }

    fn response(&mut self, resp: &Spanned<raw::RawResponse>, base: &Path) -> IntegrationResponse {
        let r = resp.get_ref();
        let span = Some(resp.span());
        let pattern = r.pattern.as_ref().and_then(|p| {
            regex::Regex::new(&format!(r"\A(?:{p})\z"))
                .map_err(|e| self.error(span.clone(), format!("response pattern {p:?}: {e}")))
                .ok()
        });
        let error_pattern = r.error_pattern.as_ref().and_then(|p| {
            regex::Regex::new(&format!(r"\A(?:{p})\z"))
                .map_err(|e| self.error(span.clone(), format!("response error_pattern {p:?}: {e}")))
                .ok()
        });
        let status = r.status.unwrap_or(200);
        if !(100..600).contains(&status) {
            self.error(
                span.clone(),
                format!("response status {status} is not an HTTP status"),
            );
        }
        let mut headers = Vec::new();
        for (name, source) in &r.headers {
            let Ok(header) = http::HeaderName::try_from(name.as_str()) else {
                self.error(span.clone(), format!("{name:?} is not a header name"));
                continue;
            };
            match HeaderSource::parse(source) {
                Some(s) => headers.push((header, s)),
                None => self.error(
                    span.clone(),
                    format!("header {name}: {source:?} is not 'literal', context.NAME, stageVariables.NAME, integration.response.body.FIELD or integration.response.header.NAME"),
                ),
            }
        }
        let template = r.template.as_ref().map(|t| {
            let path = base.join(t);
            if !path.is_file() {
                self.error(
                    span.clone(),
                    format!("template file {} does not exist", path.display()),
                );
            }
            path
        });
        IntegrationResponse {
            pattern,
            error_pattern,
            status,
            headers,
            template,
        }
    }

    fn resources(&mut self, res: &raw::RawResources) {
        let streams: Vec<&str> = res
            .kinesis_streams
            .iter()
            .map(|s| s.get_ref().name.as_str())
            .collect();
        let buckets: Vec<&str> = res
            .s3_buckets
            .iter()
            .map(|b| b.get_ref().name.as_str())
            .collect();
        let queues: Vec<&str> = res
            .sqs_queues
            .iter()
            .map(|q| q.get_ref().name.as_str())
            .collect();
        for s in &res.kinesis_streams {
            if s.get_ref().shards.is_some_and(|n| n < 1) {
                self.error(Some(s.span()), "kinesis stream shards must be at least 1");
            }
        }
        for d in &res.firehose_delivery_streams {
            let d_ref = d.get_ref();
            if let Some(source) = &d_ref.source_stream
                && !streams.contains(&source.as_str())
            {
                self.error(Some(d.span()), format!("delivery stream {}: source_stream {:?} is not declared under kinesis_streams", d_ref.name, d_ref.source_stream));
            }
            if !buckets.contains(&d_ref.bucket.as_str()) {
                self.error(
                    Some(d.span()),
                    format!(
                        "delivery stream {}: bucket {:?} is not declared under s3_buckets",
                        d_ref.name, d_ref.bucket
                    ),
                );
            }
        }
        for q in &res.sqs_queues {
            let q_ref = q.get_ref();
            if let Some(dlq) = &q_ref.dead_letter_queue
                && !queues.contains(&dlq.as_str())
            {
                self.error(
                    Some(q.span()),
                    format!(
                        "queue {}: dead_letter_queue {dlq:?} is not declared under sqs_queues",
                        q_ref.name
                    ),
                );
            }
            if q_ref.content_based_deduplication && !q_ref.name.ends_with(".fifo") {
                self.error(
                    Some(q.span()),
                    format!(
                        "queue {}: content_based_deduplication needs a FIFO queue (.fifo)",
                        q_ref.name
                    ),
                );
            }
        }
        for m in &res.state_machines {
            let kind = m.get_ref().kind.as_deref().unwrap_or("STANDARD");
            if kind != "STANDARD" && kind != "EXPRESS" {
                self.error(
                    Some(m.span()),
                    format!(
                        "state machine {}: kind must be STANDARD or EXPRESS",
                        m.get_ref().name
                    ),
                );
            }
        }
    }
}
