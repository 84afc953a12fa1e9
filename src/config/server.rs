//! `[server]`, `[templates]` and `[aws]`: the listener, its timeouts and bounds, the
//! template limits, and how the AWS clients are built.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{MAX_JSON_DEPTH, Validator};
use crate::integrations::AwsSettings;
use crate::vtl::Limits;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawServer {
    /// Address to listen on (default `127.0.0.1:8080`); `serve --listen` overrides it.
    pub listen: Option<Spanned<String>>,
    /// Stage name, visible as `$context.stage` (default `prod`).
    pub stage: Option<Spanned<String>>,
    /// Largest request body accepted; larger gets 413 (default 10 MB, as API Gateway).
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Body bytes all requests together may hold in memory at once (default 64 MiB, at least
    /// `max_body_bytes`); past it, requests get 503 with `Retry-After` before their body is
    /// read.
    pub max_inflight_body_bytes: Option<Spanned<u64>>,
    /// Default upstream call timeout for routes (default `29s`, as API Gateway).
    pub integration_timeout: Option<Spanned<String>>,
    /// Time to finish in-flight requests after SIGTERM/Ctrl-C (default `30s`).
    pub shutdown_grace: Option<Spanned<String>>,
    /// Time between SIGTERM (`/readyz` failing) and no longer accepting connections, so that
    /// balancers take the node out first (default `0s`).
    pub shutdown_delay: Option<Spanned<String>>,
    /// Time a client has to send a request's headers, from the first byte (default `10s`).
    pub header_read_timeout: Option<Spanned<String>>,
    /// Time a keep-alive connection may wait for its next request (default `75s`: longer
    /// than a balancer's idle timeout, as AWS ALB's 60 s, so the balancer closes first).
    pub idle_timeout: Option<Spanned<String>>,
    /// Time a request may take from its headers to its response, all stages together
    /// (default `60s`); past it the client gets 504. Routes' timeouts must fit within it.
    pub request_timeout: Option<Spanned<String>>,
    /// Time a client has to send a request's body, once its headers are in (default `30s`).
    pub body_read_timeout: Option<Spanned<String>>,
    /// Headers a request may have (default 100).
    pub max_headers: Option<Spanned<u64>>,
    /// Connections open at once, at most (default 16384, and never more than the open-file
    /// limit allows, which the gateway raises to its hard limit at start). Past it, new
    /// connections are closed at once and counted (`gateway_connections_refused_total`).
    pub max_connections: Option<Spanned<u64>>,
    /// Connections open at once from one client address, at most (default 4096; clients
    /// behind one NAT share an address).
    pub max_connections_per_ip: Option<Spanned<u64>>,
    /// Time a new connection has to send its first byte (default `10s`).
    pub first_byte_timeout: Option<Spanned<String>>,
    /// A second listener for operators (`127.0.0.1:9090`, say): `/healthz`, `/readyz`,
    /// `/metrics` and the OpenAPI document, with connections of its own, so that they stay
    /// reachable however busy the main listener is. When set, `/metrics` and the OpenAPI
    /// document are served there only. The production setting: keep it off the public
    /// network.
    pub admin_listen: Option<Spanned<String>>,
    /// Media types whose bodies are binary (`application/octet-stream`, `image/*`, `*/*`):
    /// templates get them base64-encoded in `$input.body`, as API Gateway's
    /// `binaryMediaTypes` (default none: bodies must be UTF-8 text).
    #[serde(default)]
    pub binary_media_types: Vec<String>,
    /// Nesting a JSON body may have, 1 to 127 (default 127, the parser's own bound); deeper
    /// bodies get 400 `Invalid request body`.
    pub max_json_depth: Option<Spanned<u64>>,
    /// Where the OpenAPI description of the routes is served (default `/openapi.json`;
    /// `""` turns it off).
    pub openapi_path: Option<Spanned<String>>,
    /// Whether it includes the integration details (templates, targets, stage variables, the
    /// `x-amazon-apigateway-*` extensions) that let it be imported again (default `false`:
    /// the document describes the API for clients only, since anyone who reaches the
    /// listener can read it; `ingest-gateway export-openapi` always prints the full one).
    pub openapi_extensions: Option<bool>,
    /// Serve the generated client SDKs as `GET /sdk/typescript.tar.gz` and
    /// `/sdk/python.tar.gz` beside the OpenAPI document (default `false`).
    pub sdk_downloads: Option<bool>,
    /// `/readyz` fails until every route's target was found (default `false`: a missing or
    /// unreachable target is only logged and shown in `gateway_upstream_ready`).
    pub require_upstreams: Option<bool>,
    /// HTTPS: the certificate, its key, optional mutual TLS and SNI certificates (see
    /// `docs/edge.md`).
    pub tls: Option<super::edge::RawTls>,
    /// CORS for browser pages, for every route (a route may set `cors = false` or its own).
    pub cors: Option<super::edge::RawCors>,
    /// Balancers and proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded` is believed:
    /// the client is the right-most address not in these (default none: the socket's peer).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Client addresses (CIDRs) allowed; others get 403 (default: all).
    #[serde(default)]
    pub allow_ips: Vec<Spanned<String>>,
    /// Client addresses (CIDRs) refused with 403, before anything else.
    #[serde(default)]
    pub deny_ips: Vec<Spanned<String>>,
    /// A throttle per client address, before any key is looked up: `{ rate, burst }`; past
    /// it, 429 with `Retry-After`.
    pub ip_throttle: Option<Spanned<super::auth::RawThrottle>>,
    /// Serve the JavaScript tracker at `GET /sdk/tracker.js` (default: when `[server.cors]`
    /// is set).
    pub tracker: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawAws {
    /// AWS region (default: the standard chain, then `us-east-1`).
    pub region: Option<String>,
    /// Endpoint for every AWS client, e.g. a local emulator. `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
    /// Longest wait for one attempt of one AWS call (default `5s`); the SDK retries a failed
    /// attempt, and the route's `timeout` bounds them all.
    pub call_timeout: Option<Spanned<String>>,
    /// Longest wait to connect to an AWS endpoint (default `2s`).
    pub connect_timeout: Option<Spanned<String>>,
    /// The account the API is in, for the `methodArn` Lambda authorizers get (default
    /// `000000000000`).
    pub account_id: Option<String>,
    /// Services besides the ones the gateway knows, by their protocol:
    /// `[aws.services.cognito-idp] protocol = "json", json_version = "1.1",
    /// target_prefix = "AWSCognitoIdentityProviderService"`.
    #[serde(default)]
    pub services: indexmap::IndexMap<String, Spanned<RawAwsService>>,
}

/// How to speak to a service the gateway does not know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsService {
    /// `"json"` (`X-Amz-Target`) or `"query"` (a form with `Action` and `Version`).
    pub protocol: String,
    /// JSON: `"1.0"` or `"1.1"` (default `"1.1"`).
    pub json_version: Option<String>,
    /// JSON: the `X-Amz-Target` prefix before `.Operation`.
    pub target_prefix: Option<String>,
    /// Query: the API version, `YYYY-MM-DD`.
    pub api_version: Option<String>,
    /// SigV4's service name (default: the service's name).
    pub signing_name: Option<String>,
    /// The request field a route's `target` pins (say `UserPoolId`).
    pub target_field: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawTemplateLimits {
    /// `#foreach` iterations per loop (default 1000, as API Gateway).
    pub max_loop_iterations: Option<usize>,
    /// Evaluation steps per render (default 1,000,000).
    pub max_steps: Option<u64>,
    /// Largest rendered output in bytes (default 16 MiB).
    pub max_output_bytes: Option<usize>,
}

/// The validated `[server]` and `[templates]` (spread into `Config`).
pub(super) struct Server {
    pub listen: SocketAddr,
    pub stage: String,
    pub max_body_bytes: usize,
    pub max_inflight_body_bytes: usize,
    pub integration_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_json_depth: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub first_byte_timeout: Duration,
    pub admin_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub openapi_path: Option<String>,
    pub openapi_extensions: bool,
    pub sdk_downloads: bool,
    pub require_upstreams: bool,
    pub binary_media_types: Vec<String>,
}

impl Validator<'_> {
    /// A listener's `address:port`.
    pub(super) fn address(
        &mut self,
        v: Option<&Spanned<String>>,
        what: &str,
    ) -> Option<SocketAddr> {
        let v = v?;
        let parsed = v.get_ref().parse().ok();
        if parsed.is_none() {
            self.error(
                Some(v.span()),
                format!("{what}: not an address:port: {:?}", v.get_ref()),
            );
        }
        parsed
    }

    pub(super) fn server(&mut self, raw: &RawServer, templates: &RawTemplateLimits) -> Server {
        let listen = match &raw.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
                self.error(
                    Some(l.span()),
                    format!("server.listen: not an address:port: {:?}", l.get_ref()),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };
        let stage = match &raw.stage {
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
        let max_body_bytes = match &raw.max_body_bytes {
            None => 10 * 1024 * 1024,
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1 << 30 => {
                self.error(
                    Some(n.span()),
                    "server.max_body_bytes must be 1 to 1073741824",
                );
                10 * 1024 * 1024
            }
            Some(n) => *n.get_ref() as usize,
        };
        let max_inflight_body_bytes = match &raw.max_inflight_body_bytes {
            None => (64 << 20).max(max_body_bytes),
            Some(n) if (*n.get_ref() as usize) < max_body_bytes => {
                self.error(
                    Some(n.span()),
                    format!("server.max_inflight_body_bytes must be at least max_body_bytes ({max_body_bytes})"),
                );
                max_body_bytes
            }
            Some(n) => *n.get_ref() as usize,
        };
        let integration_timeout = self.duration(
            raw.integration_timeout.as_ref(),
            Duration::from_secs(29),
            "server.integration_timeout",
        );
        let shutdown_grace = self.duration(
            raw.shutdown_grace.as_ref(),
            Duration::from_secs(30),
            "server.shutdown_grace",
        );
        let shutdown_delay = self.duration(
            raw.shutdown_delay.as_ref(),
            Duration::ZERO,
            "server.shutdown_delay",
        );
        let header_read_timeout = self.duration(
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "server.header_read_timeout",
        );
        let body_read_timeout = self.duration(
            raw.body_read_timeout.as_ref(),
            Duration::from_secs(30),
            "server.body_read_timeout",
        );
        let idle_timeout = self.duration(
            raw.idle_timeout.as_ref(),
            Duration::from_secs(75),
            "server.idle_timeout",
        );
        let request_timeout = self.duration(
            raw.request_timeout.as_ref(),
            Duration::from_secs(60),
            "server.request_timeout",
        );
        let max_json_depth = match &raw.max_json_depth {
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
        let max_headers = match &raw.max_headers {
            None => 100,
            Some(n) if !(1..=1000).contains(n.get_ref()) => {
                self.error(Some(n.span()), "server.max_headers must be 1 to 1000");
                100
            }
            Some(n) => *n.get_ref() as usize,
        };
        let mut count = |v: Option<&Spanned<u64>>, default: usize, what: &str| match v {
            None => default,
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 10_000_000 => {
                self.error(Some(n.span()), format!("{what} must be 1 to 10000000"));
                default
            }
            Some(n) => *n.get_ref() as usize,
        };
        let max_connections = count(
            raw.max_connections.as_ref(),
            16_384,
            "server.max_connections",
        );
        let max_connections_per_ip = count(
            raw.max_connections_per_ip.as_ref(),
            4096,
            "server.max_connections_per_ip",
        );
        let first_byte_timeout = self.duration(
            raw.first_byte_timeout.as_ref(),
            Duration::from_secs(10),
            "server.first_byte_timeout",
        );
        let admin_listen = self.address(raw.admin_listen.as_ref(), "server.admin_listen");
        let defaults = Limits::default();
        let limits = Limits {
            max_loop_iterations: templates
                .max_loop_iterations
                .unwrap_or(defaults.max_loop_iterations),
            max_steps: templates.max_steps.unwrap_or(defaults.max_steps),
            max_output_bytes: templates
                .max_output_bytes
                .unwrap_or(defaults.max_output_bytes),
            ..defaults
        };
        let openapi_path = match &raw.openapi_path {
            None => Some("/openapi.json".to_string()),
            Some(p) if p.get_ref().is_empty() => None,
            Some(p) => {
                if !p.get_ref().starts_with('/') {
                    self.error(Some(p.span()), "server.openapi_path must start with '/'");
                }
                Some(p.get_ref().clone())
            }
        };
        Server {
            listen,
            stage,
            max_body_bytes,
            max_inflight_body_bytes,
            integration_timeout,
            shutdown_grace,
            shutdown_delay,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            request_timeout,
            max_json_depth,
            max_headers,
            max_connections,
            max_connections_per_ip,
            first_byte_timeout,
            admin_listen,
            limits,
            openapi_path,
            openapi_extensions: raw.openapi_extensions.unwrap_or(false),
            sdk_downloads: raw.sdk_downloads.unwrap_or(false),
            require_upstreams: raw.require_upstreams.unwrap_or(false),
            binary_media_types: raw
                .binary_media_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Declares `[aws.services.*]` so that routes may call them (before routes are read).
    pub(super) fn aws_services(&mut self, raw: &RawAws) {
        use crate::integrations::aws::{self, Protocol};
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 40
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        for (name, spanned) in &raw.services {
            let (span, svc) = (Some(spanned.span()), spanned.get_ref());
            let what = format!("aws.services.{name}");
            if !name_ok(name) {
                self.error(
                    span,
                    format!("{what}: a service name is lower-case letters, digits and '-'"),
                );
                continue;
            }
            if aws::SERVICES.iter().any(|s| s.name == name) {
                self.error(
                    span,
                    format!("{what}: the gateway knows {name} already; remove this table"),
                );
                continue;
            }
            let protocol = match svc.protocol.as_str() {
                "json" => {
                    let version = svc.json_version.as_deref().unwrap_or("1.1");
                    if version != "1.0" && version != "1.1" {
                        self.error(
                            span.clone(),
                            format!(
                                "{what}: json_version {version:?}: expected \"1.0\" or \"1.1\""
                            ),
                        );
                    }
                    let Some(prefix) = svc.target_prefix.as_deref().filter(|p| {
                        !p.is_empty()
                            && p.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                    }) else {
                        self.error(span, format!("{what}: a json service needs target_prefix, the X-Amz-Target before .Operation (letters, digits, '_', '.')"));
                        continue;
                    };
                    if svc.api_version.is_some() {
                        self.error(
                            span.clone(),
                            format!("{what}: api_version is for protocol = \"query\""),
                        );
                    }
                    Protocol::Json {
                        version: leak(version),
                        target_prefix: leak(prefix),
                    }
                }
                "query" => {
                    let Some(version) = svc.api_version.as_deref().filter(|v| {
                        v.len() == 10 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    }) else {
                        self.error(
                            span,
                            format!("{what}: a query service needs api_version, as YYYY-MM-DD"),
                        );
                        continue;
                    };
                    if svc.json_version.is_some() || svc.target_prefix.is_some() {
                        self.error(
                            span.clone(),
                            format!(
                                "{what}: json_version and target_prefix are for protocol = \"json\""
                            ),
                        );
                    }
                    Protocol::Query {
                        version: leak(version),
                    }
                }
                other => {
                    self.error(
                        span,
                        format!("{what}: protocol {other:?}: expected \"json\" or \"query\""),
                    );
                    continue;
                }
            };
            let signing = svc.signing_name.as_deref().unwrap_or(name);
            if !name_ok(signing) {
                self.error(
                    span,
                    format!("{what}: signing_name {signing:?}: lower-case letters, digits and '-'"),
                );
                continue;
            }
            aws::declare(name, signing, protocol, svc.target_field.as_deref());
        }
    }

    pub(super) fn aws(&mut self, raw: RawAws) -> AwsSettings {
        AwsSettings {
            call_timeout: self.duration(
                raw.call_timeout.as_ref(),
                Duration::from_secs(5),
                "aws.call_timeout",
            ),
            connect_timeout: self.duration(
                raw.connect_timeout.as_ref(),
                Duration::from_secs(2),
                "aws.connect_timeout",
            ),
            region: raw.region,
            endpoint_url: raw.endpoint_url,
            account_id: raw.account_id,
        }
    }
}
