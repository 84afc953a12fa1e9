//! The TypeScript client: an ES module with its types (`src/index.ts`, built by `tsc` into
//! `dist/`), with no runtime dependency beyond `fetch` (and `CompressionStream` for gzip'd
//! bodies, both in Node 18+ and every current browser).

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::{Api, Operation, ref_name, type_name};

/// A TypeScript type for a schema.
fn ts_type(schema: &Json, depth: usize) -> String {
    if depth > 8 {
        return "unknown".into();
    }
    if let Some(name) = ref_name(schema) {
        return type_name(name);
    }
    let nullable = schema["nullable"].as_bool() == Some(true);
    let base = base_type(schema, depth);
    if nullable {
        format!("{base} | null")
    } else {
        base
    }
}

fn base_type(schema: &Json, depth: usize) -> String {
    if let Some(values) = schema["enum"].as_array() {
        let literals: Vec<String> = values.iter().map(Json::to_string).collect();
        if !literals.is_empty() {
            return literals.join(" | ");
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let mut types: Vec<String> = options
                .iter()
                .map(|o| {
                    // A bare `{"type": "object"}` beside the schema's own properties (or
                    // an array beside its items) means those.
                    let mut merged = o.clone();
                    if o.get("properties").is_none() && o["type"] == "object" {
                        merged["properties"] = schema["properties"].clone();
                    }
                    if o.get("items").is_none() && o["type"] == "array" {
                        merged["items"] = schema["items"].clone();
                    }
                    format!("({})", ts_type(&merged, depth + 1))
                })
                .collect();
            types.dedup();
            if !types.is_empty() {
                return types.join(" | ");
            }
        }
    }
    match schema["type"].as_str() {
        Some("string") => "string".into(),
        Some("integer" | "number") => "number".into(),
        Some("boolean") => "boolean".into(),
        Some("array") => match schema.get("items") {
            Some(items) if !items.is_null() => format!("Array<{}>", ts_type(items, depth + 1)),
            _ => "Array<unknown>".into(),
        },
        Some("object") => object_type(schema, depth),
        _ if schema.get("properties").is_some_and(Json::is_object) => object_type(schema, depth),
        _ => "unknown".into(),
    }
}

fn object_type(schema: &Json, depth: usize) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    let mut out = String::from("{ ");
    if let Some(props) = schema["properties"].as_object() {
        for (name, p) in props {
            let optional = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            let _ = write!(
                out,
                "{}{optional}: {}; ",
                Json::String(name.clone()),
                ts_type(p, depth + 1)
            );
        }
    }
    if schema["additionalProperties"] != Json::Bool(false) {
        out.push_str("[key: string]: unknown; ");
    }
    out.push('}');
    out
}

/// A parameter's name as a TypeScript identifier.
fn ident(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn path_expr(op: &Operation) -> String {
    let mut out = String::from("`");
    for segment in op.path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match segment.strip_prefix('{') {
            Some(p) => {
                let name = p.trim_end_matches('}');
                let greedy = name.ends_with('+');
                let name = ident(name.trim_end_matches('+'));
                if greedy {
                    let _ = write!(out, "${{encodePath({name})}}");
                } else {
                    let _ = write!(out, "${{encodeURIComponent({name})}}");
                }
            }
            None => out.push_str(segment),
        }
    }
    if op.path == "/" {
        out.push('/');
    }
    out.push('`');
    out
}

/// The path parameters as arguments.
fn path_args(op: &Operation) -> Vec<String> {
    op.path_params
        .iter()
        .map(|p| format!("{}: string", ident(p.trim_end_matches('+'))))
        .collect()
}

