//! `gateway.toml`: loaded raw ([`raw`]), then validated into the typed [`Config`] the rest
//! of the gateway uses. Validation collects every problem with its location, so
//! `ingest-gateway check-config` can print them all at once as `file:line:col: message`.
//!
//! One file per section, each with its raw structs (the user documentation of the file)
//! and their validation: [`server`] (with `[templates]` and `[aws]`), [`auth`] (with
//! `[usage_plans]`), [`routes`] (with a route's [`batch`] and [`responses`]), [`spool`],
//! [`resources`] and [`gateway_responses`]. A section's values become the types of the
//! module that uses them (`BatchPolicy`, `Throttle`, `spool::Settings`); a service's caps
//! come from its integration.
//!
//! This module reads files and parses; it never spawns tasks or builds AWS clients.

pub mod auth;
pub mod authorizers;
pub mod batch;
pub mod cache;
pub mod edge;
pub mod gateway_responses;
pub mod integration;
pub mod raw;
pub mod resources;
pub mod responses;
pub mod routes;
pub mod server;
pub mod spool;
pub mod stages;
pub mod telemetry;
pub mod websocket;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use crate::auth::plans::{Throttle, UsagePlan};
pub use crate::integrations::AwsSettings;
use crate::vtl::Limits;
pub use gateway_responses::{GATEWAY_RESPONSE_TYPES, GatewayResponse};
use raw::RawConfig;
pub use responses::{HeaderSource, IntegrationResponse};
pub use routes::{Passthrough, RequiredParameters, RouteConfig};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub stage: String,
    pub max_body_bytes: usize,
    /// Body bytes all requests may hold at once.
    pub max_inflight_body_bytes: usize,
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
    /// `server.sdk_downloads`.
    pub sdk_downloads: bool,
    /// `/readyz` fails until every route's target was found.
    pub require_upstreams: bool,
    pub max_headers: usize,
    /// Connections open at once on the main listener, in all and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Time a new connection has to send its first byte.
    pub first_byte_timeout: Duration,
    /// The operators' listener, if any.
    pub admin_listen: Option<SocketAddr>,
    pub aws: AwsSettings,
    pub stage_variables: IndexMap<String, String>,
    /// `[stages.NAME]`, in the file's order; empty: one stage, `stage`, at the root.
    pub stages: Vec<stages::Stage>,
    /// `[websocket]`.
    pub websocket: Option<websocket::Websocket>,
    /// Of a stage with a canary: whether this is its canary (`$context.isCanaryRequest`).
    pub canary: Option<bool>,
    pub limits: Limits,
    pub routes: Vec<RouteConfig>,
    /// `telemetry.route_label`.
    pub route_label: telemetry::RouteLabel,
    /// `telemetry.latency_buckets` and `telemetry.size_buckets`.
    pub buckets: telemetry::Buckets,
    pub resources: crate::integrations::provision::Resources,
    pub key_store: crate::auth::backend::StoreLocation,
    pub account_throttle: Option<Throttle>,
    pub usage_plans: Vec<UsagePlan>,
    /// The directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// The spool's settings (used by routes with a spool mode).
    pub spool: crate::spool::Settings,
    /// Overrides of the gateway's error responses, by API Gateway's response type.
    pub gateway_responses: Vec<(String, GatewayResponse)>,
    /// TLS, CORS, client addresses and the tracker.
    pub edge: edge::Edge,
    /// The authorizers routes name, in the file's order.
    pub authorizers: Vec<authorizers::AuthorizerConfig>,
}

impl Config {
    /// The `route` label of a route's own series (`telemetry.route_label`); `None`: the
    /// series carry no route label.
    pub fn metrics_label(&self, route: &RouteConfig) -> Option<String> {
        match self.route_label {
            telemetry::RouteLabel::Route => Some(route.name()),
            telemetry::RouteLabel::Group => Some(route.group.clone()),
            telemetry::RouteLabel::None => None,
        }
    }

    /// The plan by identity that counts a route's principals, if any.
    pub fn identity_plan(&self, route: &RouteConfig) -> Option<&UsagePlan> {
        self.usage_plans
            .iter()
            .find(|p| p.identity.is_some() && plan_covers(p, route))
    }
}

/// Whether a plan by identity covers a route: one its `routes` name, or (without `routes`)
/// any route with an authorizer.
fn plan_covers(plan: &UsagePlan, route: &RouteConfig) -> bool {
    match &plan.routes {
        Some(names) => names.contains(&route.name()),
        None => route.authorizer.is_some(),
    }
}

