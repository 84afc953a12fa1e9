//! API Gateway's mapping-template surface over one request: `$input`, `$util`, `$context`
//! and `$stageVariables`, as the [`vtl`](crate::vtl) engine's [`Host`].
//!
//! Per request the body is parsed at most once, and only if the template asks for it
//! (`$input.path`/`$input.json`); `$input.params()`, `$context` and `$stageVariables` are
//! built only when read. All views share one document, so a template that changes the body
//! through `$input.path('$')` sees the change in a later `$input.json('$')`.
//!
//! This module is synchronous and knows nothing of HTTP servers or AWS.

pub mod compact;
pub mod context;
pub mod event;
pub mod jsonpath;
pub mod util;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::rc::Rc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::vtl::{self, Doc, ErrorKind, Host, JsonRef, Limits, Seg, Template, Value};
use jsonpath::{Found, Resolved};

/// Request parameters as `$input.params()` exposes them: one value per name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Params {
    pub path: IndexMap<String, String>,
    pub querystring: IndexMap<String, String>,
    pub header: IndexMap<String, String>,
}

impl Params {
    /// `$input.params(name)`: path, then query string, then header (headers match
    /// case-insensitively); the first non-empty value wins.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        let exact = [&self.path, &self.querystring, &self.header]
            .into_iter()
            .find_map(|m| m.get(name).filter(|v| !v.is_empty()));
        exact
            .or_else(|| {
                self.header
                    .iter()
                    .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }

    fn to_json(&self) -> Json {
        let section = |m: &IndexMap<String, String>| {
            Json::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                    .collect(),
            )
        };
        serde_json::json!({
            "path": section(&self.path),
            "querystring": section(&self.querystring),
            "header": section(&self.header),
        })
    }
}

/// Everything a template can see of one request.
pub struct MappingInput<'a> {
    /// The request body as text.
    pub body: &'a str,
    /// Builds the request parameters; called only if the template reads them.
    pub params: &'a dyn Fn() -> Params,
    pub stage_variables: &'a IndexMap<String, String>,
    /// Builds `$context`; called only if the template reads it.
    pub context: &'a dyn Fn() -> Json,
}

/// What a render produced.
#[derive(Debug)]
pub struct Rendered {
    pub body: String,
    /// `$context` after the template ran, if the template touched it: it carries
    /// `requestOverride` and `responseOverride` changes.
    pub context: Option<Json>,
}

/// Renders `template` for one request.
pub fn render(
    template: &Template,
    input: &MappingInput<'_>,
    limits: &Limits,
) -> Result<Rendered, vtl::Error> {
    render_with(template, input, None, limits)
}

/// As [`render`], for a body the caller has already parsed as JSON: `document` is the
/// parse of `input.body`, and the template does not parse it again.
pub fn render_document(
    template: &Template,
    input: &MappingInput<'_>,
    document: Json,
    limits: &Limits,
) -> Result<Rendered, vtl::Error> {
    render_with(template, input, Some(document), limits)
}

fn render_with(
    template: &Template,
    input: &MappingInput<'_>,
    document: Option<Json>,
    limits: &Limits,
) -> Result<Rendered, vtl::Error> {
    let host = ApiGatewayHost::new(input);
    if let Some(document) = document {
        let _ = host.doc.set(Some(vtl::new_doc(document)));
    }
    // Room for a base64 copy of the body, the usual shape of Kinesis and Firehose calls.
    let capacity = (input.body.len() / 3 * 4 + 512).min(limits.max_output_bytes);
    let body = template.render_into(&host, limits, String::with_capacity(capacity))?;
    let context = host.context.get().map(|d| d.borrow().clone());
    Ok(Rendered { body, context })
}

/// Levels below the root whose containers `$input.json` takes from the body's text (an
/// event in `$[i]` or `$.events[i]`, and its objects); deeper ones are re-serialised.
const SPAN_DEPTH: usize = 3;

/// The unchanged body's compact text and where its containers are in it, by address.
struct Spans {
    text: Rc<str>,
    at: std::collections::HashMap<*const Json, std::ops::Range<usize>>,
}

const INPUT: u32 = 0;
const UTIL: u32 = 1;

