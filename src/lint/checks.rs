//! Whether a rendered request is what the route's service accepts, and when it is not,
//! which well-known template bug made it so and how to fix it.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;

/// What a route's service takes as the rendered request.
pub use crate::integrations::RequestFormat as Expect;

/// A known way templates go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pitfall {
    EscapeJavaScriptApostrophe,
    TrailingComma,
    QuotedJson,
    JavaMapPrinting,
    ExtraBraces,
    UnescapedString,
    InvalidJson,
    DataNotBase64,
    UnencodedFormValue,
    TemplateFails,
}

impl Pitfall {
    pub fn name(self) -> &'static str {
        match self {
            Pitfall::EscapeJavaScriptApostrophe => "escapeJavaScript-apostrophe",
            Pitfall::TrailingComma => "trailing-comma",
            Pitfall::QuotedJson => "quoted-json",
            Pitfall::JavaMapPrinting => "java-map-printing",
            Pitfall::ExtraBraces => "extra-braces",
            Pitfall::UnescapedString => "unescaped-string",
            Pitfall::InvalidJson => "invalid-json",
            Pitfall::DataNotBase64 => "data-not-base64",
            Pitfall::UnencodedFormValue => "unencoded-form-value",
            Pitfall::TemplateFails => "template-fails",
        }
    }

    /// What the pitfall is, and the fix.
    pub fn explain(self) -> (&'static str, &'static str) {
        match self {
            Pitfall::EscapeJavaScriptApostrophe => (
                "$util.escapeJavaScript escapes ' as \\', which is not a JSON escape",
                "$util.escapeJavaScript($x).replaceAll(\"\\\\'\",\"'\")",
            ),
            Pitfall::TrailingComma => (
                "a #foreach writes a comma after its last element",
                "write the separator as #if($foreach.hasNext),#end",
            ),
            Pitfall::QuotedJson => (
                "$input.json(...) is JSON text already; quoted, a string value gets a second pair of quotes and an object becomes a broken string",
                "drop the quotes around $input.json(...), or use \"$util.escapeJavaScript($input.path(...))\" for a string",
            ),
            Pitfall::JavaMapPrinting => (
                "an object printed from $input.path or a template map prints as a Java map ({k=v}), not JSON",
                "write nested objects with $input.json('$.path') (in a loop: $input.json(\"$.items[$foreach.index]\"))",
            ),
            Pitfall::ExtraBraces => (
                "the body is wrapped in an extra pair of braces",
                "remove the outer { } around the template",
            ),
            Pitfall::UnescapedString => (
                "a value from the request is written into a JSON string without escaping",
                "\"$util.escapeJavaScript($input.path('$.x')).replaceAll(\"\\\\'\",\"'\")\", or $input.json('$.x') without quotes",
            ),
            Pitfall::InvalidJson => (
                "the output is not JSON",
                "render the route with `ingest-gateway render --route` and this input to see it whole",
            ),
            Pitfall::DataNotBase64 => (
                "Kinesis and Firehose take Data as base64",
                "\"Data\": \"$util.base64Encode($input.json('$'))\"",
            ),
            Pitfall::UnencodedFormValue => (
                "a value in the form body is not URL-encoded, so its '&', '=', '+' or spaces corrupt the request",
                "MessageBody=$util.urlEncode($input.body)",
            ),
            Pitfall::TemplateFails => (
                "the template fails to render (API Gateway answers 500)",
                "guard the failing call for this input (an #if on the value, or a default)",
            ),
        }
    }
}

/// `"$input.json(`: JSON text put inside quotes.
static QUOTED_JSON: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""\$!?\{?input\.json\("#).expect("a valid pattern"));
/// `{name=`: a Java map's print.
static JAVA_MAP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{[A-Za-z_][\w-]*=").expect("a valid pattern"));
/// A query-protocol parameter name (`MessageAttribute.1.Name`).
static FORM_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z0-9]+)*$").expect("a valid pattern")
});

/// Why an output was refused: the pitfall, and where in the output (byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub pitfall: Pitfall,
    pub detail: String,
    pub at: usize,
}

