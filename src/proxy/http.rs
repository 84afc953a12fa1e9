//! HTTP routes: `http_proxy` (`integration = "proxy"`: the request passes through, the
//! backend's answer comes back as it is) and `http` (the rendered template is the body, the
//! answer goes through integration responses).
//!
//! The backend's host is configuration's alone: the request's values reach only the
//! places `request_parameters` map them to, percent-encoded into the path (a greedy
//! `{proxy+}` keeps its `/` but may not hold `.` or `..` segments, so it cannot climb out
//! of the configured prefix), the query string and headers. Hop-by-hop headers are dropped
//! both ways, `X-Forwarded-For` gets the client's address appended, and idempotent methods
//! are retried once when no connection could be made; a POST never is.

use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value as Json;

use crate::config::integration::{HttpBackend, ParamSource, ParamTarget};
use crate::error::{ErrorKind, GatewayError};
use crate::outbound::{self, Failure};
use crate::request::Request;

/// Largest backend answer read (API Gateway's payload limit).
pub const MAX_ANSWER_BYTES: usize = 10 * 1024 * 1024;

/// What a path segment may keep unencoded (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A query component: unreserved only.
const QUERY: &AsciiSet = SEGMENT;

/// What a request sends to the backend.
pub struct Outgoing<'a> {
    pub backend: &'a HttpBackend,
    pub mappings: &'a [(ParamTarget, ParamSource)],
    /// Pass the request's own headers and query string through (`http_proxy`).
    pub proxy: bool,
    pub req: &'a Request,
    pub path_params: &'a [(String, String)],
    pub stage_variables: &'a indexmap::IndexMap<String, String>,
    /// `$context`, for mappings that read it.
    pub context: &'a mut dyn FnMut() -> Json,
    pub body: Bytes,
    /// The body's type when the gateway made it (a rendered template).
    pub content_type: Option<&'a str>,
}

