//! The respond stage, and the only place that chooses HTTP status codes. Errors get API
//! Gateway's bodies (`{"message": ...}`) and `x-amzn-ErrorType`; internal detail stays in
//! the log. The service's answers go through the route's integration responses
//! ([`integration`]); the gateway's own errors through the configured gateway responses
//! ([`gateway`]).

pub mod gateway;
pub mod integration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

use crate::error::{ErrorKind, GatewayError};

/// Status, message and `x-amzn-ErrorType` for an error, as API Gateway words them.
pub fn error_parts(e: &GatewayError) -> (StatusCode, &'static str, &'static str) {
    match &e.kind {
        ErrorKind::NoRoute => (
            StatusCode::FORBIDDEN,
            "Missing Authentication Token",
            "MissingAuthenticationTokenException",
        ),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "Forbidden", "ForbiddenException"),
        ErrorKind::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "UnauthorizedException",
        ),
        ErrorKind::ScopeDenied => (StatusCode::FORBIDDEN, "Forbidden", "AccessDeniedException"),
        // API Gateway's body is `{"message": null}` (see `error`).
        ErrorKind::AuthorizerFailure => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            "AuthorizerConfigurationException",
        ),
        // The message is the policy's (see `error`).
        ErrorKind::AccessDenied { .. } => {
            (StatusCode::FORBIDDEN, "Forbidden", "AccessDeniedException")
        }
        ErrorKind::UnsupportedEncoding { .. } => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "UnsupportedMediaTypeException",
        ),
        ErrorKind::UndecodableBody { .. } => (
            StatusCode::BAD_REQUEST,
            "Invalid request body",
            "BadRequestException",
        ),
        ErrorKind::Throttled { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "TooManyRequestsException",
        ),
        ErrorKind::QuotaExceeded { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Limit Exceeded",
            "LimitExceededException",
        ),
        ErrorKind::PayloadTooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Too Long",
            "RequestTooLongException",
        ),
        ErrorKind::MalformedRequest => (
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "BadRequestException",
        ),
        ErrorKind::NotImplemented => (
            StatusCode::NOT_IMPLEMENTED,
            "Not Implemented",
            "NotImplementedException",
        ),
        // The message names the record and the limit (see `error`).
        ErrorKind::RecordRefused {
            too_large: true, ..
        } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Too Long",
            "RequestTooLongException",
        ),
        ErrorKind::RecordRefused { .. } | ErrorKind::Unmappable { .. } => (
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "BadRequestException",
        ),
        ErrorKind::UnsupportedMediaType { .. } => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "UnsupportedMediaTypeException",
        ),
        ErrorKind::InvalidBody => (
            StatusCode::BAD_REQUEST,
            "Invalid request body",
            "BadRequestException",
        ),
        // The message is the validator's own (see `error`).
        ErrorKind::Invalid(_) => (
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "BadRequestException",
        ),
        ErrorKind::BodyTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "Request Timeout",
            "RequestTimeoutException",
        ),
        ErrorKind::Template | ErrorKind::BadIntegrationRequest => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error",
            "InternalServerErrorException",
        ),
        ErrorKind::MalformedUpstreamResponse => (
            StatusCode::BAD_GATEWAY,
            "Internal server error",
            "InternalServerErrorException",
        ),
        ErrorKind::UpstreamThrottled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "ServiceUnavailableException",
        ),
        ErrorKind::UpstreamFailed => (
            StatusCode::BAD_GATEWAY,
            "Bad Gateway",
            "BadGatewayException",
        ),
        ErrorKind::RecordsRejected(r) if r.retryable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Records not accepted",
            "RecordsNotAcceptedException",
        ),
        ErrorKind::Overloaded | ErrorKind::SpoolFull => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "ServiceUnavailableException",
        ),
        ErrorKind::RecordsRejected(_) => (
            StatusCode::BAD_GATEWAY,
            "Records not accepted",
            "RecordsNotAcceptedException",
        ),
        ErrorKind::UpstreamTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "Endpoint request timed out",
            "IntegrationTimeoutException",
        ),
        ErrorKind::RequestTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "Endpoint request timed out",
            "GatewayTimeoutException",
        ),
    }
}

/// The client's response for an error.
pub fn error(e: &GatewayError, request_id: &str) -> Response<Body> {
    let (status, message, error_type) = error_parts(e);
    let body = match &e.kind {
        // Name the failure and give the per-record results, so the client can retry
        // exactly the records that were not accepted.
        ErrorKind::RecordsRejected(r) => {
            let mut body = r.response.clone();
            body["message"] = serde_json::Value::String(format!(
                "{} of {} records were not accepted ({}); the others were",
                r.failed, r.total, r.code
            ));
            body.to_string()
        }
        ErrorKind::RecordRefused { message, .. }
        | ErrorKind::Unmappable { message }
        | ErrorKind::UndecodableBody { message } => {
            serde_json::json!({ "message": message }).to_string()
        }
        ErrorKind::AuthorizerFailure => serde_json::json!({ "message": null }).to_string(),
        // API Gateway's resource-policy denial writes `Message`.
        ErrorKind::AccessDenied { message } => {
            serde_json::json!({ "Message": message }).to_string()
        }
        ErrorKind::UnsupportedEncoding { encoding } => serde_json::json!({
            "message": format!("Unsupported Content-Encoding {encoding:?}"),
            "acceptedEncodings": crate::edge::decode::ENCODINGS,
        })
        .to_string(),
        // API Gateway's message, and what the route takes instead.
        ErrorKind::UnsupportedMediaType { accepted } => {
            serde_json::json!({ "message": message, "acceptedContentTypes": accepted }).to_string()
        }
        ErrorKind::Invalid(i) => {
            let mut body = serde_json::json!({ "message": i.message });
            if let Some(errors) = &i.errors {
                body["errors"] = serde_json::Value::from(errors.clone());
            }
            body.to_string()
        }
        _ => serde_json::json!({ "message": message }).to_string(),
    };
    let mut resp = json_response(status, body, request_id);
    let headers = resp.headers_mut();
    headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    if let Some(seconds) = e.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}

