//! A route's `responses`: integration responses, selected by the service's status or error
//! code, with their status, headers and body template.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// An integration response, as API Gateway's: selected by a regular expression over the
/// service's HTTP status (`"200"`, `"400"`); the one without a pattern is the default.
#[derive(Debug, Clone, Deserialize)]
pub struct RawResponse {
    /// Matched against the whole status text, e.g. `"4\\d{2}"`. Absent (and no
    /// `error_pattern`): the default.
    pub pattern: Option<String>,
    /// Matched against the whole error code of a failed call, e.g.
    /// `"ResourceNotFoundException|AccessDenied.*"`; a response with both patterns needs both.
    pub error_pattern: Option<String>,
    /// The status the client gets (default 200).
    pub status: Option<u16>,
    /// Response headers: `'literal'`, `context.NAME`, `stageVariables.NAME`, or
    /// `integration.response.body.FIELD` (a field of the service's JSON response), or
    /// `integration.response.header.NAME` (a header of its HTTP response; routes that do not
    /// batch).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// A template rendering the client's body, with `$input` bound to the service's response.
    pub template: Option<String>,
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
    pub(super) fn parse(s: &str) -> Option<HeaderSource> {
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

impl Validator<'_> {
    pub(super) fn response(
        &mut self,
        resp: &Spanned<RawResponse>,
        base: &Path,
    ) -> IntegrationResponse {
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
            let max = Some(super::MAX_TEMPLATE_BYTES);
            self.named_file(span.clone(), base, t, "template file", max)
        });
        IntegrationResponse {
            pattern,
            error_pattern,
            status,
            headers,
            template,
        }
    }
}