/// The deepest JSON body serde_json parses (its recursion limit), and the default bound.
pub const MAX_JSON_DEPTH: usize = 127;

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
    match parse_all(file, text, base_dir) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// Reads a configuration file for `check-config`: every problem, and the configuration as
/// far as it could be built (none when the file is not TOML of the right shape), so the
/// templates that do exist can be compiled and their problems reported in the same run.
pub fn load_all(path: &Path) -> (Option<Config>, Vec<ConfigError>) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            parse_all(path, &text, &base)
        }
        Err(e) => (
            None,
            vec![ConfigError {
                file: path.to_path_buf(),
                at: None,
                message: format!("cannot read the configuration: {e}"),
            }],
        ),
    }
}

fn parse_all(file: &Path, text: &str, base_dir: &Path) -> (Option<Config>, Vec<ConfigError>) {
    let mut v = Validator {
        file,
        text,
        errors: Vec::new(),
        allow_outside: false,
    };
    // Unknown keys are collected (with where they are) rather than stopping the parse, so
    // one misspelt key does not hide every other problem.
    let mut unknown = Vec::new();
    let parsed = toml::Deserializer::parse(text)
        .and_then(|de| serde_ignored::deserialize(de, |path| unknown.push(path.to_string())));
    let raw: RawConfig = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().to_string();
            let at = e.span().map(|s| line_col(text, s.start));
            return (
                None,
                vec![ConfigError {
                    file: file.to_path_buf(),
                    at,
                    message,
                }],
            );
        }
    };
    unknown.sort_by_key(|path| locate_key(text, path));
    for path in unknown {
        // A `Spanned` value's own wrapper is not part of what the user wrote.
        let path = path
            .split('.')
            .filter(|s| !s.starts_with("$__serde_spanned"))
            .collect::<Vec<_>>()
            .join(".");
        let at = locate_key(text, &path).map(|offset| line_col(text, offset));
        v.errors.push(ConfigError {
            file: file.to_path_buf(),
            at,
            message: match path.rsplit_once('.') {
                Some((table, key)) => format!("unknown field `{key}` in {}", display_path(table)),
                None => format!("unknown field `{path}`"),
            },
        });
    }
    v.allow_outside = raw.allow_paths_outside;
    let config = v.validate(raw, base_dir);
    (Some(config), v.errors)
}

/// `routes.2.batchh` as `routes[2].batchh`.
fn display_path(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Where an unknown key (a path such as `routes.2.batchh` or `server.listenn`) is written:
/// after the header of its table (the nth `[[routes]]` for an index), the first line that
/// sets it, or the header itself when the key is a table. `None` when it cannot be found.
fn locate_key(text: &str, path: &str) -> Option<usize> {
    let segs: Vec<&str> = path.split('.').collect();
    let (key, parents) = segs.split_last()?;
    // The header the key lives under, if any: `[a.b]` or the nth `[[a]]`.
    let mut from = 0;
    let mut table = String::new();
    let mut i = 0;
    while i < parents.len() {
        let name = parents[i];
        if !table.is_empty() {
            table.push('.');
        }
        table.push_str(name);
        if let Some(n) = parents.get(i + 1).and_then(|s| s.parse::<usize>().ok()) {
            let header = format!("[[{table}]]");
            from = nth_line_starting(text, from, &header, n)?;
            i += 2;
        } else {
            i += 1;
        }
    }
    let lines_from = |start: usize| {
        text[start..]
            .split_inclusive('\n')
            .scan(start, |at, line| {
                let here = *at;
                *at += line.len();
                Some((here, line))
            })
            .collect::<Vec<_>>()
    };
    let full = if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    };
    for (at, line) in lines_from(from) {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // The key set on its own line, or a table header naming it.
        if trimmed.starts_with(&format!("{key} ")) || trimmed.starts_with(&format!("{key}=")) {
            return Some(at + indent);
        }
        if trimmed.starts_with(&format!("[{full}]")) || trimmed.starts_with(&format!("[[{full}]]"))
        {
            return Some(at + indent);
        }
        // Inside an inline table: `batch = { lingerr = "5ms" }`.
        if let Some(col) = line
            .find(&format!("{{ {key} "))
            .or_else(|| line.find(&format!(", {key} ")))
        {
            return Some(at + col + 2);
        }
    }
    None
}

/// The offset of the line starting with `header` (after whitespace) that is the `n`th (from
/// 0) such line at or after `from`.
fn nth_line_starting(text: &str, from: usize, header: &str, n: usize) -> Option<usize> {
    let mut seen = 0;
    let mut at = from;
    for line in text[from..].split_inclusive('\n') {
        if line.trim_start().starts_with(header) {
            if seen == n {
                return Some(at);
            }
            seen += 1;
        }
        at += line.len();
    }
    None
}

