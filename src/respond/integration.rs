//! Integration responses: how the service's answer becomes the client's response, as API
//! Gateway's. The first response whose pattern matches the service's status (and error
//! code) is selected, its status and headers set, and its template (or the route's response
//! template) renders the body with `$input` bound to the service's response. Then
//! `$context.responseOverride` from the request template, then from the response template.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::config::{Config, HeaderSource, RouteConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::integrations::IntegrationError;
use crate::mapping::{self, MappingInput, Params};
use crate::vtl::Template;

/// A route's response templates, compiled.
#[derive(Debug, Default)]
pub struct ResponseTemplates {
    /// The route's `response_template`.
    pub default: Option<std::sync::Arc<Template>>,
    /// One per integration response, in order.
    pub by_response: Vec<Option<std::sync::Arc<Template>>>,
}

/// What the client's response is made from, besides the service's answer.
pub struct Answer<'a> {
    pub config: &'a Config,
    pub route: &'a RouteConfig,
    pub templates: &'a ResponseTemplates,
    pub request_id: &'a str,
    /// `$context.responseOverride` of the request template.
    pub overrides: Option<&'a Json>,
    /// The request's `$input.params()` and `$context`, built if a template or header reads
    /// them.
    pub params: &'a dyn Fn() -> Params,
    pub context: &'a dyn Fn() -> Json,
}

/// The client's response for the service's answer (an error no response selects stays the
/// gateway's own error).
/// `status` is the upstream's for an answer that is not an error (an HTTP backend's; 200
/// for AWS services).
pub fn integration(
    a: &Answer<'_>,
    status: u16,
    result: Result<Json, IntegrationError>,
    upstream_headers: &[(String, String)],
) -> Result<Response<Body>, GatewayError> {
    let route = a.route;
    // The service's answer, as integration responses see it: an HTTP status and a JSON body.
    let (upstream_status, upstream, error) = match result {
        // A mock's "answer" is the status its request template chose; its body is empty.
        Ok(body) if route.action.answers_with_status() => (
            body["statusCode"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200),
            serde_json::json!({}),
            None,
        ),
        Ok(body) => (status, body, None),
        Err(e) => match &e {
            IntegrationError::Service {
                status,
                code,
                message,
                ..
            } if !route.responses.is_empty() => (
                *status,
                serde_json::json!({"__type": code, "message": message}),
                Some((e.clone(), code.clone())),
            ),
            // A function's error: `$input` is its error document, as on API Gateway.
            IntegrationError::FunctionError {
                error_message,
                body,
                ..
            } if !route.responses.is_empty() => {
                (502, body.clone(), Some((e.clone(), error_message.clone())))
            }
            _ => return Err(e.into()),
        },
    };
    let (error, code) = match error {
        Some((e, code)) => (Some(e), Some(code)),
        None => (None, None),
    };
    let code = code.as_deref();
    let (status, template, response) = match select_response(route, upstream_status, code) {
        Some(i) => (
            route.responses[i].status,
            a.templates.by_response[i]
                .as_ref()
                .or(a.templates.default.as_ref()),
            Some(&route.responses[i]),
        ),
        // An error no pattern selects keeps the gateway's own error response.
        None => match error {
            Some(e) => return Err(e.into()),
            None => (
                route.action.default_status(upstream_status),
                a.templates.default.as_ref(),
                None,
            ),
        },
    };
    let (body, response_overrides) = match template {
        // A backend's text that is not JSON (an HTTP backend's, a query API's XML) as it is.
        None => match &upstream {
            Json::String(text) if route.action.answers_text() => (text.clone(), None),
            _ => (upstream.to_string(), None),
        },
        Some(t) => render_response(a, t, &upstream)?,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = super::json_response(status, body, a.request_id);
    if let Some(r) = response {
        let context = r
            .headers
            .iter()
            .any(|(_, s)| matches!(s, HeaderSource::Context(_)))
            .then(a.context);
        for (name, source) in &r.headers {
            if let Some(value) = header_value(
                a.config,
                source,
                context.as_ref(),
                &upstream,
                upstream_headers,
            ) {
                super::set_header(&mut resp, name, &value);
            }
        }
    }
    // API Gateway honours `$context.responseOverride` in the integration response's
    // template; the request template's are applied first, so the response's win.
    super::apply_overrides(&mut resp, a.overrides);
    super::apply_overrides(&mut resp, response_overrides.as_ref());
    Ok(resp)
}

/// Whether a route's integration responses read the service's response headers.
pub fn reads_upstream_headers(route: &RouteConfig) -> bool {
    route.responses.iter().any(|r| {
        r.headers
            .iter()
            .any(|(_, s)| matches!(s, HeaderSource::ResponseHeader(_)))
    })
}

/// API Gateway's selection: the first response whose pattern matches the whole status
/// text; otherwise the default (no pattern), but only for a successful call: an upstream
/// error is never reported through the default (success) response.
fn select_response(route: &RouteConfig, status: u16, error: Option<&str>) -> Option<usize> {
    let text = status.to_string();
    route
        .responses
        .iter()
        .position(|r| {
            let selective = r.pattern.is_some() || r.error_pattern.is_some();
            selective
                && r.pattern.as_ref().is_none_or(|p| p.is_match(&text))
                && r.error_pattern
                    .as_ref()
                    .is_none_or(|p| error.is_some_and(|code| p.is_match(code)))
        })
        .or_else(|| {
            error
                .is_none()
                .then(|| {
                    route
                        .responses
                        .iter()
                        .position(|r| r.pattern.is_none() && r.error_pattern.is_none())
                })
                .flatten()
        })
}

fn header_value(
    config: &Config,
    source: &HeaderSource,
    context: Option<&Json>,
    upstream: &Json,
    upstream_headers: &[(String, String)],
) -> Option<String> {
    let text = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    };
    match source {
        HeaderSource::Literal(s) => Some(s.clone()),
        HeaderSource::StageVariable(name) => config.stage_variables.get(name).cloned(),
        HeaderSource::Context(path) => {
            let mut v = context?;
            for part in path.split('.') {
                v = v.get(part)?;
            }
            text(v)
        }
        HeaderSource::ResponseBody(field) => upstream.get(field).and_then(text),
        HeaderSource::ResponseHeader(name) => upstream_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
    }
}