struct ApiGatewayHost<'a> {
    input: &'a MappingInput<'a>,
    body: OnceCell<Rc<str>>,
    /// The parsed body; `None` when it is not JSON.
    doc: OnceCell<Option<Doc>>,
    /// `$input.json('$')` of the unchanged body, taken from the raw text when canonical.
    compact_body: OnceCell<Option<Rc<str>>>,
    /// Where the unchanged body's containers sit in `compact_body`.
    spans: OnceCell<Option<Spans>>,
    /// Bytes of containers `$input.json` re-serialised so far (see `spans`).
    reserialised: std::cell::Cell<usize>,
    /// The parameters, built on first use.
    param_values: OnceCell<Params>,
    params: OnceCell<Doc>,
    context: OnceCell<Doc>,
    stage: OnceCell<Doc>,
}

fn runtime(detail: impl Into<String>) -> vtl::Error {
    vtl::Error::new(ErrorKind::Runtime, detail)
}

impl<'a> ApiGatewayHost<'a> {
    fn new(input: &'a MappingInput<'a>) -> Self {
        ApiGatewayHost {
            input,
            body: OnceCell::new(),
            doc: OnceCell::new(),
            compact_body: OnceCell::new(),
            spans: OnceCell::new(),
            reserialised: std::cell::Cell::new(0),
            param_values: OnceCell::new(),
            params: OnceCell::new(),
            context: OnceCell::new(),
            stage: OnceCell::new(),
        }
    }

    fn doc(&self) -> Option<&Doc> {
        self.doc
            .get_or_init(|| {
                let body = self.input.body;
                if body.trim().is_empty() {
                    return Some(vtl::new_doc(Json::Object(Default::default())));
                }
                serde_json::from_str::<Json>(body).ok().map(vtl::new_doc)
            })
            .as_ref()
    }

    /// `$input.path(p)`: a live view (containers) or a copy (scalars); null when missing.
    fn path(&self, path: &str) -> Result<Value, vtl::Error> {
        let Some(doc) = self.doc() else {
            jsonpath::compile(path).map_err(runtime)?;
            return Ok(Value::Null);
        };
        let root = doc.borrow();
        // Scalars (the common `$input.path('$.userId')`) need no location: skip compiling.
        if let Some(found) = jsonpath::lookup_definite(path, &root) {
            match found {
                None => return Ok(Value::Null),
                Some(Json::Array(_) | Json::Object(_)) => {}
                Some(scalar) => return Ok(Value::from_json(scalar.clone())),
            }
        }
        let compiled = jsonpath::compile(path).map_err(runtime)?;
        Ok(match compiled.find(&root) {
            Found::Node(node, at) => {
                let segs: Rc<[Seg]> = at
                    .into_iter()
                    .map(|s| match s {
                        Resolved::Key(k) => Seg::Key(Rc::from(k)),
                        Resolved::Index(i) => Seg::Index(i),
                    })
                    .collect();
                Value::from_json_node(doc, segs, node)
            }
            Found::List(items) => {
                Value::from_json(Json::Array(items.into_iter().cloned().collect()))
            }
            Found::Missing => Value::Null,
        })
    }

    /// `$input.json(p)`: JSON text of the result; `""` when missing.
    fn json(&self, path: &str) -> Result<Value, vtl::Error> {
        let Some(doc) = self.doc() else {
            jsonpath::compile(path).map_err(runtime)?;
            return Ok(Value::str("\"\""));
        };
        if path.trim() == "$"
            && !doc.is_mutated()
            && let Some(text) = self.compact_body(doc)
        {
            return Ok(Value::Str(text.clone()));
        }
        let root = doc.borrow();
        if let Some(found) = jsonpath::lookup_definite(path, &root) {
            // A container of the unchanged body: its slice of the compact text.
            if let Some(node @ (Json::Array(_) | Json::Object(_))) = found
                && !doc.is_mutated()
                && let Some(spans) = self.spans(doc)
                && let Some(at) = spans.at.get(&std::ptr::from_ref(node))
            {
                return Ok(Value::str(&spans.text[at.clone()]));
            }
            let Some(node) = found else {
                return Ok(Value::str("\"\""));
            };
            let text = serde_json::to_string(node).map_err(|e| runtime(e.to_string()))?;
            if node.is_array() || node.is_object() {
                self.reserialised.set(self.reserialised.get() + text.len());
            }
            return Ok(Value::string(text));
        }
        let compiled = jsonpath::compile(path).map_err(runtime)?;
        let text = match compiled.find(&root) {
            Found::Node(node, _) => serde_json::to_string(node),
            Found::List(items) => serde_json::to_string(&items),
            Found::Missing => return Ok(Value::str("\"\"")),
        };
        Ok(Value::string(text.map_err(|e| runtime(e.to_string()))?))
    }

