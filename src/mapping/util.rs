//! `$util`: the six functions API Gateway offers, with the Java semantics behind them.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// `$util.escapeJavaScript`: Apache commons-lang `StringEscapeUtils.escapeJavaScript`, which
/// is what API Gateway's documented quirk (`'` becomes `\'`) points to. Every char above
/// 0x7F becomes `\uXXXX` (UTF-16, upper-case hex), `/` becomes `\/`.
pub fn escape_javascript(s: &str, out: &mut String) {
    out.reserve(s.len());
    for unit in s.encode_utf16() {
        match unit {
            0x08 => out.push_str("\\b"),
            0x09 => out.push_str("\\t"),
            0x0A => out.push_str("\\n"),
            0x0C => out.push_str("\\f"),
            0x0D => out.push_str("\\r"),
            0x22 => out.push_str("\\\""),
            0x27 => out.push_str("\\'"),
            0x2F => out.push_str("\\/"),
            0x5C => out.push_str("\\\\"),
            u if !(0x20..=0x7F).contains(&u) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{u:04X}");
            }
            u => out.push(u as u8 as char),
        }
    }
}

/// `$util.urlEncode`: `java.net.URLEncoder.encode(s, "UTF-8")`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                use std::fmt::Write as _;
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `$util.urlDecode`: `java.net.URLDecoder.decode(s, "UTF-8")`; a malformed `%` escape is an
/// error, as in Java.
pub fn url_decode(s: &str) -> Result<String, String> {
    percent_decode(s, true, false).map_err(|e| format!("urlDecode: {e}"))
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`). A `%` not followed by two
/// hex digits is an error, or kept as is when `lenient`. Invalid UTF-8 in the result is an
/// error.
pub fn percent_decode(s: &str, plus_is_space: bool, lenient: bool) -> Result<String, String> {
    if !s.contains(['%', '+']) {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                // Two hex digits exactly (`from_str_radix` alone would accept a sign).
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None if lenient => out.push(b'%'),
                    None => return Err(format!("malformed escape at offset {i}")),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the decoded text is not UTF-8".to_string())
}

/// Java's basic Base64 decoder accepts input with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `$util.base64Encode`: standard alphabet, padded, over the UTF-8 bytes. Encoding uses
/// the CPU's SIMD instructions where available; it is on the hot path of every Kinesis and
/// Firehose template.
pub fn base64_encode(s: &str) -> String {
    base64_simd::STANDARD.encode_to_string(s.as_bytes())
}

/// `$util.base64Decode`: the decoded bytes as UTF-8 text.
pub fn base64_decode(s: &str) -> Result<String, String> {
    let bytes = BASE64
        .decode(s.trim_end_matches(['\r', '\n']))
        .map_err(|e| format!("base64Decode: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        escape_javascript(s, &mut out);
        out
    }

    #[test]
    fn escape_javascript_matches_commons_lang() {
        assert_eq!(esc("it's"), "it\\'s");
        assert_eq!(esc("a\"b\\c/d"), "a\\\"b\\\\c\\/d");
        assert_eq!(esc("caf\u{e9} \u{20ac}"), "caf\\u00E9 \\u20AC");
        assert_eq!(esc("\u{1F600}"), "\\uD83D\\uDE00");
        assert_eq!(esc("\n\t\u{1}"), "\\n\\t\\u0001");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn url_encoding_is_java_urlencoder() {
        assert_eq!(url_encode("a b&c~*"), "a+b%26c%7E*");
        assert_eq!(url_encode("\u{e9}"), "%C3%A9");
        assert_eq!(url_decode("a+b%26c%3Dd").unwrap(), "a b&c=d");
        assert!(url_decode("%zz").is_err());
        assert!(url_decode("%+1").is_err());
        assert_eq!(percent_decode("50%+a%41", false, true).unwrap(), "50%+aA");
        assert!(percent_decode("%ff", false, true).is_err());
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_encode("line-1\n"), "bGluZS0xCg==");
        assert_eq!(base64_decode("bGluZS0xCg").unwrap(), "line-1\n");
        assert!(base64_decode("!!").is_err());
    }
}