fn method(op: &Operation) -> String {
    let mut args = path_args(op);
    let body_type = op
        .body
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |b| ts_type(b, 0));
    if op.has_body {
        args.push(format!("body: {body_type}"));
    }
    let query: Vec<String> = op
        .query
        .iter()
        .map(|q| {
            format!(
                "{}{}: string",
                Json::String(q.name.clone()),
                if q.required { "" } else { "?" }
            )
        })
        .collect();
    let headers: Vec<String> = op
        .headers
        .iter()
        .map(|h| {
            format!(
                "{}{}: string",
                Json::String(h.name.clone()),
                if h.required { "" } else { "?" }
            )
        })
        .collect();
    let required_opts =
        op.query.iter().any(|q| q.required) || op.headers.iter().any(|h| h.required);
    args.push(format!(
        "options{}: CallOptions<{{ {} }}, {{ {} }}>",
        if required_opts { "" } else { "?" },
        query.join("; "),
        headers.join("; ")
    ));
    let mut out = String::new();
    let _ = writeln!(out, "  /** `{} {}` */", op.method, op.path);
    let _ = writeln!(
        out,
        "  async {}({}): Promise<Answer> {{",
        op.name,
        args.join(", ")
    );
    let _ = writeln!(
        out,
        "    return this.request({}, {}, options?.query, options?.headers, {});",
        Json::String(op.method.clone()),
        path_expr(op),
        if op.has_body { "body" } else { "undefined" }
    );
    out.push_str("  }\n");
    if let Some(batch) = op.batch {
        let mut send_args = path_args(op);
        send_args.push("events: Array<Event>".into());
        send_args.push("options?: BatchOptions".into());
        let _ = writeln!(
            out,
            "\n  /** `{} {}` for many events: split into requests of at most {} events and {} bytes, each event given an id (`options.idField`, default `eventId`) unless it has one, and only the records a partial failure names sent again. */",
            op.method, op.path, batch.max_events, batch.max_bytes
        );
        let _ = writeln!(
            out,
            "  async {}Batch({}): Promise<BatchResult> {{",
            op.name,
            send_args.join(", ")
        );
        let _ = writeln!(
            out,
            "    return this.sendBatch({}, {}, events, {{ maxEvents: {}, maxBytes: {}, results: {:?} }}, options);",
            Json::String(op.method.clone()),
            path_expr(op),
            batch.max_events,
            batch.max_bytes,
            batch.results.name()
        );
        out.push_str("  }\n");
    }
    out
}

const RUNTIME: &str = include_str!("typescript_runtime.ts");

pub fn files(api: &Api) -> Vec<(String, String)> {
    let (types, methods) = super::sections(
        api,
        |name, schema| {
            format!(
                "export type {} = {};\n\n",
                type_name(name),
                ts_type(schema, 0)
            )
        },
        method,
    );
    let index = RUNTIME
        .replace("// TYPES\n", &types)
        .replace("  // METHODS\n", &methods);
    let package = r#"{
  "name": "ingest-gateway-client",
  "version": "1.0.0",
  "description": "A client for this ingest-gateway API: typed methods, retries as the gateway means them, batch helpers.",
  "type": "module",
  "main": "dist/index.js",
  "types": "dist/index.d.ts",
  "exports": { ".": { "types": "./dist/index.d.ts", "import": "./dist/index.js" } },
  "files": ["dist", "src"],
  "scripts": { "build": "tsc" }
}
"#;
    let tsconfig = r#"{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ES2022",
    "moduleResolution": "bundler",
    "lib": ["ES2022", "DOM"],
    "strict": true,
    "declaration": true,
    "outDir": "dist",
    "rootDir": "src"
  },
  "include": ["src"]
}
"#;
    let readme = "# ingest-gateway-client\n\nGenerated by `ingest-gateway sdk --lang typescript` from the gateway's routes.\nBuild with `npx tsc`; import `Client` from `dist/index.js`.\n\n```ts\nconst client = new Client({ baseUrl: \"https://ingest.example.com\", apiKey: \"...\" });\n```\n\nRequests answered 429, 502, 503 or 504, and network errors, are retried with exponential\nbackoff and jitter (honouring `Retry-After`); other errors are thrown as `GatewayError`.\nA 202 (`spooled`) answer counts as accepted.\n";
    vec![
        ("package.json".into(), package.into()),
        ("tsconfig.json".into(), tsconfig.into()),
        ("README.md".into(), readme.into()),
        ("src/index.ts".into(), index),
    ]
}
