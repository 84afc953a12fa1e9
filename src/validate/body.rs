//! The body, as the route needs it: its media type, text (binary media types base64-encoded,
//! as on API Gateway; anything else must be UTF-8), and, for a JSON body a model or a
//! template reads, the parsed document: parsed once here, so what does not parse is refused
//! before any template runs, and the template reads this document instead of parsing again.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::{Invalid, Validator};
use crate::error::{ErrorKind, GatewayError};

/// A request body, decoded.
#[derive(Debug)]
pub struct Body<'a> {
    /// What templates see as `$input.body`.
    pub text: Cow<'a, str>,
    /// The parsed JSON document, when the template reads JSON.
    pub document: Option<Json>,
}

/// What decoding a body depends on.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules<'a> {
    /// Lower-case media types (or `type/*`, `*/*`) whose bodies are binary.
    pub binary_media_types: &'a [String],
    /// Nesting a JSON document may have (checked only below the parser's own bound).
    pub max_json_depth: usize,
    /// Whether a template will render the body.
    pub templated: bool,
}

/// Decodes, parses and checks a body against the route's model (if it has one).
pub fn body<'a>(
    raw: &'a [u8],
    media: &str,
    validator: Option<&Validator>,
    rules: BodyRules<'_>,
) -> Result<Body<'a>, GatewayError> {
    let binary = is_binary(rules.binary_media_types, media);
    let text: Cow<'a, str> = if binary {
        Cow::Owned(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            raw,
        ))
    } else {
        Cow::Borrowed(std::str::from_utf8(raw).map_err(|_| {
            GatewayError::new(ErrorKind::InvalidBody, "the request body is not UTF-8 text")
        })?)
    };
    // A model needs the document whatever the template.
    let template_reads_json = rules.templated && !binary && is_json_media(media);
    let mut document = match validator {
        Some(v) if v.has_model() => {
            let parsed = parse_json(&text).map_err(|e| invalid(v.not_json(&e.detail)))?;
            v.check_body(parsed.as_ref()).map_err(invalid)?;
            parsed
        }
        _ if template_reads_json => parse_json(&text)?,
        _ => None,
    };
    if let Some(d) = &document
        && rules.max_json_depth < crate::config::MAX_JSON_DEPTH
        && deeper_than(d, rules.max_json_depth)
    {
        return Err(GatewayError::new(
            ErrorKind::InvalidBody,
            format!(
                "the body nests deeper than server.max_json_depth ({})",
                rules.max_json_depth
            ),
        ));
    }
    if !template_reads_json {
        document = None;
    }
    Ok(Body { text, document })
}

/// A validation failure as the client's 400.
pub fn invalid(i: Invalid) -> GatewayError {
    let detail = format!("request validation: {}", i.message);
    GatewayError::new(ErrorKind::Invalid(Box::new(i)), detail)
}

/// The request's media type, lower-cased without parameters; none means JSON, as on API
/// Gateway.
pub fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/json".to_string())
}

/// Whether a media type is one of the binary media types (`image/png`, `image/*`, `*/*`).
pub fn is_binary(types: &[String], media: &str) -> bool {
    types.iter().any(|t| {
        t == media
            || t == "*/*"
            || t.strip_suffix("/*")
                .is_some_and(|prefix| media.split('/').next() == Some(prefix))
    })
}

