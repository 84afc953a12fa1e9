//! Gateway responses: the gateway's own error responses (403, 429, 400, 504, ...) changed
//! by `[gateway_responses.TYPE]`: a status, headers, and a body rendered with
//! `$context.error`, as API Gateway's.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use serde_json::Value as Json;

use super::{error, error_message, response_type};
use crate::config::{Config, GatewayResponse};
use crate::error::{ErrorKind, GatewayError};
use crate::mapping::{self, MappingInput, Params};
use crate::vtl::Template;

/// The configured gateway responses' body templates, compiled, by position in
/// `config.gateway_responses`.
#[derive(Debug, Default)]
pub struct GatewayResponses {
    templates: Vec<Option<Template>>,
}

impl GatewayResponses {
    /// Compiles the body templates; errors name the file, line and column.
    pub fn compile(config: &Config) -> Result<GatewayResponses, Vec<String>> {
        let mut errors = Vec::new();
        let templates = config
            .gateway_responses
            .iter()
            .map(|(_, r)| {
                let path = r.template.as_ref()?;
                let name = path.display().to_string();
                let compiled = std::fs::read_to_string(path)
                    .map_err(|e| format!("{name}: cannot read the template: {e}"))
                    .and_then(|source| {
                        Template::compile(&name, &source).map_err(|e| format!("{e:#}"))
                    });
                compiled.map_err(|e| errors.push(e)).ok()
            })
            .collect();
        if errors.is_empty() {
            Ok(GatewayResponses { templates })
        } else {
            Err(errors)
        }
    }

    /// The client's response for an error: API Gateway's, changed by the configured gateway
    /// response for its type (status, headers, and a body rendered with `$context.error`).
    pub fn respond(&self, config: &Config, e: &GatewayError, request_id: &str) -> Response<Body> {
        let mut resp = error(e, request_id);
        let Some(i) = gateway_response_for(resp.status(), e, &config.gateway_responses) else {
            return resp;
        };
        let (kind, configured) = &config.gateway_responses[i];
        apply_gateway_response(&mut resp, configured);
        let Some(template) = self.templates.get(i).and_then(Option::as_ref) else {
            return resp;
        };
        let message = error_message(e);
        let validation = match &e.kind {
            ErrorKind::Invalid(i) => i.message.clone(),
            _ => String::new(),
        };
        let response_type = match response_type(e) {
            "" => kind.as_str(),
            t => t,
        };
        let context = || {
            serde_json::json!({
                "requestId": request_id,
                "stage": config.stage,
                "error": {
                    "message": message,
                    "messageString": Json::String(message.clone()).to_string(),
                    "responseType": response_type,
                    "validationErrorString": validation,
                },
            })
        };
        let input = MappingInput {
            body: "",
            params: &Params::default,
            stage_variables: &config.stage_variables,
            context: &context,
        };
        match mapping::render(template, &input, &config.limits) {
            Ok(r) => *resp.body_mut() = Body::from(r.body),
            Err(err) => {
                tracing::warn!(gateway_response = %kind, error = %err, "A gateway response template failed; the default body was sent.");
            }
        }
        resp
    }
}

/// Which configured gateway response applies to an error answered with `status`: the one
/// for its type, or else for its class (`DEFAULT_4XX`, `DEFAULT_5XX`).
fn gateway_response_for(
    status: StatusCode,
    e: &GatewayError,
    configured: &[(String, GatewayResponse)],
) -> Option<usize> {
    let class = if status.is_client_error() {
        "DEFAULT_4XX"
    } else {
        "DEFAULT_5XX"
    };
    let kind = response_type(e);
    configured
        .iter()
        .position(|(k, _)| k == kind)
        .or_else(|| configured.iter().position(|(k, _)| k == class))
}

/// Sets a gateway response's status and headers.
fn apply_gateway_response(resp: &mut Response<Body>, r: &GatewayResponse) {
    if let Some(status) = r.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        *resp.status_mut() = status;
    }
    for (name, value) in &r.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
}