/// Checks a rendered request. `template` is the source (to name pitfalls by what it does),
/// `hostile` whether the input held quotes, backslashes or control characters.
pub fn check(expect: Expect, output: &str, template: &str, hostile: bool) -> Option<Fault> {
    // An object the linter gave the template, printed as a Java map: wrong even when the
    // result still parses (inside a JSON string, say).
    let printed = format!("{{{}=", super::inputs::OBJECT_KEY);
    if let Some(at) = output.find(&printed) {
        return Some(Fault {
            pitfall: Pitfall::JavaMapPrinting,
            detail: format!(
                "an object of the request is printed as {{{}=...}}",
                super::inputs::OBJECT_KEY
            ),
            at,
        });
    }
    match expect {
        Expect::Any => None,
        Expect::Json | Expect::JsonWithData => {
            let fault = json_fault(output, template, hostile);
            if fault.is_some() || expect == Expect::Json {
                return fault;
            }
            data_fault(output)
        }
        Expect::JsonOrForm if output.trim_start().starts_with('{') => {
            json_fault(output, template, hostile)
        }
        Expect::JsonOrForm => form_fault(output),
    }
}

fn json_fault(output: &str, template: &str, hostile: bool) -> Option<Fault> {
    let err = serde_json::from_str::<Json>(output).err()?;
    let at = offset(output, err.line(), err.column());
    let detail = format!("the output is not JSON: {err}");
    let near = |needle: &str| {
        output
            .match_indices(needle)
            .map(|(i, _)| i)
            .min_by_key(|i| i.abs_diff(at))
    };
    let pitfall_at = |p: Pitfall, at: usize| Fault {
        pitfall: p,
        detail: detail.clone(),
        at,
    };
    if let Some(i) = near("\\'") {
        return Some(pitfall_at(Pitfall::EscapeJavaScriptApostrophe, i));
    }
    if let Some(i) = java_map_at(output) {
        return Some(pitfall_at(Pitfall::JavaMapPrinting, i));
    }
    let msg = err.to_string();
    if msg.contains("trailing comma") && template.contains("#foreach") {
        return Some(pitfall_at(Pitfall::TrailingComma, at));
    }
    if QUOTED_JSON.is_match(template) {
        return Some(pitfall_at(Pitfall::QuotedJson, at));
    }
    if output.trim_start().starts_with("{{") || output.trim_start().starts_with("{ {") {
        return Some(pitfall_at(
            Pitfall::ExtraBraces,
            output.find('{').unwrap_or(0),
        ));
    }
    if hostile {
        return Some(pitfall_at(Pitfall::UnescapedString, at));
    }
    Some(pitfall_at(Pitfall::InvalidJson, at))
}

/// Where the output holds `{name=`, a Java map's print.
fn java_map_at(output: &str) -> Option<usize> {
    JAVA_MAP.find(output).map(|m| m.start())
}

/// `Data` fields that are not base64.
fn data_fault(output: &str) -> Option<Fault> {
    let doc: Json = serde_json::from_str(output).ok()?;
    let mut data: Vec<&Json> = Vec::new();
    data.extend(doc.get("Data"));
    data.extend(doc.pointer("/Record/Data"));
    for r in doc
        .get("Records")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        data.extend(r.get("Data"));
    }
    for d in data {
        let Some(text) = d.as_str() else {
            return Some(Fault {
                pitfall: Pitfall::DataNotBase64,
                detail: format!("Data is {d}, not a base64 string"),
                at: output.find("\"Data\"").unwrap_or(0),
            });
        };
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_err()
        {
            return Some(Fault {
                pitfall: Pitfall::DataNotBase64,
                detail: format!("Data {:?} is not base64", truncate(text, 40)),
                at: output.find(text).unwrap_or(0),
            });
        }
    }
    None
}

