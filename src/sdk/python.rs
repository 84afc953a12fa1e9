//! The Python client: one module (`ingest_gateway_client`), standard library only, typed
//! (`py.typed`; it passes `mypy --strict`), installable with `pip install DIR`.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::{Api, Operation, ref_name, type_name};

/// A Python annotation for a schema. Objects that allow other properties (most events do)
/// are `Dict[str, Any]`: a `TypedDict` would refuse their other fields.
fn py_type(schema: &Json, depth: usize) -> String {
    if depth > 8 {
        return "Any".into();
    }
    if let Some(name) = ref_name(schema) {
        return format!("\"{}\"", type_name(name));
    }
    let base = if let Some(options) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        let mut types: Vec<String> = options
            .iter()
            .map(|o| {
                let mut merged = o.clone();
                if o.get("items").is_none() && o["type"] == "array" {
                    merged["items"] = schema["items"].clone();
                }
                py_type(&merged, depth + 1)
            })
            .collect();
        types.dedup();
        format!("Union[{}]", types.join(", "))
    } else {
        match schema["type"].as_str() {
            Some("string") => "str".into(),
            Some("integer") => "int".into(),
            Some("number") => "float".into(),
            Some("boolean") => "bool".into(),
            Some("array") => match schema.get("items") {
                Some(items) if !items.is_null() => format!("List[{}]", py_type(items, depth + 1)),
                _ => "List[Any]".into(),
            },
            Some("object") => "Dict[str, Any]".into(),
            _ => "Any".into(),
        }
    };
    if schema["nullable"].as_bool() == Some(true) {
        format!("Optional[{base}]")
    } else {
        base
    }
}

/// A schema that is a closed object: a `TypedDict`.
fn typed_dict(name: &str, schema: &Json) -> Option<String> {
    if schema["type"] != "object" || schema["additionalProperties"] != Json::Bool(false) {
        return None;
    }
    let props = schema["properties"].as_object()?;
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    let fields: Vec<String> = props
        .iter()
        .map(|(k, v)| {
            let t = py_type(v, 1);
            let t = if required.contains(&k.as_str()) {
                t
            } else {
                format!("NotRequired[{t}]")
            };
            format!("{}: {t}", Json::String(k.clone()))
        })
        .collect();
    Some(format!(
        "{} = TypedDict({:?}, {{{}}})\n",
        type_name(name),
        type_name(name),
        fields.join(", ")
    ))
}

/// A parameter's name as a Python identifier.
fn ident(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) || is_keyword(&out) {
        out.insert(0, '_');
    }
    out
}

fn is_keyword(s: &str) -> bool {
    [
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
        "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with",
        "yield", "self", "body", "events", "query", "headers", "id_field",
    ]
    .contains(&s)
}

/// `postV1Events` as `post_v1_events`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn path_expr(op: &Operation) -> String {
    let mut parts = Vec::new();
    for segment in op.path.split('/').filter(|s| !s.is_empty()) {
        match segment.strip_prefix('{') {
            Some(p) => {
                let name = p.trim_end_matches('}');
                let greedy = name.ends_with('+');
                let id = ident(name.trim_end_matches('+'));
                if greedy {
                    parts.push(format!("{{_encode_path({id})}}"));
                } else {
                    parts.push(format!("{{urllib.parse.quote({id}, safe='')}}"));
                }
            }
            None => parts.push(segment.replace('{', "{{").replace('}', "}}")),
        }
    }
    format!("f\"/{}\"", parts.join("/"))
}

/// `self` and the path parameters as arguments.
fn path_args(op: &Operation) -> Vec<String> {
    let mut args = vec!["self".to_string()];
    for p in &op.path_params {
        args.push(format!("{}: str", ident(p.trim_end_matches('+'))));
    }
    args
}

fn method(op: &Operation) -> String {
    let mut args = path_args(op);
    if op.has_body {
        let t = op
            .body
            .as_ref()
            .map_or_else(|| "Any".into(), |b| py_type(b, 0));
        args.push(format!("body: {t}"));
    }
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut keyword = Vec::new();
    for (list, place) in [(&op.query, &mut query), (&op.headers, &mut headers)] {
        for p in list {
            let id = ident(&p.name);
            let arg = if p.required {
                format!("{id}: str")
            } else {
                format!("{id}: Optional[str] = None")
            };
            keyword.push(arg);
            place.push(format!("{}: {id}", Json::String(p.name.clone())));
        }
    }
    if !keyword.is_empty() {
        args.push("*".into());
        args.extend(keyword);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "    def {}({}) -> Answer:",
        snake(&op.name),
        args.join(", ")
    );
    let _ = writeln!(out, "        \"\"\"``{} {}``\"\"\"", op.method, op.path);
    let _ = writeln!(
        out,
        "        return self.request({:?}, {}, query={{{}}}, headers={{{}}}, body={})",
        op.method,
        path_expr(op),
        query.join(", "),
        headers.join(", "),
        if op.has_body { "body" } else { "None" }
    );
    if let Some(batch) = op.batch {
        let mut args = path_args(op);
        args.push("events: Sequence[Mapping[str, Any]]".into());
        args.push("id_field: str = \"eventId\"".into());
        let _ = writeln!(
            out,
            "\n    def {}_batch({}) -> BatchResult:",
            snake(&op.name),
            args.join(", ")
        );
        let _ = writeln!(
            out,
            "        \"\"\"``{} {}`` for many events: requests of at most {} events and {} bytes, each event given an id (``id_field``) unless it has one, and only the records a partial failure names sent again.\"\"\"",
            op.method, op.path, batch.max_events, batch.max_bytes
        );
        let _ = writeln!(
            out,
            "        return self._send_batch({:?}, {}, events, ({}, {}, {:?}), id_field)",
            op.method,
            path_expr(op),
            batch.max_events,
            batch.max_bytes,
            batch.results.name()
        );
    }
    out
}

const RUNTIME: &str = include_str!("python_runtime.py");

pub fn files(api: &Api) -> Vec<(String, String)> {
    let (types, methods) = super::sections(
        api,
        |name, schema| {
            typed_dict(name, schema).unwrap_or_else(|| {
                format!("{}: TypeAlias = {}\n", type_name(name), py_type(schema, 0))
            })
        },
        method,
    );
    let methods = if methods.is_empty() {
        "    pass\n".to_string()
    } else {
        methods
    };
    let module = RUNTIME
        .replace("# TYPES\n", &types)
        .replace("# METHODS\n", &methods);
    let pyproject = r#"[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "ingest-gateway-client"
version = "1.0.0"
description = "A client for this ingest-gateway API: typed methods, retries as the gateway means them, batch helpers."
requires-python = ">=3.11"
dependencies = []

[tool.setuptools]
packages = ["ingest_gateway_client"]

[tool.setuptools.package-data]
ingest_gateway_client = ["py.typed"]
"#;
    let readme = "# ingest-gateway-client\n\nGenerated by `ingest-gateway sdk --lang python` from the gateway's routes.\nInstall with `pip install DIR`.\n\n```python\nfrom ingest_gateway_client import Client\nclient = Client(\"https://ingest.example.com\", api_key=\"...\")\n```\n";
    vec![
        ("pyproject.toml".into(), pyproject.into()),
        ("README.md".into(), readme.into()),
        ("ingest_gateway_client/__init__.py".into(), module),
        ("ingest_gateway_client/py.typed".into(), String::new()),
    ]
}
