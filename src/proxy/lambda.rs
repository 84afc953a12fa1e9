//! Lambda proxy routes (API Gateway's `aws_proxy`): the function gets REST's payload format
//! 1.0 (the request, its body as text or base64, the authorizer's decision in
//! `requestContext`), and its answer (`statusCode`, `headers`, `multiValueHeaders`, `body`,
//! `isBase64Encoded`) is the response. An answer of any other shape, or a function that
//! raised, is API Gateway's 502 `{"message": "Internal server error"}`, with the reason in
//! the log.

use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::Value as Json;

use crate::error::{ErrorKind, GatewayError};
use crate::integrations::{Clients, lambda};
use crate::mapping::event::EventFacts;

/// What the client gets from a proxy route.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxied {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The fields a proxy answer may have.
const FIELDS: [&str; 5] = [
    "statusCode",
    "headers",
    "multiValueHeaders",
    "body",
    "isBase64Encoded",
];

/// Reads a function's proxy answer; `Err` says why it is malformed.
pub fn response(payload: &[u8]) -> Result<Proxied, String> {
    let v: Json =
        serde_json::from_slice(payload).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let Json::Object(m) = &v else {
        return Err("the answer is not a JSON object".into());
    };
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "the answer has a field {k:?} (a proxy answer has statusCode, headers, multiValueHeaders, body and isBase64Encoded)"
        ));
    }
    let status = match &v["statusCode"] {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse().ok(),
        Json::Null => return Err("the answer has no statusCode".into()),
        _ => None,
    }
    .and_then(|s| u16::try_from(s).ok())
    .filter(|s| (100..600).contains(s))
    .ok_or_else(|| format!("statusCode {} is not an HTTP status", v["statusCode"]))?;
    let scalar = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(_) | Json::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let add = |headers: &mut Vec<(HeaderName, HeaderValue)>,
               name: &str,
               value: &Json|
     -> Result<(), String> {
        let text = scalar(value).ok_or_else(|| format!("header {name:?} is not a string"))?;
        let (Ok(n), Ok(val)) = (
            HeaderName::try_from(name),
            HeaderValue::try_from(text.as_str()),
        ) else {
            return Err(format!("header {name:?}: not a valid header"));
        };
        if !super::hop_by_hop(n.as_str(), &[]) {
            headers.push((n, val));
        }
        Ok(())
    };
    match &v["headers"] {
        Json::Null => {}
        Json::Object(h) => {
            for (name, value) in h {
                if !value.is_null() {
                    add(&mut headers, name, value)?;
                }
            }
        }
        _ => return Err("headers is not an object".into()),
    }
    match &v["multiValueHeaders"] {
        Json::Null => {}
        Json::Object(h) => {
            for (name, values) in h {
                let Json::Array(list) = values else {
                    return Err(format!("multiValueHeaders.{name} is not a list"));
                };
                // A name in both maps: the multi-value list wins, as on API Gateway.
                headers.retain(|(n, _)| !n.as_str().eq_ignore_ascii_case(name));
                for value in list {
                    add(&mut headers, name, value)?;
                }
            }
        }
        _ => return Err("multiValueHeaders is not an object".into()),
    }
    let encoded = match &v["isBase64Encoded"] {
        Json::Null => false,
        Json::Bool(b) => *b,
        _ => return Err("isBase64Encoded is not a boolean".into()),
    };
    let body = match &v["body"] {
        Json::Null => Bytes::new(),
        Json::String(s) if encoded => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| format!("body is not base64: {e}"))?
                .into()
        }
        Json::String(s) => Bytes::from(s.clone()),
        _ => return Err("body is not a string".into()),
    };
    Ok(Proxied {
        status,
        headers,
        body,
    })
}

/// Invokes the route's function with the request's event and reads its answer.
pub async fn run(
    clients: &Clients,
    function: &str,
    facts: &EventFacts<'_>,
    body: &[u8],
    binary: bool,
    authorizer: Option<Json>,
    timeout: Duration,
) -> Result<Proxied, GatewayError> {
    let event = facts.proxy(body, binary, authorizer);
    let answered = lambda::invoke_proxy(clients, function, event.to_string().into_bytes(), timeout)
        .await
        .map_err(GatewayError::from)?;
    let malformed = |why: String| {
        GatewayError::new(
            ErrorKind::MalformedUpstreamResponse,
            format!("the Lambda proxy answer from {function}: {why}"),
        )
    };
    if let Some(kind) = &answered.function_error {
        return Err(malformed(format!(
            "the function raised ({kind}): {}",
            String::from_utf8_lossy(&answered.payload)
        )));
    }
    response(&answered.payload).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_answers_become_responses() {
        let p = response(
            br#"{"statusCode": 201, "headers": {"x-a": "1", "X-Num": 2},
                "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]}, "body": "{\"ok\":true}"}"#,
        )
        .unwrap();
        assert_eq!(p.status, 201);
        assert_eq!(p.body, Bytes::from_static(br#"{"ok":true}"#));
        let names: Vec<(&str, &str)> = p
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x-a", "1"),
                ("x-num", "2"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2")
            ]
        );
        let bin =
            response(br#"{"statusCode": 200, "body": "AAEC", "isBase64Encoded": true}"#).unwrap();
        assert_eq!(bin.body, Bytes::from_static(&[0, 1, 2]));
        // Hop-by-hop headers the function sets are dropped.
        let hop = response(br#"{"statusCode": 200, "headers": {"transfer-encoding": "chunked", "connection": "close"}}"#).unwrap();
        assert!(hop.headers.is_empty());
    }

    #[test]
    fn malformed_answers_are_refused_with_the_reason() {
        for (answer, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"body": "x"}"#, "no statusCode"),
            (br#"{"statusCode": 42}"#, "not an HTTP status"),
            (
                br#"{"statusCode": 200, "body": {"a": 1}}"#,
                "body is not a string",
            ),
            (br#"{"statusCode": 200, "extra": 1}"#, "a field \"extra\""),
            (
                br#"{"statusCode": 200, "headers": {"x": {"a": 1}}}"#,
                "not a string",
            ),
            (
                br#"{"statusCode": 200, "headers": {"bad name": "v"}}"#,
                "not a valid header",
            ),
            (
                br#"{"statusCode": 200, "body": "!!", "isBase64Encoded": true}"#,
                "not base64",
            ),
            (
                br#"{"statusCode": 200, "isBase64Encoded": "yes"}"#,
                "not a boolean",
            ),
        ] {
            let e = response(answer).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(answer));
        }
    }
}