/// A form body: `name=value` pairs joined by `&`, names the query protocol's, values
/// percent-encoded.
fn form_fault(output: &str) -> Option<Fault> {
    // The gateway trims the body and skips empty pairs.
    let mut at = output.len() - output.trim_start().len();
    for pair in output.trim().split('&') {
        if pair.is_empty() {
            at += 1;
            continue;
        }
        let fault = |detail: String, offset: usize| Fault {
            pitfall: Pitfall::UnencodedFormValue,
            detail,
            at: at + offset,
        };
        let Some((k, v)) = pair.split_once('=') else {
            return Some(fault(
                format!(
                    "{:?} is not name=value: a value holds an unencoded '&'",
                    truncate(pair, 40)
                ),
                0,
            ));
        };
        if !FORM_NAME.is_match(k) {
            return Some(fault(
                format!("{:?} is not a parameter name", truncate(k, 40)),
                0,
            ));
        }
        for (i, b) in v.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric() || b"-._~%+*".contains(&b);
            let bad_escape = b == b'%'
                && !(v.as_bytes().get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && v.as_bytes().get(i + 2).is_some_and(u8::is_ascii_hexdigit));
            if !ok || bad_escape {
                return Some(fault(
                    format!("the value of {k} holds {:?} unencoded", char::from(b)),
                    k.len() + 1 + i,
                ));
            }
        }
        at += pair.len() + 1;
    }
    None
}

/// Byte offset of a 1-based line and column (serde_json's), clamped to the text.
fn offset(text: &str, line: usize, column: usize) -> usize {
    let mut at = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (at + column.saturating_sub(1)).min(text.len());
        }
        at += l.len();
    }
    text.len()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// The output line around `at`, at most `width` characters, and the caret's column in it.
pub fn excerpt(output: &str, at: usize, width: usize) -> (String, usize) {
    let at = at.min(output.len());
    let at = (0..=at)
        .rev()
        .find(|i| output.is_char_boundary(*i))
        .unwrap_or(0);
    let start = output[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = output[at..].find('\n').map_or(output.len(), |i| at + i);
    let line = &output[start..end];
    let col = output[start..at].chars().count();
    let chars: Vec<char> = line.chars().collect();
    let from = col.saturating_sub(width / 2);
    let to = (from + width).min(chars.len());
    let mut text: String = chars[from..to].iter().collect();
    let mut caret = col - from;
    if from > 0 {
        text = format!("...{text}");
        caret += 3;
    }
    if to < chars.len() {
        text.push_str("...");
    }
    (text, caret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_pitfalls() {
        let c = |out: &str, tpl: &str| check(Expect::Json, out, tpl, true).map(|f| f.pitfall);
        assert_eq!(
            c(r#"{"a": "it\'s"}"#, ""),
            Some(Pitfall::EscapeJavaScriptApostrophe)
        );
        assert_eq!(
            c(r#"{"a": [1, 2, ]}"#, "#foreach"),
            Some(Pitfall::TrailingComma)
        );
        assert_eq!(
            c(r#"{"a": ""x""}"#, r#""$input.json('$.a')""#),
            Some(Pitfall::QuotedJson)
        );
        assert_eq!(c(r#"{"a": {b=1}}"#, ""), Some(Pitfall::JavaMapPrinting));
        assert_eq!(c(r#"{{"a": 1}}"#, ""), Some(Pitfall::ExtraBraces));
        assert_eq!(
            c(r#"{"a": "say "hi""}"#, ""),
            Some(Pitfall::UnescapedString)
        );
        assert_eq!(c(r#"{"a": 1}"#, ""), None);
        assert_eq!(
            check(
                Expect::JsonWithData,
                r#"{"Data": "not base64!"}"#,
                "",
                false
            )
            .map(|f| f.pitfall),
            Some(Pitfall::DataNotBase64)
        );
        assert_eq!(
            check(
                Expect::JsonOrForm,
                "Action=SendMessage&MessageBody=a%20b",
                "",
                false
            ),
            None
        );
        assert_eq!(
            check(
                Expect::JsonOrForm,
                "Action=SendMessage&MessageBody=a b",
                "",
                false
            )
            .map(|f| f.pitfall),
            Some(Pitfall::UnencodedFormValue)
        );
        assert_eq!(
            check(
                Expect::JsonOrForm,
                "Action=SendMessage&MessageBody=x&y",
                "",
                false
            )
            .map(|f| f.pitfall),
            Some(Pitfall::UnencodedFormValue)
        );
    }

    #[test]
    fn excerpts_center_on_the_fault() {
        let (text, caret) = excerpt("line one\n{\"a\": \"it\\'s\"}\nend", 18, 80);
        assert_eq!(text, "{\"a\": \"it\\'s\"}");
        assert_eq!(&text[caret..caret + 2], "\\'");
    }
}