/// Whether `path` lies in `dir` once both are resolved (symbolic links and `..` included).
fn inside(path: &Path, dir: &Path) -> bool {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    // An error at the end (a value missing after the last key) points at the last text,
    // not at the empty line after it.
    let content = text.trim_end().len();
    let mut offset = offset.min(text.len());
    if offset >= content && content > 0 {
        offset = content - 1;
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
    }
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
    /// `allow_paths_outside`: files may lie outside the configuration's directory.
    allow_outside: bool,
}

/// A template file's size, at most (a template is parsed at start-up and kept in memory).
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            at: span.map(|s| line_col(self.text, s.start)),
            message: message.into(),
        });
    }

    /// A file the configuration names (a template, a model, a definition), relative to the
    /// configuration's directory, which it must stay inside unless `allow_paths_outside` is
    /// set (so a configuration cannot make the gateway read `/etc/shadow` as a template), and
    /// at most `max_bytes` long. `what` starts the error messages ("template file").
    fn named_file(
        &mut self,
        span: Option<Range<usize>>,
        base: &Path,
        name: &str,
        what: &str,
        max_bytes: Option<u64>,
    ) -> PathBuf {
        let path = base.join(name);
        let problem = match std::fs::metadata(&path) {
            Err(_) => Some("does not exist".to_string()),
            Ok(m) if m.is_dir() => Some("is a directory".to_string()),
            Ok(m) if max_bytes.is_some_and(|max| m.len() > max) => Some(format!(
                "is {} bytes; at most {} are read",
                m.len(),
                max_bytes.unwrap_or_default()
            )),
            Ok(_) if !self.allow_outside && !inside(&path, base) => Some(format!(
                "is outside the configuration's directory {}; set allow_paths_outside = true to allow it",
                base.display()
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            self.error(span, format!("{what} {} {problem}", path.display()));
        }
        path
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
        // In the file's order of concerns; errors are reported in this order.
        let server = self.server(&raw.server, &raw.templates);
        let edge = self.edge(&raw.server, base);
        let (spool, spool_mode) = self.spool(&raw.spool, base);
        self.aws_services(&raw.aws);
        // With stages, the file's routes are checked under every variable some stage has;
        // each stage checks its own.
        let vars = stages::all_variables(&raw);
        let routes = self.routes(&raw.routes, base, &server, spool_mode, &vars);
        self.resources(&raw.resources, base);
        let route_names: Vec<String> = routes.iter().map(RouteConfig::name).collect();
        let (key_store, account_throttle, usage_plans) =
            self.auth(&raw.auth, &raw.usage_plans, &route_names, base);
        let endpoint = raw.aws.endpoint_url.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|e| !e.is_empty())
        });
        let authorizers = self.authorizers(&raw.authorizers, endpoint.as_deref());
        self.route_authorizers(&raw, &routes, &authorizers, &usage_plans);
        let stages = self.stages(&raw, base, &server, spool_mode);
        let websocket = self.websocket(
            raw.websocket.as_ref(),
            base,
            &server,
            spool_mode,
            &raw.stage_variables,
        );
        let aws = self.aws(raw.aws);
        let gateway_responses = self.gateway_responses(&raw.gateway_responses, base);
        let route_label = self.telemetry(&raw.telemetry);
        let buckets = self.buckets(&raw.telemetry);
        Config {
            websocket,
            stages,
            canary: None,
            key_store,
            account_throttle,
            usage_plans,
            listen: server.listen,
            stage: server.stage,
            max_body_bytes: server.max_body_bytes,
            max_inflight_body_bytes: server.max_inflight_body_bytes,
            shutdown_grace: server.shutdown_grace,
            shutdown_delay: server.shutdown_delay,
            header_read_timeout: server.header_read_timeout,
            body_read_timeout: server.body_read_timeout,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
            max_json_depth: server.max_json_depth,
            binary_media_types: server.binary_media_types,
            openapi_path: server.openapi_path,
            openapi_extensions: server.openapi_extensions,
            sdk_downloads: server.sdk_downloads,
            require_upstreams: server.require_upstreams,
            max_headers: server.max_headers,
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            first_byte_timeout: server.first_byte_timeout,
            admin_listen: server.admin_listen,
            aws,
            stage_variables: raw.stage_variables,
            limits: server.limits,
            routes,
            route_label,
            buckets,
            resources: raw.resources,
            base_dir: base.to_path_buf(),
            spool,
            gateway_responses,
            edge,
            authorizers,
        }
    }
}