/// The backend request: its URI, method and headers.
pub fn request(out: Outgoing<'_>) -> Result<http::Request<Full<Bytes>>, GatewayError> {
    let Outgoing {
        backend,
        mappings,
        proxy,
        req,
        path_params,
        stage_variables,
        context,
        body,
        content_type,
    } = out;
    let mut values =
        |s: &ParamSource| super::resolve(s, req, path_params, stage_variables, &mut *context);
    // The path, each placeholder filled and encoded.
    let mut path = String::with_capacity(backend.path.len() + 32);
    let mut rest = backend.path.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        path.push_str(&rest[..open]);
        let hole = &rest[open + 1..open + close];
        let name = hole.strip_suffix('+').unwrap_or(hole);
        let greedy = backend.is_greedy(name);
        let source = mappings.iter().find_map(|(t, s)| match t {
            ParamTarget::Path(n) if n == name => Some(s),
            _ => None,
        });
        let value = source.and_then(&mut values).unwrap_or_default();
        path.push_str(&encode_path_value(&value, greedy)?);
        rest = &rest[open + close + 1..];
    }
    path.push_str(rest);
    // The query: the URI's own, the request's (proxy), then mapped values.
    let mut query: Vec<(String, String)> = Vec::new();
    if proxy {
        query.extend(req.query.iter().cloned());
    }
    for (t, s) in mappings {
        if let ParamTarget::Query(name) = t
            && let Some(v) = values(s)
        {
            query.retain(|(k, _)| k != name);
            query.push((name.clone(), v));
        }
    }
    let mut target = path;
    let encoded: Vec<String> = backend
        .query
        .iter()
        .cloned()
        .chain(query.iter().map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        }))
        .collect();
    if !encoded.is_empty() {
        target.push('?');
        target.push_str(&encoded.join("&"));
    }
    let uri: http::Uri = format!("{}{target}", backend.origin).parse().map_err(|e| {
        GatewayError::new(ErrorKind::MalformedRequest, format!("the backend URI: {e}"))
    })?;
    let method = backend.method.clone().unwrap_or_else(|| req.method.clone());
    // Headers: the request's own (proxy) without hop-by-hop ones, then mapped ones.
    let mut headers = HeaderMap::new();
    if proxy {
        let connection = super::connection_tokens(&req.headers);
        for (name, value) in &req.headers {
            let n = name.as_str();
            // The body was decoded at the edge; the host is the backend's.
            if super::hop_by_hop(n, &connection)
                || n == "host"
                || n == "content-encoding"
                || n == "x-forwarded-for"
            {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    for (t, s) in mappings {
        if let ParamTarget::Header(name) = t
            && let Some(v) = values(s)
            && let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(v),
            )
        {
            headers.insert(n, v);
        }
    }
    // X-Forwarded-For: the chain the request came with, then the address it came from.
    let forwarded = match req
        .header("x-forwarded-for")
        .filter(|p| !p.trim().is_empty())
    {
        Some(prior) => format!("{}, {}", prior.trim(), req.peer),
        None => req.peer.to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        headers.insert("x-forwarded-for", v);
    }
    let mut out = http::Request::new(Full::new(body));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A path parameter's value for the backend's path: every byte but unreserved ones
/// encoded; a greedy value keeps its `/`, and may hold no empty, `.` or `..` segment.
pub fn encode_path_value(value: &str, greedy: bool) -> Result<String, GatewayError> {
    let segments: Vec<&str> = if greedy {
        value.split('/').collect()
    } else {
        vec![value]
    };
    let mut out = Vec::new();
    for segment in segments {
        if segment == "." || segment == ".." {
            return Err(GatewayError::new(
                ErrorKind::MalformedRequest,
                format!(
                    "the path holds a {segment:?} segment, which the backend path may not take"
                ),
            ));
        }
        out.push(utf8_percent_encode(segment, SEGMENT).to_string());
    }
    Ok(out.join("/"))
}

/// Sends the request; an idempotent one is sent once more when no connection could be made.
pub async fn send(
    client: &outbound::Client,
    request: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<outbound::Answer, GatewayError> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    let started = tokio::time::Instant::now();
    let again = idempotent.then(|| clone(&request));
    let first = outbound::send(client, request, timeout, MAX_ANSWER_BYTES).await;
    let result = match (first, again) {
        (Err(Failure::Connect(_)), Some(req)) => {
            let left = timeout.saturating_sub(started.elapsed());
            outbound::send(client, req, left, MAX_ANSWER_BYTES).await
        }
        (other, _) => other,
    };
    result.map_err(|f| {
        let kind = match f {
            Failure::Timeout => ErrorKind::UpstreamTimeout,
            Failure::TooLarge(_) => ErrorKind::MalformedUpstreamResponse,
            Failure::Connect(_) | Failure::Broken(_) => ErrorKind::UpstreamFailed,
        };
        GatewayError::new(kind, format!("the HTTP backend: {f}"))
    })
}

fn clone(r: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    // The body is a `Full`: the same bytes again.
    let mut out = http::Request::new(r.body().clone());
    *out.method_mut() = r.method().clone();
    *out.uri_mut() = r.uri().clone();
    *out.headers_mut() = r.headers().clone();
    out
}

/// The backend's headers a client gets back (hop-by-hop ones dropped).
pub fn answer_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let connection = super::connection_tokens(headers);
    headers
        .iter()
        .filter(|(n, _)| !super::hop_by_hop(n.as_str(), &connection))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_values_cannot_climb_out_or_change_the_host() {
        assert_eq!(encode_path_value("a b/c", false).unwrap(), "a%20b%2Fc");
        assert_eq!(encode_path_value("x/y z", true).unwrap(), "x/y%20z");
        assert_eq!(
            encode_path_value("@evil.example", false).unwrap(),
            "%40evil.example"
        );
        for bad in ["../admin", "a/../../b", "./x", "a/."] {
            assert!(encode_path_value(bad, true).is_err(), "{bad}");
        }
        // Not greedy: a `/` cannot make a segment, and `..` is no segment either.
        assert!(encode_path_value("..", false).is_err());
        assert_eq!(encode_path_value("a..b", false).unwrap(), "a..b");
    }
}