    /// The unchanged body's compact text, when it is what re-serialising would write.
    fn compact_body(&self, doc: &Doc) -> Option<&Rc<str>> {
        self.compact_body
            .get_or_init(|| {
                compact::compact_if_canonical(self.input.body, &doc.borrow())
                    .map(|c| Rc::from(c.as_ref()))
            })
            .as_ref()
    }

    /// Where the unchanged body's containers sit in its compact text (see
    /// [`compact::container_spans`]). Building it costs about a pass over the body, so it is
    /// built only once the template has re-serialised containers worth a 32nd of the
    /// body (a loop over its events, not one small object of a large body).
    fn spans(&self, doc: &Doc) -> Option<&Spans> {
        if self.spans.get().is_none() && self.reserialised.get() < self.input.body.len() / 32 {
            return None;
        }
        self.spans
            .get_or_init(|| {
                let text = self.compact_body(doc)?.clone();
                let at = compact::container_spans(&text, &doc.borrow(), SPAN_DEPTH)?;
                Some(Spans { text, at })
            })
            .as_ref()
    }

    fn params(&self) -> &Params {
        self.param_values.get_or_init(|| (self.input.params)())
    }

    fn root_view(cell: &OnceCell<Doc>, build: impl FnOnce() -> Json) -> Value {
        let doc = cell.get_or_init(|| vtl::new_doc(build()));
        Value::Json(JsonRef::root(doc.clone()))
    }
}

impl Host for ApiGatewayHost<'_> {
    fn global(&self, name: &str) -> Option<Value> {
        Some(match name {
            "input" => Value::Host(INPUT),
            "util" => Value::Host(UTIL),
            "context" => {
                let doc = self
                    .context
                    .get_or_init(|| vtl::new_context_doc((self.input.context)()));
                Value::Json(JsonRef::root(doc.clone()))
            }
            "stageVariables" => Self::root_view(&self.stage, || {
                Json::Object(
                    self.input
                        .stage_variables
                        .iter()
                        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                        .collect(),
                )
            }),
            _ => return None,
        })
    }

    fn property(&self, object: u32, name: &str) -> Result<Value, vtl::Error> {
        Ok(match (object, name) {
            // API Gateway hands templates `{}` for an empty payload.
            (INPUT, "body") => {
                let body = self.body.get_or_init(|| match self.input.body {
                    "" => Rc::from("{}"),
                    body => Rc::from(body),
                });
                Value::Str(body.clone())
            }
            (INPUT, "params") => Self::root_view(&self.params, || self.params().to_json()),
            _ => Value::Null,
        })
    }

    fn call(&self, object: u32, method: &str, args: &[Value]) -> Result<Option<Value>, vtl::Error> {
        let arg = |i: usize| -> Result<Cow<'_, str>, vtl::Error> {
            match args.get(i) {
                Some(Value::Str(s)) => Ok(Cow::Borrowed(&**s)),
                Some(v) => v.to_java_string().map(Cow::Owned),
                None => Ok(Cow::Borrowed("")),
            }
        };
        let v = match (object, method, args.len()) {
            (INPUT, "path", 1) => self.path(&arg(0)?)?,
            (INPUT, "json", 1) => self.json(&arg(0)?)?,
            (INPUT, "params", 0) => Self::root_view(&self.params, || self.params().to_json()),
            (INPUT, "params", 1) => Value::str(self.params().lookup(&arg(0)?).unwrap_or("")),
            (INPUT, "getBody", 0) => self.property(INPUT, "body")?,
            (UTIL, "escapeJavaScript", 1) => {
                let mut out = String::new();
                util::escape_javascript(&arg(0)?, &mut out);
                Value::string(out)
            }
            (UTIL, "base64Encode", 1) => Value::string(util::base64_encode(&arg(0)?)),
            (UTIL, "base64Decode", 1) => {
                Value::string(util::base64_decode(&arg(0)?).map_err(runtime)?)
            }
            (UTIL, "urlEncode", 1) => Value::string(util::url_encode(&arg(0)?)),
            (UTIL, "urlDecode", 1) => Value::string(util::url_decode(&arg(0)?).map_err(runtime)?),
            (UTIL, "parseJson", 1) => {
                let text = arg(0)?;
                let json: Json = serde_json::from_str(&text)
                    .map_err(|e| runtime(format!("parseJson: invalid JSON: {e}")))?;
                Value::from_json(json)
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}