/// A response template sees the service's response as `$input`; `$input.params()` still
/// returns the client request's parameters.
fn render_response(
    a: &Answer<'_>,
    template: &Template,
    upstream: &Json,
) -> Result<(String, Option<Json>), GatewayError> {
    let text = upstream.to_string();
    let empty: IndexMap<String, String> = IndexMap::new();
    let stage = if a.config.stage_variables.is_empty() {
        &empty
    } else {
        &a.config.stage_variables
    };
    let input = MappingInput {
        body: &text,
        params: a.params,
        stage_variables: stage,
        context: a.context,
    };
    mapping::render(template, &input, &a.config.limits)
        .map(|r| {
            let overrides = r.context.as_ref().map(|c| c["responseOverride"].clone());
            (r.body, overrides)
        })
        .map_err(|e| GatewayError::new(ErrorKind::Template, format!("response template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(responses: &str) -> RouteConfig {
        let text = format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"/a\"\naction = \"kinesis:PutRecord\"\n{responses}"
        );
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            &text,
            std::path::Path::new("."),
        )
        .unwrap();
        config.routes.into_iter().next().unwrap()
    }

    #[test]
    fn integration_responses_select_by_whole_status() {
        let r = route(
            "[[routes.responses]]\npattern = \"4\\\\d{2}\"\nstatus = 400\n[[routes.responses]]\nstatus = 202\n[[routes.responses]]\npattern = \"5..\"\nstatus = 503\n",
        );
        let e = Some("ValidationException");
        assert_eq!(
            select_response(&r, 200, None),
            Some(1),
            "the default takes successes"
        );
        assert_eq!(select_response(&r, 404, e), Some(0));
        assert_eq!(select_response(&r, 500, e), Some(2));
        assert_eq!(
            select_response(&r, 4000, e),
            None,
            "patterns match the whole status"
        );
        let only_default = route("[[routes.responses]]\nstatus = 202\n");
        assert_eq!(
            select_response(&only_default, 400, e),
            None,
            "errors never use the default"
        );
        assert_eq!(select_response(&route(""), 200, None), None);
        // By error code, alone or with the status.
        let by_code = route(
            "[[routes.responses]]\nerror_pattern = \"ResourceNotFound.*\"\nstatus = 404\n[[routes.responses]]\npattern = \"4..\"\nerror_pattern = \"Throttl.*|ProvisionedThroughput.*\"\nstatus = 429\n[[routes.responses]]\npattern = \"4..\"\nstatus = 400\n",
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ResourceNotFoundException")),
            Some(0)
        );
        assert_eq!(
            select_response(&by_code, 500, Some("ResourceNotFoundException")),
            Some(0)
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ThrottlingException")),
            Some(1)
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ValidationException")),
            Some(2)
        );
        assert_eq!(
            select_response(&by_code, 200, None),
            None,
            "a code pattern never takes a success"
        );
    }
}
