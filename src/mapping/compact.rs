//! `$input.json('$')` without re-serialising, when that gives the same bytes.
//!
//! Re-serialising a parsed body costs several times the parse (every string byte is escaped
//! again), and the classic Kinesis templates do it on every request. When the template has
//! not changed the document, the compact form of the raw body is byte-identical to the
//! re-serialised one, provided that:
//! - every escape in a string is one serde_json itself writes (`\"` `\\` `\n` `\r` `\t` `\b`
//!   `\f`, and `\u00xx` in lower case for other control characters);
//! - every number's exponent, if it has one, is written `e+n` or `e-n` (the document keeps
//!   each number's digits as sent and writes them back unchanged, but spells the exponent
//!   that way);
//! - no object repeats a key (re-serialising keeps one of them).
//!
//! [`compact_if_canonical`] checks all three while it strips insignificant whitespace and
//! returns `None` if any fails; the caller then re-serialises. The result is therefore always
//! exactly what re-serialising would produce.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value as Json;

/// The compact form of `raw` if it equals `serde_json::to_string(parsed)`, where `parsed` is
/// the result of parsing `raw`: `raw` itself when it holds no insignificant whitespace.
pub fn compact_if_canonical<'a>(raw: &'a str, parsed: &Json) -> Option<Cow<'a, str>> {
    let bytes = raw.as_bytes();
    // Made at the first blank to strip; every piece copied ends at an ASCII byte, so it
    // stays valid UTF-8.
    let mut out: Option<String> = None;
    let mut keys = 0usize;
    let mut blank = true;
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.get_or_insert_with(|| {
                    let mut o = String::with_capacity(bytes.len());
                    o.push_str(&raw[..i]);
                    o
                });
                i += 1;
                continue;
            }
            b'"' => string_end(bytes, i)?,
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| i + n);
                if !canonical_number(&raw[i..end]) {
                    return None;
                }
                end
            }
            b':' => {
                keys += 1;
                i + 1
            }
            // Outside strings, valid JSON holds only ASCII.
            _ => i + 1,
        };
        blank = false;
        if let Some(o) = &mut out {
            o.push_str(&raw[i..end]);
        }
        i = end;
    }
    // An empty or blank body stands for `{}` and has no text of its own to reuse.
    if blank || keys != count_keys(parsed) {
        return None;
    }
    Some(out.map_or(Cow::Borrowed(raw), Cow::Owned))
}

/// Where the containers (objects and arrays) of `parsed`, from the root down to `depth`
/// levels below it, sit in `compact`: the text [`compact_if_canonical`] returned for
/// `parsed`. In that text every node is written exactly as re-serialising it alone would
/// write it, so `$input.json` of a container is its slice. Keyed by the node's address, which
/// stays valid while the document is neither moved nor changed. `None` if the text is not
/// that document's.
pub fn container_spans(
    compact: &str,
    parsed: &Json,
    depth: usize,
) -> Option<HashMap<*const Json, Range<usize>>> {
    let mut spans = HashMap::new();
    let end = walk(parsed, compact.as_bytes(), 0, Some(depth), &mut spans)?;
    (end == compact.len()).then_some(spans)
}

/// Follows `node` through `text` from `at`, recording its containers down to `depth` levels
/// (none past it); returns where it ends.
fn walk(
    node: &Json,
    text: &[u8],
    at: usize,
    depth: Option<usize>,
    spans: &mut HashMap<*const Json, Range<usize>>,
) -> Option<usize> {
    let expect = |i: usize, b: u8| (text.get(i) == Some(&b)).then_some(i + 1);
    let below = depth.and_then(|d| d.checked_sub(1));
    let end = match node {
        Json::Object(m) => {
            let mut i = expect(at, b'{')?;
            for (n, (_, v)) in m.iter().enumerate() {
                if n > 0 {
                    i = expect(i, b',')?;
                }
                if text.get(i) != Some(&b'"') {
                    return None;
                }
                i = expect(string_end(text, i)?, b':')?;
                i = walk(v, text, i, below, spans)?;
            }
            expect(i, b'}')?
        }
        Json::Array(a) => {
            let mut i = expect(at, b'[')?;
            for (n, v) in a.iter().enumerate() {
                if n > 0 {
                    i = expect(i, b',')?;
                }
                i = walk(v, text, i, below, spans)?;
            }
            expect(i, b']')?
        }
        Json::String(_) if text.get(at) == Some(&b'"') => string_end(text, at)?,
        Json::String(_) => return None,
        Json::Null | Json::Bool(_) | Json::Number(_) => text[at..]
            .iter()
            .position(|b| matches!(b, b',' | b']' | b'}'))
            .map_or(text.len(), |n| at + n),
    };
    if depth.is_some() && matches!(node, Json::Object(_) | Json::Array(_)) {
        spans.insert(std::ptr::from_ref(node), at..end);
    }
    Some(end)
}

/// The index just past the closing quote of the string starting at `start`, or `None` if
/// the string contains an escape serde_json would write differently.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let n = memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        i += n;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        match bytes.get(i + 1)? {
            b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => i += 2,
            b'u' => {
                let hex = bytes.get(i + 2..i + 6)?;
                let lower_control = hex[0] == b'0'
                    && hex[1] == b'0'
                    && matches!(hex[2], b'0' | b'1')
                    && matches!(hex[3], b'0'..=b'9' | b'a'..=b'f');
                let code = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()?;
                // serde_json writes these five with their short escapes.
                if !lower_control || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return None;
                }
                i += 6;
            }
            _ => return None,
        }
    }
}

