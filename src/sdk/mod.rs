//! Client SDKs generated from the configured routes (`ingest-gateway sdk --lang
//! typescript|python`): one typed method per route, from the same document the OpenAPI
//! export serves (paths, parameters, body models, security), and the gateway's own retry
//! semantics written in once: retry exactly 429, 502, 503, 504 and network errors, with
//! exponential backoff and full jitter, honouring `Retry-After`; never another 4xx. Batch
//! routes (Kinesis `PutRecords`, Firehose `PutRecordBatch`, SQS `SendMessageBatch`,
//! EventBridge `PutEvents`) get a helper that splits a list into allowed requests, gives
//! every event an id the caller sees, and on a partial failure resends only the records the
//! answer names as failed. Pure: the configuration in, files out.

pub mod python;
pub mod typescript;

use serde_json::{Value as Json, json};

use crate::config::Config;

/// The languages `sdk --lang` knows.
pub const LANGUAGES: [&str; 2] = ["typescript", "python"];

/// How a batch route's answer names its records' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Results {
    /// `Records[i]` with `ErrorCode` (Kinesis).
    Records,
    /// `RequestResponses[i]` with `ErrorCode` (Firehose).
    RequestResponses,
    /// `Entries[i]` with `ErrorCode` (EventBridge).
    Entries,
    /// `Failed[]` with an `Id` (SQS): the event's index or its id.
    FailedIds,
}

impl Results {
    pub fn name(self) -> &'static str {
        match self {
            Results::Records => "Records",
            Results::RequestResponses => "RequestResponses",
            Results::Entries => "Entries",
            Results::FailedIds => "Failed",
        }
    }
}

/// A batch route's limits per request and how its results read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub max_events: usize,
    pub max_bytes: usize,
    pub results: Results,
}

/// A request parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub required: bool,
}

/// One route, as a client calls it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The method's name: `postV1Events` (camelCase; the languages adapt it).
    pub name: String,
    pub method: String,
    pub path: String,
    pub path_params: Vec<String>,
    pub query: Vec<Param>,
    pub headers: Vec<Param>,
    /// The body's schema (the route's model), if it has one; `has_body` otherwise says
    /// whether it takes one.
    pub body: Option<Json>,
    pub has_body: bool,
    pub api_key: bool,
    pub bearer: bool,
    pub batch: Option<Batch>,
}

/// The API: its operations, and the named schemas their bodies refer to.
#[derive(Debug, Clone)]
pub struct Api {
    pub operations: Vec<Operation>,
    pub schemas: serde_json::Map<String, Json>,
}

/// What a batch action's requests may hold (the service's per-call limits).
fn batch_of(action: &str) -> Option<Batch> {
    let (max_events, max_bytes, results) = match action {
        "kinesis:PutRecords" => (500, 5 * 1024 * 1024, Results::Records),
        "firehose:PutRecordBatch" => (500, 4 * 1024 * 1024, Results::RequestResponses),
        "sqs:SendMessageBatch" => (10, 256 * 1024, Results::FailedIds),
        "aws:events:PutEvents" | "events:PutEvents" => (10, 256 * 1024, Results::Entries),
        _ => return None,
    };
    Some(Batch {
        max_events,
        max_bytes,
        results,
    })
}

/// `post` and `/v1/partners/{partner}/messages` as `postV1PartnersByPartnerMessages`.
pub fn method_name(method: &str, path: &str) -> String {
    let mut name = method.to_ascii_lowercase();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let (prefix, word) = match segment.strip_prefix('{') {
            Some(p) => ("By", p.trim_end_matches('}').trim_end_matches('+')),
            None => ("", segment),
        };
        name.push_str(prefix);
        for part in word.split(|c: char| !c.is_ascii_alphanumeric()) {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                name.push(first.to_ascii_uppercase());
                name.extend(chars);
            }
        }
    }
    name
}

