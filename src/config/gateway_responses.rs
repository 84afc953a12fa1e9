//! `[gateway_responses.TYPE]`: the status, headers and body template of the gateway's own
//! error responses, by API Gateway's response type.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawGatewayResponse {
    /// The status instead of the default one.
    pub status: Option<u16>,
    /// Headers to set: literal values, `'*'` (quotes optional).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// A template rendering the body, with `$context.error.message`, `.messageString` (the
    /// message as a JSON string), `.responseType` and `.validationErrorString`.
    pub template: Option<String>,
}

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

impl Validator<'_> {
    pub(super) fn gateway_responses(
        &mut self,
        raw: &IndexMap<String, Spanned<RawGatewayResponse>>,
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
                let what = format!("gateway_responses.{kind}.template:");
                let max = Some(super::MAX_TEMPLATE_BYTES);
                self.named_file(span.clone(), base, t, &what, max)
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
}