fn canonical_number(literal: &str) -> bool {
    match literal.find(['e', 'E']) {
        Some(i) => literal[i..].starts_with("e+") || literal[i..].starts_with("e-"),
        None => true,
    }
}

/// Object keys in a parsed document (after duplicates collapsed).
fn count_keys(v: &Json) -> usize {
    match v {
        Json::Object(m) => m.len() + m.values().map(count_keys).sum::<usize>(),
        Json::Array(a) => a.iter().map(count_keys).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Option<String> {
        let parsed: Json = serde_json::from_str(raw).unwrap();
        let fast = compact_if_canonical(raw, &parsed);
        if let Some(f) = &fast {
            assert_eq!(f, &serde_json::to_string(&parsed).unwrap(), "{raw}");
            // A compact body is its own compact form, not a copy of it.
            assert_eq!(matches!(f, Cow::Borrowed(_)), f.len() == raw.len(), "{raw}");
            check_spans(f, &parsed);
        }
        fast.map(Cow::into_owned)
    }

    /// Every container down to the depth has its span, and its span is its serialisation.
    fn check_spans(compact: &str, parsed: &Json) {
        fn containers<'a>(v: &'a Json, depth: usize, out: &mut Vec<&'a Json>) {
            let children: Vec<&Json> = match v {
                Json::Object(m) => m.values().collect(),
                Json::Array(a) => a.iter().collect(),
                _ => return,
            };
            out.push(v);
            if let Some(d) = depth.checked_sub(1) {
                children.into_iter().for_each(|c| containers(c, d, out));
            }
        }
        for depth in [0, 1, 3] {
            let spans = container_spans(compact, parsed, depth).expect(compact);
            let mut all = Vec::new();
            containers(parsed, depth, &mut all);
            assert_eq!(spans.len(), all.len(), "{compact}");
            for node in all {
                let at = spans[&std::ptr::from_ref(node)].clone();
                assert_eq!(
                    &compact[at],
                    serde_json::to_string(node).unwrap(),
                    "{compact}"
                );
            }
        }
    }

    #[test]
    fn containers_are_found_in_the_compact_text() {
        for raw in [
            r#"[{"a":"x,]}\"y","b":[1,{"c":"}"},[[]]]},[],{},"[",-1.5e+3,null]"#,
            r#" { "events" : [ {"id": 1, "tags": ["a", "b"], "o": {"p": {"q": [true]}}} ,
                {"id": 2} ], "n": {"m": {}} } "#,
            r#"{"s": "café"}"#,
        ] {
            check(raw);
        }
        // Not this document's text.
        let parsed: Json = serde_json::from_str(r#"{"a":[1,2]}"#).unwrap();
        assert!(container_spans(r#"{"a":[1,2,3]}"#, &parsed, 3).is_none());
    }

    #[test]
    fn canonical_bodies_take_the_fast_path() {
        assert!(
            check(
                r#"{ "a" : [1, -2, 3.25, 100.0, true, null],
            "s": "x\"y\\z\n\u001f caf\u00e9 ☃ /", "o": {"k": {}} }"#
            )
            .is_none(),
            "\\u00e9 is not how serde writes é"
        );
        assert!(check("{ \"a\" : [1, -2, 3.25, 100.0, true, null], \"s\": \"x\\\"y\\\\z\\n\\u001f café ☃ /\" }").is_some());
        // Strings are copied whatever letters they hold: an `e` in a string is not an exponent.
        for raw in [
            r#"{"sessionId": "s-42", "type": "page_view", "referrer": "x"}"#,
            r#"["1e5", "2E3", "e", "E", "event", "-e"]"#,
            r#"[{"userId":"user-000000","sessionId":"s-42","type":"click","ts":1764077930000}]"#,
        ] {
            assert!(check(raw).is_some(), "{raw}");
        }
        assert!(check("[]").is_some());
        assert!(check("  \"just a string\"  ").is_some());
        assert!(check("18446744073709551615").is_some());
        // Numbers are kept as sent, so none of them forces a re-serialisation.
        for raw in [
            r#"{"a": 1.50}"#,
            r#"{"a": 1e+5}"#,
            r#"{"a": -0}"#,
            r#"{"a": 2e-400}"#,
        ] {
            assert!(check(raw).is_some(), "{raw}");
        }
        assert!(check("[123456789012345678901234]").is_some());
        assert_eq!(compact_if_canonical("  ", &serde_json::json!({})), None);
    }

    #[test]
    fn non_canonical_bodies_fall_back() {
        for raw in [
            r#"{"a": 1e5}"#,
            r#"{"a": 1E+5}"#,
            r#"{"s": "\/"}"#,
            r#"{"s": "\u0041"}"#,
            r#"{"s": "\u000a"}"#,
            r#"{"s": "\u001F"}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"o": {"a": 1, "a": 1}}"#,
        ] {
            assert_eq!(check(raw), None, "{raw}");
        }
    }
}