/// The API of `config`'s routes.
pub fn api(config: &Config) -> Result<Api, String> {
    let doc = crate::openapi::export::document(config, false)?;
    let mut operations = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for route in &config.routes {
        let path = route.path.as_str().to_string();
        let method = route
            .method
            .as_ref()
            .map_or_else(|| "POST".to_string(), |m| m.as_str().to_string());
        let key = route.method.as_ref().map_or_else(
            || "x-amazon-apigateway-any-method".to_string(),
            |m| m.as_str().to_ascii_lowercase(),
        );
        let op = &doc["paths"][path.as_str()][key.as_str()];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let of = |place: &str| -> Vec<Param> {
            params
                .iter()
                .filter(|p| p["in"] == place)
                .filter_map(|p| {
                    Some(Param {
                        name: p["name"].as_str()?.to_string(),
                        required: p["required"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        };
        let path_params: Vec<String> = route
            .path
            .param_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let body = op["requestBody"]["content"]["application/json"]["schema"].clone();
        let security = op["security"].as_array().cloned().unwrap_or_default();
        let name = method_name(&method, &path);
        if !seen.insert(name.clone()) {
            continue;
        }
        let has_body = !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
        operations.push(Operation {
            name,
            has_body,
            method,
            path,
            path_params,
            query: of("query"),
            headers: of("header"),
            body: (!body.is_null()).then_some(body),
            api_key: security.iter().any(|s| s.get("api_key").is_some()),
            bearer: route.authorizer.is_some(),
            // A batch helper posts its events: routes without a body have none.
            batch: batch_of(route.action.name()).filter(|_| has_body),
        });
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    Ok(Api {
        operations,
        schemas,
    })
}

/// The package's files for `lang`, as (relative path, text).
pub fn generate(config: &Config, lang: &str) -> Result<Vec<(String, String)>, String> {
    files(&api(config)?, lang)
}

/// The package's files for `lang` from an [`Api`] already read.
pub fn files(api: &Api, lang: &str) -> Result<Vec<(String, String)>, String> {
    match lang {
        "typescript" => Ok(typescript::files(api)),
        "python" => Ok(python::files(api)),
        other => Err(format!(
            "no SDK for {other:?}: --lang is one of {}",
            LANGUAGES.join(", ")
        )),
    }
}

/// The files as a `.tar.gz`, under one directory `name/`.
pub fn tarball(name: &str, files: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("{name}/{path}"), text.as_bytes())?;
    }
    tar.into_inner()?.finish()
}

/// The generated text of every named schema (by `ty`) and every operation (by `method`,
/// joined by blank lines).
pub fn sections(
    api: &Api,
    ty: impl Fn(&str, &Json) -> String,
    method: impl Fn(&Operation) -> String,
) -> (String, String) {
    let types: String = api.schemas.iter().map(|(n, s)| ty(n, s)).collect();
    let methods: Vec<String> = api.operations.iter().map(method).collect();
    (types, methods.join("\n"))
}

/// A schema's `$ref` name (`#/components/schemas/NAME`).
pub fn ref_name(schema: &Json) -> Option<&str> {
    schema["$ref"]
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

/// A type name for a schema name (`clickstream-events` as `ClickstreamEvents`).
pub fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'T');
    }
    // The clients' own names are not a model's.
    if RESERVED.contains(&out.as_str()) {
        out.push_str("Model");
    }
    out
}

/// Names the generated clients define themselves (in either language).
const RESERVED: [&str; 21] = [
    "Answer",
    "BatchLimits",
    "BatchOptions",
    "BatchResult",
    "CallOptions",
    "Client",
    "ClientOptions",
    "Event",
    "GatewayError",
    "Any",
    "Callable",
    "Dict",
    "List",
    "Mapping",
    "NotRequired",
    "Optional",
    "Sequence",
    "Set",
    "Tuple",
    "TypeAlias",
    "Union",
];

/// The operations' limits as JSON, for the generated code's tables.
pub fn batch_table(api: &Api) -> Json {
    json!(
        api.operations
            .iter()
            .filter_map(|o| o.batch.map(|b| (o.name.clone(), b)))
            .map(|(n, b)| json!({"op": n, "maxEvents": b.max_events, "maxBytes": b.max_bytes, "results": b.results.name()}))
            .collect::<Vec<_>>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_read_as_the_route() {
        assert_eq!(method_name("POST", "/v1/events"), "postV1Events");
        assert_eq!(
            method_name("POST", "/v1/partners/{partner}/messages"),
            "postV1PartnersByPartnerMessages"
        );
        assert_eq!(method_name("GET", "/files/{proxy+}"), "getFilesByProxy");
        assert_eq!(method_name("GET", "/v1/device-status"), "getV1DeviceStatus");
        assert_eq!(type_name("clickstream-events"), "ClickstreamEvents");
        assert_eq!(type_name("2x"), "T2x");
        assert_eq!(type_name("Event"), "EventModel");
        assert_eq!(type_name("client"), "ClientModel");
    }
}