/// Whether a media type is JSON (`application/json`, or a `+json` suffix).
fn is_json_media(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// Parses a JSON body, refusing one that does not parse (a template would read it as empty
/// values and send records the client never meant), including one that nests deeper than
/// serde_json's 127 levels or holds a lone surrogate escape. An empty body is left to the
/// template, which reads it as `{}`, as on API Gateway.
fn parse_json(body: &str) -> Result<Option<Json>, GatewayError> {
    if body.trim().is_empty() {
        return Ok(None);
    }
    // A parsed value takes 32 bytes and more: a body of tiny values (`[0,0,0,...]`) would
    // take tens of times its size. Counted first, without building anything.
    let values = count_values(body.as_bytes());
    let allowed = max_values(body.len());
    if values > allowed {
        return Err(GatewayError::new(
            ErrorKind::InvalidBody,
            format!(
                "the body holds {values} JSON values; a body of {} bytes may hold {allowed}",
                body.len()
            ),
        ));
    }
    serde_json::from_str(body).map(Some).map_err(|e| {
        GatewayError::new(ErrorKind::InvalidBody, format!("the body is not JSON: {e}"))
    })
}

/// The JSON values a body of `len` bytes may hold: one per 4 bytes, and 1024 more, which
/// keeps a parsed document within about 16 times its text (the text of real events holds
/// one value per 10 to 30 bytes).
fn max_values(len: usize) -> usize {
    1024 + len / 4
}

/// About how many values a JSON text holds, from its structure alone: one for each `[`
/// and `{`, one more for each `,`, and the top value (outside strings).
fn count_values(text: &[u8]) -> usize {
    let count = |outside: &[u8]| {
        outside
            .iter()
            .filter(|&&b| matches!(b, b'[' | b'{' | b','))
            .count()
    };
    // Strings, most of an event's bytes, are skipped a vector at a time.
    let (mut n, mut i) = (1usize, 0usize);
    while let Some(q) = memchr::memchr(b'"', &text[i..]) {
        n += count(&text[i..i + q]);
        i += q + 1;
        // Inside a string: to its closing quote, stepping over escapes.
        loop {
            let Some(e) = memchr::memchr2(b'"', b'\\', &text[i..]) else {
                return n;
            };
            i += e;
            if text[i] == b'"' {
                i += 1;
                break;
            }
            i += 2;
            if i >= text.len() {
                return n;
            }
        }
    }
    n + count(&text[i..])
}

/// Whether a document nests more than `limit` arrays and objects deep.
fn deeper_than(v: &Json, limit: usize) -> bool {
    let mut stack: Vec<(&Json, usize)> = vec![(v, 1)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Json>> = match v {
            Json::Array(a) => Box::new(a.iter()),
            Json::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        if depth > limit {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_checked_before_rendering() {
        assert_eq!(parse_json("").unwrap(), None);
        assert_eq!(parse_json(" \n").unwrap(), None);
        assert_eq!(
            parse_json(r#"{"a": [1, "x", null]}"#).unwrap(),
            Some(serde_json::json!({"a": [1, "x", null]}))
        );
        assert!(
            parse_json(r#"["\ud83d\ude00", "\u00e9"]"#).is_ok(),
            "a surrogate pair"
        );
        for bad in [
            "{",
            "{\"a\": 1,}",
            "not json",
            "{} {}",
            "[1] x",
            r#"["\ud800"]"#,
            "[\"\u{0}\"]",
        ] {
            let e = parse_json(bad).unwrap_err();
            assert!(matches!(e.kind, ErrorKind::InvalidBody), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json(&deep).is_err(), "nesting is bounded");
        // serde_json's limit, the one templates parse with: 127 levels, not 128.
        let ok_depth = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse_json(&ok_depth).is_ok());
        let too_deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse_json(&too_deep).is_err());
        assert!(is_json_media("application/json"));
        assert!(is_json_media("application/vnd.api+json"));
        assert!(!is_json_media("text/plain"));
    }

    #[test]
    fn a_body_of_tiny_values_is_refused_before_it_is_built() {
        assert_eq!(count_values(b"[0,0,0]"), 4);
        assert_eq!(count_values(br#"{"a": "x,[{", "b": [1, 2]}"#), 5);
        assert_eq!(count_values(br#"["a\"b,", 1]"#), 3);
        assert_eq!(count_values(br#"["a\\", [1]]"#), 4);
        // Cut short, inside a string or an escape: what came before counts.
        assert_eq!(count_values(br#"[1, "a,b"#), 3);
        assert_eq!(count_values(br#"[1, "a\"#), 3);
        assert_eq!(count_values(b""), 1);
        let zeros = format!("[{}0]", "0,".repeat(100_000));
        let e = parse_json(&zeros).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::InvalidBody), "{e:?}");
        // Events as clients send them are far below the bound.
        let event =
            r#"{"userId": "user-000001", "type": "click", "ts": 1764077930000, "page": "/home"}"#;
        let events = format!("{{\"events\": [{}]}}", vec![event; 5000].join(","));
        assert!(parse_json(&events).unwrap().is_some());
    }

    #[test]
    fn binary_media_types_match_exactly_or_by_wildcard() {
        let types = vec![
            "application/octet-stream".to_string(),
            "image/*".to_string(),
        ];
        assert!(is_binary(&types, "application/octet-stream"));
        assert!(is_binary(&types, "image/png"));
        assert!(!is_binary(&types, "application/json"));
        assert!(!is_binary(&types, "imagex/png"));
        assert!(is_binary(&["*/*".to_string()], "text/plain"));
        assert!(!is_binary(&[], "image/png"));
    }

    #[test]
    fn nesting_is_counted_in_arrays_and_objects() {
        let nested = |n: usize| -> Json {
            serde_json::from_str(&format!("{}1{}", "[".repeat(n), "]".repeat(n))).unwrap()
        };
        assert!(!deeper_than(&nested(5), 5));
        assert!(deeper_than(&nested(6), 5));
        assert!(!deeper_than(&serde_json::json!({"a": [1, {"b": 2}]}), 3));
        assert!(deeper_than(&serde_json::json!({"a": [1, {"b": [2]}]}), 3));
        assert!(!deeper_than(&serde_json::json!("flat"), 1));
    }
}