/// 202 for a request whose records (`spooled` of its `records`) wait in the spool: they will
/// be delivered, but there are no upstream results to show.
pub fn spooled(spooled: usize, records: usize, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "message": "Accepted",
        "records": records,
        "spooled": spooled,
    });
    json_response(StatusCode::ACCEPTED, body.to_string(), request_id)
}

/// A proxy route's answer: the backend's (or function's) status, headers and body, with the
/// request id.
pub fn proxied(p: crate::proxy::lambda::Proxied, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(p.body));
    *resp.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    for (name, value) in p.headers {
        headers.append(name, value);
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

/// A pixel route's answer: a 1x1 transparent GIF, never cached (each load is an event).
pub fn pixel(request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(&crate::edge::PIXEL_GIF[..]));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate, max-age=0"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

/// A JSON response with the request id header.
pub fn json_response(status: StatusCode, body: String, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

/// `X-RateLimit-*` headers for a key's quota.
pub fn quota_headers(resp: &mut Response<Body>, quota: &crate::auth::QuotaStatus, now_ms: i64) {
    let headers = resp.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
    let reset = u64::try_from((quota.reset_ms - now_ms + 999) / 1000).unwrap_or(0);
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

/// Sets a header from configuration, skipping values that are not valid header text.
pub fn set_header(resp: &mut Response<Body>, name: &header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name.clone(), v);
    }
}

/// Applies `$context.responseOverride` from a template: a status (100-599) and headers.
pub fn apply_overrides(resp: &mut Response<Body>, overrides: Option<&serde_json::Value>) {
    let Some(o) = overrides else { return };
    let status = match &o["status"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(s) = status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        && (100..600).contains(&s.as_u16())
    {
        *resp.status_mut() = s;
    }
    if let Some(headers) = o["header"].as_object() {
        for (name, value) in headers {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(&value),
            ) {
                resp.headers_mut().insert(n, v);
            }
        }
    }
}

/// API Gateway's gateway response type for an error.
pub fn response_type(e: &GatewayError) -> &'static str {
    match &e.kind {
        ErrorKind::NoRoute => "MISSING_AUTHENTICATION_TOKEN",
        ErrorKind::Forbidden => "INVALID_API_KEY",
        ErrorKind::AccessDenied { .. } | ErrorKind::ScopeDenied => "ACCESS_DENIED",
        ErrorKind::Unauthorized => "UNAUTHORIZED",
        ErrorKind::AuthorizerFailure => "AUTHORIZER_CONFIGURATION_ERROR",
        ErrorKind::UnsupportedEncoding { .. } => "UNSUPPORTED_MEDIA_TYPE",
        ErrorKind::UndecodableBody { .. } => "BAD_REQUEST_BODY",
        ErrorKind::Throttled { .. } => "THROTTLED",
        ErrorKind::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
        ErrorKind::PayloadTooLarge { .. }
        | ErrorKind::RecordRefused {
            too_large: true, ..
        } => "REQUEST_TOO_LARGE",
        ErrorKind::RecordRefused { .. } | ErrorKind::Unmappable { .. } => "BAD_REQUEST_BODY",
        ErrorKind::UnsupportedMediaType { .. } => "UNSUPPORTED_MEDIA_TYPE",
        ErrorKind::InvalidBody => "BAD_REQUEST_BODY",
        ErrorKind::Invalid(i) if i.message.starts_with("Missing required request parameters") => {
            "BAD_REQUEST_PARAMETERS"
        }
        ErrorKind::Invalid(_) => "BAD_REQUEST_BODY",
        ErrorKind::Template | ErrorKind::BadIntegrationRequest => "API_CONFIGURATION_ERROR",
        ErrorKind::UpstreamFailed | ErrorKind::MalformedUpstreamResponse => "INTEGRATION_FAILURE",
        ErrorKind::UpstreamTimeout | ErrorKind::RequestTimeout => "INTEGRATION_TIMEOUT",
        ErrorKind::MalformedRequest => "DEFAULT_4XX",
        ErrorKind::BodyTimeout
        | ErrorKind::NotImplemented
        | ErrorKind::UpstreamThrottled
        | ErrorKind::RecordsRejected(_)
        | ErrorKind::Overloaded
        | ErrorKind::SpoolFull => "",
    }
}

/// The message an error's body carries.
pub fn error_message(e: &GatewayError) -> String {
    match &e.kind {
        ErrorKind::Invalid(i) => i.message.clone(),
        ErrorKind::RecordRefused { message, .. }
        | ErrorKind::Unmappable { message }
        | ErrorKind::UndecodableBody { message }
        | ErrorKind::AccessDenied { message } => message.clone(),
        _ => error_parts(e).1.to_string(),
    }
}
