//! OpenAPI 3.0 / Swagger 2.0 documents with API Gateway's extensions -> `gateway.toml`,
//! `mappings/*.vtl` and `models/*.json`. Pure: a parsed document in, files and a report out.
//!
//! Everything the document holds is either translated or named in the report: an operation
//! that cannot be served as written (a Lambda proxy, an authorizer) is left out, never
//! imported with its protection or behaviour silently missing.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::{METHODS, action_for_uri, ref_name};
use crate::integrations::Action;

/// What an import produces.
#[derive(Debug, Default)]
pub struct Imported {
    /// `gateway.toml`.
    pub config: String,
    /// Other files, by path relative to the output directory.
    pub files: BTreeMap<String, String>,
    /// What was not translated, one line each.
    pub untranslated: Vec<String>,
    /// What was translated with a caveat worth reading.
    pub notes: Vec<String>,
    /// Operations imported as routes.
    pub routes: usize,
}

/// The usage plan imported keys go in: an export holds no usage plans.
pub const PLAN: &str = "imported";

/// Reads a document's text: JSON, or YAML.
pub fn parse(text: &str) -> Result<Json, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"));
    }
    serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))
}

struct Doc<'a> {
    root: &'a Json,
    swagger2: bool,
}

impl Doc<'_> {
    fn schemes(&self) -> Option<&Map<String, Json>> {
        if self.swagger2 {
            self.root.get("securityDefinitions")?.as_object()
        } else {
            self.root
                .pointer("/components/securitySchemes")?
                .as_object()
        }
    }

    fn models(&self) -> Option<&Map<String, Json>> {
        if self.swagger2 {
            self.root.get("definitions")?.as_object()
        } else {
            self.root.pointer("/components/schemas")?.as_object()
        }
    }
}

/// Whether a security scheme is API Gateway's API key (`x-api-key` in the header).
fn is_api_key(scheme: &Json) -> bool {
    scheme["type"] == "apiKey"
        && scheme["in"] == "header"
        && scheme["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("x-api-key"))
        && scheme.get("x-amazon-apigateway-authtype").is_none()
        && scheme.get("x-amazon-apigateway-authorizer").is_none()
}

/// A file-name slug: `POST /v1/partners/{partner}/messages` -> `post-v1-partners-partner-messages`.
pub(crate) fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The literal target a template names (a stream, delivery stream, queue or state machine),
/// by its last path or ARN segment; `None` when the template computes it.
fn target_in_template(action: Action, template: &str) -> Option<String> {
    let pattern = crate::integrations::of(action)?.target_in_template();
    let caps = Regex::new(pattern).ok()?.captures(template)?;
    let found = caps.iter().skip(1).flatten().next()?.as_str();
    let decoded = crate::mapping::util::url_decode(found).unwrap_or_else(|_| found.to_string());
    decoded
        .rsplit(['/', ':'])
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `name.vtl`, or `name-2.vtl`, ... when that file is already taken.
fn free_name(files: &BTreeMap<String, String>, name: &str) -> String {
    free_file(files, name, "vtl")
}

/// `name.ext`, or `name-2.ext`, ... when that is taken.
fn free_file(files: &BTreeMap<String, String>, name: &str, ext: &str) -> String {
    let mut candidate = format!("{name}.{ext}");
    let mut n = 2;
    while files.contains_key(&candidate) {
        candidate = format!("{name}-{n}.{ext}");
        n += 1;
    }
    candidate
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Text for a comment or a message: on one line, without control characters (a document's
/// title must not end the comment and write configuration of its own).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A known field of an `x-ingest-gateway` `batch` or `throttle` object, as a TOML value of
/// the type the field takes; `None` for anything else (never written).
fn setting(object: &str, field: &str, v: &Json) -> Option<String> {
    let value = match (object, field, v) {
        ("batch", "linger", Json::String(s)) => toml::Value::String(s.clone()),
        ("batch", "max_records" | "max_bytes" | "queue" | "queue_bytes", Json::Number(n))
        | ("throttle", "burst", Json::Number(n)) => toml::Value::Integer(n.as_i64()?),
        ("batch", "aggregate", Json::Bool(b)) => toml::Value::Boolean(*b),
        ("throttle", "rate", Json::Number(n)) => toml::Value::Float(n.as_f64()?),
        _ => return None,
    };
    Some(value.to_string())
}

/// Top-level tables an import writes, and `[server]` keys: anything else in the generated
/// file means a document's text escaped its quoting.
const WRITTEN: [&str; 6] = [
    "server",
    "authorizers",
    "stage_variables",
    "gateway_responses",
    "usage_plans",
    "routes",
];
const WRITTEN_SERVER: [&str; 2] = ["stage", "binary_media_types"];

/// Checks that the generated configuration holds exactly what the import wrote: its tables,
/// one plan, and `routes` routes.
fn check_shape(config: &str, routes: usize) -> Result<(), String> {
    let table: toml::Table = toml::from_str(config)
        .map_err(|e| format!("the generated configuration does not parse: {e}"))?;
    let unexpected = |what: &str| {
        Err(format!(
            "the document's text changed the generated configuration ({what}); not imported"
        ))
    };
    if let Some(k) = table.keys().find(|k| !WRITTEN.contains(&k.as_str())) {
        return unexpected(&one_line(k));
    }
    if let Some(server) = table.get("server").and_then(toml::Value::as_table)
        && let Some(k) = server
            .keys()
            .find(|k| !WRITTEN_SERVER.contains(&k.as_str()))
    {
        return unexpected(&format!("server.{}", one_line(k)));
    }
    let plans = table.get("usage_plans").and_then(toml::Value::as_table);
    if plans.is_none_or(|p| p.len() != 1 || !p.contains_key(PLAN)) {
        return unexpected("usage_plans");
    }
    let written = table
        .get("routes")
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    if written != routes {
        return unexpected(&format!("{written} routes instead of {routes}"));
    }
    Ok(())
}

/// Rewrites a model's `$ref`s to the other models (`#/definitions/X`,
/// `#/components/schemas/X`, or API Gateway's model URLs) into `#/definitions/X`, so that a
/// model file with every model under `definitions` stands alone.
fn rewrite_refs(v: &mut Json) {
    match v {
        Json::Object(m) => {
            for (k, inner) in m.iter_mut() {
                if k == "$ref"
                    && let Some(r) = inner.as_str()
                    && let Some(name) = ref_name(r)
                {
                    *inner = Json::String(format!("#/definitions/{name}"));
                } else {
                    rewrite_refs(inner);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Imports a document.
pub fn import(root: &Json, source: &str) -> Result<Imported, String> {
    let swagger2 = root["swagger"].as_str().is_some_and(|v| v.starts_with('2'));
    let oas3 = root["openapi"].as_str().is_some_and(|v| v.starts_with('3'));
    if !swagger2 && !oas3 {
        return Err("not an OpenAPI 3.0 or Swagger 2.0 document (no \"openapi\": \"3...\" or \"swagger\": \"2.0\")".into());
    }
    let doc = Doc { root, swagger2 };
    let mut out = Imported::default();

    // `AUTHORIZER`: routes behind a Lambda authorizer take the key it names.
    let key_from_authorizer = root["x-amazon-apigateway-api-key-source"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("AUTHORIZER"));
    let binary: Vec<String> = root["x-amazon-apigateway-binary-media-types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        // API Gateway's export escapes the slash: "image~1png".
        .map(|t| t.replace("~1", "/"))
        .collect();
    let mut gateway_responses = String::new();
    for (kind, r) in root["x-amazon-apigateway-gateway-responses"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if !crate::config::GATEWAY_RESPONSE_TYPES.contains(&kind.as_str()) {
            out.untranslated.push(format!(
                "x-amazon-apigateway-gateway-responses.{kind}: the gateway never produces this response type"
            ));
            continue;
        }
        let mut lines = String::new();
        if let Some(status) = r["statusCode"]
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
            .or_else(|| r["statusCode"].as_u64().map(|n| n as u16))
        {
            lines.push_str(&format!("status = {status}\n"));
        }
        let mut headers = Vec::new();
        for (k, v) in r["responseParameters"].as_object().into_iter().flatten() {
            match (k.strip_prefix("gatewayresponse.header."), v.as_str()) {
                (Some(h), Some(v)) if v.starts_with('\'') => headers.push(format!("{} = {}", q(h), q(v))),
                _ => out.untranslated.push(format!(
                    "x-amazon-apigateway-gateway-responses.{kind}: {k} = {v}: only literal headers are supported"
                )),
            }
        }
        if !headers.is_empty() {
            lines.push_str(&format!("headers = {{ {} }}\n", headers.join(", ")));
        }
        if let Some(t) = r["responseTemplates"].as_object() {
            let chosen = t.get("application/json").or_else(|| t.values().next());
            if let Some(text) = chosen.and_then(Json::as_str) {
                let file = free_name(
                    &out.files,
                    &format!("mappings/gateway-response-{}", slug(kind)),
                );
                out.files.insert(file.clone(), text.to_string());
                lines.push_str(&format!("template = {}\n", q(&file)));
            }
            if t.len() > 1 {
                out.notes.push(format!(
                    "x-amazon-apigateway-gateway-responses.{kind}: only the application/json template is used"
                ));
            }
        }
        if !lines.is_empty() {
            gateway_responses.push_str(&format!("[gateway_responses.{kind}]\n{lines}\n"));
        }
    }
    for ext in [
        "x-amazon-apigateway-policy",
        "x-amazon-apigateway-minimum-compression-size",
        "x-amazon-apigateway-endpoint-configuration",
        "x-amazon-apigateway-documentation",
        "x-amazon-apigateway-request-validator-defaults",
    ] {
        if root.get(ext).is_some() {
            out.untranslated.push(format!("{ext}: not supported"));
        }
    }

    // Security schemes: the API key, authorizers, or something the gateway cannot check.
    let mut api_key_schemes = Vec::new();
    let mut other_schemes = Vec::new();
    let mut authorizers = Vec::new();
    let mut authorizers_toml = String::new();
    for (name, scheme) in doc.schemes().into_iter().flatten() {
        if is_api_key(scheme) {
            api_key_schemes.push(name.clone());
        } else if scheme.get("x-amazon-apigateway-authorizer").is_some() {
            match authorizer(name, scheme, &mut out) {
                Ok((toml, lambda)) => {
                    authorizers_toml.push_str(&toml);
                    authorizers.push((name.clone(), lambda));
                }
                Err(why) => {
                    other_schemes.push(name.clone());
                    out.untranslated.push(format!(
                        "security scheme {name}: {why}; operations that require it are not imported"
                    ));
                }
            }
        } else {
            other_schemes.push(name.clone());
            let kind = scheme["x-amazon-apigateway-authtype"]
                .as_str()
                .or(scheme["type"].as_str())
                .unwrap_or("unknown");
            out.untranslated.push(format!(
                "security scheme {name} ({kind}): authorizers are not supported; operations that require it are not imported"
            ));
        }
    }

    // Models: one file each, with every model under `definitions` for their `$ref`s.
    let mut definitions = Map::new();
    for (name, schema) in doc.models().into_iter().flatten() {
        let mut s = schema.clone();
        rewrite_refs(&mut s);
        definitions.insert(name.clone(), s);
    }
    let model_file = |name: &str, schema: &Json| -> String {
        let mut s = schema.clone();
        rewrite_refs(&mut s);
        if let Json::Object(m) = &mut s {
            let others: Map<String, Json> = definitions
                .iter()
                .filter(|(n, _)| n.as_str() != name)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            if !others.is_empty() && !m.contains_key("definitions") {
                m.insert("definitions".into(), Json::Object(others));
            }
        }
        serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
    };

    let validators = root["x-amazon-apigateway-request-validators"].as_object();
    let default_validator = root["x-amazon-apigateway-request-validator"].as_str();

    let mut routes = String::new();
    let paths = root["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        let path_params: Vec<Json> = item["parameters"].as_array().cloned().unwrap_or_default();
        for (key, method) in METHODS {
            let Some(op) = item.get(*key) else { continue };
            let name = format!("{method} {path}");
            let route = match route(
                &doc,
                &name,
                path,
                method,
                op,
                &path_params,
                &api_key_schemes,
                &other_schemes,
                &authorizers,
                key_from_authorizer,
                validators,
                default_validator,
                &mut out,
            ) {
                Ok(r) => r,
                Err(why) => {
                    out.untranslated
                        .push(format!("{name}: not imported: {why}"));
                    continue;
                }
            };
            if let Some((model_name, schema)) = &route.model {
                out.files.insert(
                    format!("models/{model_name}.json"),
                    model_file(model_name, schema),
                );
            }
            routes.push_str(&route.toml);
            out.files.extend(route.files);
            out.routes += 1;
        }
    }
    // An export of this gateway also carries its stage and stage variables.
    let mut server = String::new();
    if let Some(stage) = root
        .pointer("/x-ingest-gateway/stage")
        .and_then(Json::as_str)
    {
        server.push_str(&format!("stage = {}\n", q(stage)));
    }
    if !binary.is_empty() {
        let types: Vec<String> = binary.iter().map(|t| q(t)).collect();
        server.push_str(&format!("binary_media_types = [{}]\n", types.join(", ")));
    }
    let mut preamble = String::new();
    if !server.is_empty() {
        preamble.push_str(&format!("[server]\n{server}\n"));
    }
    if let Some(vars) = root
        .pointer("/x-ingest-gateway/stage_variables")
        .and_then(Json::as_object)
        .filter(|v| !v.is_empty())
    {
        preamble.push_str("[stage_variables]\n");
        for (k, v) in vars {
            preamble.push_str(&format!(
                "{} = {}\n",
                q(k),
                q(v.as_str().unwrap_or_default())
            ));
        }
        preamble.push('\n');
    }
    let title = one_line(
        root.pointer("/info/title")
            .and_then(Json::as_str)
            .unwrap_or("imported API"),
    );
    let source = one_line(source);
    out.config = format!(
        "# {title}: imported from {source} by `ingest-gateway import-openapi`.\n\
         # Usage plans are not part of an export: keys for routes that need one go in the\n\
         # plan below (no limits; set them), e.g. `ingest-gateway keys create --name app --plan {PLAN}`.\n\n\
         {preamble}{gateway_responses}{authorizers_toml}[usage_plans.{PLAN}]\n{routes}"
    );
    if out.routes > 0 && root.pointer("/info/title").is_none() {
        out.notes.push("the document has no info.title".into());
    }
    check_shape(&out.config, out.routes)?;
    Ok(out)
}

/// `[authorizers.NAME]` for a security scheme with `x-amazon-apigateway-authorizer`
/// (`cognito_user_pools`, `token`, `request`, or an HTTP API's `jwt`), and whether it is a
/// Lambda authorizer.
fn authorizer(name: &str, scheme: &Json, out: &mut Imported) -> Result<(String, bool), String> {
    let a = &scheme["x-amazon-apigateway-authorizer"];
    let kind = a["type"].as_str().unwrap_or("").to_ascii_lowercase();
    let mut toml = format!("[authorizers.{}]\n", q(name));
    // The header a token is in: `identitySource`, else the scheme's own `name`.
    let sources: Vec<String> = match &a["identitySource"] {
        Json::String(s) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Json::Array(list) => list
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let header = scheme["name"]
        .as_str()
        .filter(|_| scheme["in"] == "header")
        .map(|n| format!("header:{n}"));
    let own_source = scheme
        .pointer("/x-ingest-gateway/identity_source")
        .and_then(Json::as_str)
        .map(str::to_string);
    let token_source = own_source.or_else(|| sources.first().cloned()).or(header);
    let ttl = a["authorizerResultTtlInSeconds"].as_u64().unwrap_or(300);
    let function = || -> Result<String, String> {
        let uri = a["authorizerUri"]
            .as_str()
            .ok_or("a Lambda authorizer without authorizerUri")?;
        crate::config::authorizers::lambda_function(uri)
            .ok_or_else(|| format!("authorizerUri {uri:?} names no Lambda function"))
    };
    if a.get("authorizerCredentials").is_some() {
        out.untranslated.push(format!(
            "security scheme {name}: authorizerCredentials: the gateway invokes the function with its own credentials"
        ));
    }
    let lambda = match kind.as_str() {
        "cognito_user_pools" => {
            let pools: Vec<String> = a["providerARNs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .map(q)
                .collect();
            if pools.is_empty() {
                return Err("a Cognito authorizer without providerARNs".into());
            }
            toml.push_str(&format!(
                "type = \"cognito_user_pools\"\nuser_pools = [{}]\n",
                pools.join(", ")
            ));
            false
        }
        "jwt" => {
            let config = &a["jwtConfiguration"];
            let issuer = config["issuer"]
                .as_str()
                .ok_or("a JWT authorizer without jwtConfiguration.issuer")?;
            let audiences: Vec<String> = config["audience"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .map(q)
                .collect();
            toml.push_str(&format!(
                "type = \"jwt\"\nissuer = {}\naudiences = [{}]\n",
                q(issuer),
                audiences.join(", ")
            ));
            if let Some(url) = a["x-ingest-gateway-jwks-url"].as_str() {
                toml.push_str(&format!("jwks_url = {}\n", q(url)));
            }
            false
        }
        "token" => {
            toml.push_str(&format!(
                "type = \"lambda_token\"\nfunction = {}\nttl = \"{ttl}s\"\n",
                q(&function()?)
            ));
            if let Some(re) = a["identityValidationExpression"].as_str() {
                toml.push_str(&format!("validation_regex = {}\n", q(re)));
            }
            true
        }
        "request" => {
            let list: Vec<String> = sources.iter().map(|s| q(s)).collect();
            toml.push_str(&format!(
                "type = \"lambda_request\"\nfunction = {}\nttl = \"{ttl}s\"\nidentity_sources = [{}]\n",
                q(&function()?),
                list.join(", ")
            ));
            true
        }
        other => return Err(format!("authorizer type {other:?} is not supported")),
    };
    if kind != "request"
        && let Some(s) = token_source
    {
        toml.push_str(&format!("identity_source = {}\n", q(&s)));
    }
    toml.push('\n');
    Ok((toml, lambda))
}

/// An S3 `path/BUCKET/KEY` URI: the operation from the integration's method, and the
/// bucket when it is literal.
fn s3_path(uri: &str, integration: &Json) -> Result<(Action, Option<String>), String> {
    let path = uri.split(":s3:path/").nth(1).unwrap_or_default();
    let (bucket, _) = path.split_once('/').unwrap_or((path, ""));
    let operation = match integration["httpMethod"]
        .as_str()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("PUT") => "PutObject",
        Some("GET") => "GetObject",
        Some("DELETE") => "DeleteObject",
        Some("HEAD") => "HeadObject",
        other => return Err(format!("an S3 path integration with method {other:?}")),
    };
    let action = Action::parse(&format!("aws:s3:{operation}")).ok_or("not an S3 operation")?;
    let bucket = (!bucket.contains('{') && !bucket.is_empty()).then(|| bucket.to_string());
    Ok((action, bucket))
}

/// A mapping's destination, with an S3 URI's bucket and key placeholders named as the
/// gateway reads them (`integration.request.path.bucket`, `...key`).
fn s3_placeholder(uri: &str, to: &str) -> String {
    let Some(path) = uri.split(":s3:path/").nth(1) else {
        return to.to_string();
    };
    let Some(name) = to.strip_prefix("integration.request.path.") else {
        return to.to_string();
    };
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let hole = format!("{{{name}}}");
    if bucket == hole {
        "integration.request.path.bucket".into()
    } else if key.contains(&hole) || key.contains(&format!("{{{name}+}}")) {
        "integration.request.path.key".into()
    } else {
        to.to_string()
    }
}

/// One imported route: its TOML, its template files and its body model.
struct Route {
    toml: String,
    files: BTreeMap<String, String>,
    model: Option<(String, Json)>,
}

#[allow(clippy::too_many_arguments)]
fn route(
    doc: &Doc<'_>,
    name: &str,
    path: &str,
    method: &str,
    op: &Json,
    path_params: &[Json],
    api_key_schemes: &[String],
    other_schemes: &[String],
    authorizers: &[(String, bool)],
    key_from_authorizer: bool,
    validators: Option<&Map<String, Json>>,
    default_validator: Option<&str>,
    out: &mut Imported,
) -> Result<Route, String> {
    let integration = op
        .get("x-amazon-apigateway-integration")
        .ok_or("it has no x-amazon-apigateway-integration")?;
    let kind = integration["type"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    let uri = integration["uri"].as_str();
    let (action, uri_target, proxy) = match kind.as_str() {
        "aws" if uri.is_some_and(|u| u.contains(":s3:path/")) => {
            let (action, bucket) = s3_path(uri.unwrap_or_default(), integration)?;
            (action, bucket, false)
        }
        "aws" | "aws_proxy" => {
            let (action, target) = action_for_uri(uri.ok_or("the integration has no uri")?)?;
            if kind == "aws_proxy" && action != Action::LambdaInvoke {
                return Err("an aws_proxy integration that does not call a Lambda function".into());
            }
            (action, target, kind == "aws_proxy")
        }
        "http" | "http_proxy" => {
            if integration["connectionType"] == "VPC_LINK" {
                return Err(
                    "the integration goes through a VPC link; give the route the backend's own uri"
                        .into(),
                );
            }
            uri.ok_or("the integration has no uri")?;
            (Action::Http, None, kind == "http_proxy")
        }
        "mock" => (Action::Mock, None, false),
        other => {
            return Err(format!(
                "integration type {other:?}; expected aws, aws_proxy, http, http_proxy or mock"
            ));
        }
    };

    // Who may call: the operation's security, else the document's.
    let security = op
        .get("security")
        .or(doc.root.get("security"))
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut api_key_required = false;
    let mut authorized: Option<(&str, bool, Vec<String>)> = None;
    for requirement in &security {
        for (scheme, scopes) in requirement.as_object().into_iter().flatten() {
            if other_schemes.contains(scheme) {
                return Err(format!(
                    "it requires the security scheme {scheme}, which is not supported"
                ));
            }
            if api_key_schemes.contains(scheme) {
                api_key_required = true;
            }
            if let Some((name, lambda)) = authorizers.iter().find(|(n, _)| n == scheme) {
                if authorized.as_ref().is_some_and(|(a, _, _)| a != name) {
                    return Err("it names two authorizers; a route has one".into());
                }
                let scopes = scopes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect();
                authorized = Some((name, *lambda, scopes));
            }
        }
    }
    if op["x-amazon-apigateway-api-key-required"] == true {
        api_key_required = true;
    }

    let base = slug(name);
    let mut files = BTreeMap::new();
    let mut toml = format!(
        "\n[[routes]]\nmethod = {}\npath = {}\naction = {}\n",
        q(method),
        q(path),
        q(action.name())
    );
    if proxy {
        toml.push_str("integration = \"proxy\"\n");
    }
    if action == Action::Http {
        toml.push_str(&format!("uri = {}\n", q(uri.unwrap_or_default())));
        if let Some(m) = integration["httpMethod"]
            .as_str()
            .filter(|m| !m.eq_ignore_ascii_case("ANY") && !m.eq_ignore_ascii_case(method))
        {
            toml.push_str(&format!("http_method = {}\n", q(&m.to_ascii_uppercase())));
        }
    }
    if let Some((authorizer, lambda, scopes)) = &authorized {
        toml.push_str(&format!("authorizer = {}\n", q(authorizer)));
        if !scopes.is_empty() && !lambda {
            let scopes: Vec<String> = scopes.iter().map(|s| q(s)).collect();
            toml.push_str(&format!("scopes = [{}]\n", scopes.join(", ")));
        }
        if *lambda && api_key_required && key_from_authorizer {
            toml.push_str("api_key_source = \"authorizer\"\n");
        }
    }

    // Request templates, and the target they (or the URI) name.
    let mut target = uri_target;
    let mut templates = Vec::new();
    let templates_given = integration["requestTemplates"]
        .as_object()
        .is_some_and(|t| !t.is_empty());
    if proxy && templates_given {
        out.notes.push(format!(
            "{name}: a proxy integration hands the request over whole; its requestTemplates are left out"
        ));
    }
    if let Some(t) = integration["requestTemplates"]
        .as_object()
        .filter(|_| !proxy)
    {
        for (media, text) in t {
            let text = text.as_str().unwrap_or_default();
            let file = free_name(&files, &format!("mappings/{base}-{}", slug(media)));
            if target.is_none() {
                target = target_in_template(action, text);
            }
            files.insert(file.clone(), text.to_string());
            templates.push(format!("{} = {}", q(media), q(&file)));
        }
    }
    // What an export of this gateway adds beyond API Gateway's fields.
    let own = op.get("x-ingest-gateway").cloned().unwrap_or_default();
    if let Some(t) = own["target"].as_str() {
        target = Some(t.to_string());
    }
    match &target {
        Some(t) => toml.push_str(&format!("target = {}\n", q(t))),
        None if matches!(action, Action::Http | Action::Mock) => {}
        None => out.notes.push(format!(
            "{name}: the templates do not name a literal target; the route has none (no batching, and a template may write to any stream, queue or state machine the credentials allow): set `target`"
        )),
    }
    if !templates.is_empty() {
        toml.push_str(&format!(
            "request_templates = {{ {} }}\n",
            templates.join(", ")
        ));
    }
    if let Some(p) = integration["passthroughBehavior"].as_str() {
        let p = p.to_ascii_lowercase();
        if ["when_no_match", "when_no_templates", "never"].contains(&p.as_str()) {
            toml.push_str(&format!("passthrough = {}\n", q(&p)));
        } else {
            out.untranslated
                .push(format!("{name}: passthroughBehavior {p:?} is not known"));
        }
    }
    if let Some(ms) = integration["timeoutInMillis"].as_u64() {
        toml.push_str(&format!("timeout = {}\n", q(&format!("{ms}ms"))));
    }
    if api_key_required {
        toml.push_str("api_key_required = true\n");
    }
    // A response header from the service's response needs the route's own call.
    let reads_headers = integration["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, r)| r["responseParameters"].as_object().into_iter().flatten())
        .any(|(_, v)| {
            v.as_str()
                .is_some_and(|v| v.starts_with("integration.response.header."))
        });
    let batches =
        crate::integrations::of(action).is_some_and(|i| i.batch_caps(action, false).is_some());
    if reads_headers && batches && own.get("batch").is_none() {
        toml.push_str("batch = false\n");
        out.notes.push(format!(
            "{name}: its responses read the service's response headers, so it does not batch (one call per request, as API Gateway)"
        ));
    }
    for (key, value) in own.as_object().into_iter().flatten() {
        let line = match (key.as_str(), value) {
            ("target", _) => continue,
            ("api_key_query" | "spool", Json::String(v)) => format!("{key} = {}", q(v)),
            // The CA's PEM, written beside the templates.
            ("backend_ca", Json::String(pem)) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                let file = free_file(&files, &format!("certs/{base}-ca"), "pem");
                files.insert(file.clone(), pem.clone());
                format!("backend_ca = {}", q(&file))
            }
            ("rate_limit_headers" | "validation_details", Json::Bool(b)) => format!("{key} = {b}"),
            ("batch", Json::Bool(b)) => format!("batch = {b}"),
            ("batch" | "throttle", Json::Object(m)) => {
                let mut fields = Vec::new();
                for (k, v) in m {
                    match setting(key, k, v) {
                        Some(v) => fields.push(format!("{k} = {v}")),
                        None => out.untranslated.push(format!(
                            "{name}: x-ingest-gateway.{key}.{}: not a known setting",
                            one_line(k)
                        )),
                    }
                }
                format!("{key} = {{ {} }}", fields.join(", "))
            }
            _ => {
                out.untranslated.push(format!(
                    "{name}: x-ingest-gateway.{key} = {value}: not known"
                ));
                continue;
            }
        };
        toml.push_str(&line);
        toml.push('\n');
    }
    let mut mappings = Vec::new();
    for (k, v) in integration["requestParameters"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let header = |h: &str| k.eq_ignore_ascii_case(&format!("integration.request.header.{h}"));
        let form = header("Content-Type")
            && v.as_str()
                .is_some_and(|v| v.contains("x-www-form-urlencoded"));
        if form && crate::integrations::of(action).is_some_and(|i| i.reads_form_requests()) {
            continue; // The SQS integration reads a form-encoded template as is.
        }
        // A service's protocol sets its own target and content type.
        if matches!(action, Action::Aws(_)) && (header("X-Amz-Target") || header("Content-Type")) {
            continue;
        }
        if action == Action::LambdaInvoke && header("X-Amz-Invocation-Type") {
            if v.as_str() == Some("'Event'") {
                toml.push_str("invocation = \"event\"\n");
            }
            continue;
        }
        if (action == Action::Http || matches!(action, Action::Aws(_)))
            && let Some(source) = v.as_str()
            && crate::config::integration::ParamTarget::parse(k).is_some()
            && crate::config::integration::ParamSource::parse(source).is_some()
        {
            // An S3 URI's placeholders are the object's bucket and key.
            let k = s3_placeholder(uri.unwrap_or_default(), k);
            mappings.push(format!("{} = {}", q(&k), q(source)));
            continue;
        }
        out.untranslated.push(format!(
            "{name}: requestParameters {k} = {v}: integration request parameters are not supported"
        ));
    }
    if !mappings.is_empty() {
        toml.push_str(&format!(
            "request_parameters = {{ {} }}\n",
            mappings.join(", ")
        ));
    }
    if let Some(c) = integration["credentials"].as_str() {
        out.notes.push(format!(
            "{name}: the integration's role {c} is not assumed; the gateway calls AWS with its own credentials (see `ingest-gateway iam-policy`)"
        ));
    }
    if let Some(h) = integration["cacheKeyParameters"].as_array()
        && !h.is_empty()
    {
        out.untranslated.push(format!(
            "{name}: cacheKeyParameters: caching is not supported"
        ));
    }

    // Request validation.
    let validator = op["x-amazon-apigateway-request-validator"]
        .as_str()
        .or(default_validator);
    let (check_body, check_params) = match validator {
        None => (false, false),
        Some(v) => match validators.and_then(|m| m.get(v)) {
            Some(spec) => (
                spec["validateRequestBody"] == true,
                spec["validateRequestParameters"] == true,
            ),
            None => {
                out.untranslated
                    .push(format!("{name}: request validator {v:?} is not declared"));
                (false, false)
            }
        },
    };
    let params: Vec<Json> = path_params
        .iter()
        .chain(op["parameters"].as_array().into_iter().flatten())
        .cloned()
        .collect();
    let mut model = None;
    if check_body {
        let schema = if doc.swagger2 {
            params
                .iter()
                .find(|p| p["in"] == "body")
                .map(|p| p["schema"].clone())
        } else {
            op.pointer("/requestBody/content")
                .and_then(Json::as_object)
                .and_then(|c| c.get("application/json").or_else(|| c.values().next()))
                .map(|c| c["schema"].clone())
        };
        match schema {
            Some(s) if s.get("$ref").is_some() => {
                let model_name = s["$ref"].as_str().and_then(ref_name).unwrap_or_default();
                match doc.models().and_then(|m| m.get(&model_name)) {
                    Some(schema) => model = Some((model_name, schema.clone())),
                    None => out.untranslated.push(format!(
                        "{name}: body model {model_name:?} is not declared; the body is not validated"
                    )),
                }
            }
            Some(s) if s.is_object() => model = Some((format!("{base}-body"), s)),
            _ => out.notes.push(format!(
                "{name}: the validator checks the body but the operation declares no body model"
            )),
        }
    }
    if let Some((model_name, _)) = &model {
        toml.push_str(&format!(
            "request_model = {}\n",
            q(&format!("models/{model_name}.json"))
        ));
    }
    if check_params {
        let mut required: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for p in &params {
            let (Some(place), Some(pname)) = (p["in"].as_str(), p["name"].as_str()) else {
                continue;
            };
            let place = match place {
                "path" => "path",
                "query" => "querystring",
                "header" => "header",
                _ => continue,
            };
            if p["required"] == true
                && !required
                    .get(place)
                    .is_some_and(|v| v.contains(&pname.to_string()))
            {
                required.entry(place).or_default().push(pname.to_string());
            }
        }
        if !required.is_empty() {
            let parts: Vec<String> = required
                .iter()
                .map(|(place, names)| {
                    let names: Vec<String> = names.iter().map(|n| q(n)).collect();
                    format!("{place} = [{}]", names.join(", "))
                })
                .collect();
            toml.push_str(&format!(
                "required_parameters = {{ {} }}\n",
                parts.join(", ")
            ));
        }
    }

    // Integration responses (a proxy route answers with the backend's own).
    let mut responses: Vec<(&String, &Json)> = integration["responses"]
        .as_object()
        .filter(|_| !proxy)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    // A Lambda function's selection pattern matches its errorMessage.
    let lambda = matches!(action, Action::LambdaInvoke);
    // The default last: the others are tried first, as API Gateway does.
    responses.sort_by_key(|(k, _)| *k == "default");
    for (pattern, resp) in responses {
        toml.push_str("\n[[routes.responses]]\n");
        // A response that also selects by error code carries both patterns beside its key.
        match resp["x-ingest-gateway-error-pattern"].as_str() {
            Some(code) => {
                if let Some(p) = resp["x-ingest-gateway-status-pattern"].as_str() {
                    toml.push_str(&format!("pattern = {}\n", q(p)));
                }
                toml.push_str(&format!("error_pattern = {}\n", q(code)));
            }
            None if pattern != "default" && lambda => {
                toml.push_str(&format!("error_pattern = {}\n", q(pattern)));
            }
            None if pattern != "default" => {
                toml.push_str(&format!("pattern = {}\n", q(pattern)));
            }
            None => {}
        }
        let status = resp["statusCode"]
            .as_str()
            .and_then(|s| s.parse::<u16>().ok())
            .or_else(|| resp["statusCode"].as_u64().map(|n| n as u16))
            .unwrap_or(200);
        toml.push_str(&format!("status = {status}\n"));
        let mut headers = Vec::new();
        for (k, v) in resp["responseParameters"].as_object().into_iter().flatten() {
            let (Some(header), Some(source)) =
                (k.strip_prefix("method.response.header."), v.as_str())
            else {
                out.untranslated
                    .push(format!("{name}: response parameter {k}: not supported"));
                continue;
            };
            let supported = source.starts_with('\'')
                || source.starts_with("integration.response.body.")
                || source.starts_with("integration.response.header.")
                || source.starts_with("context.")
                || source.starts_with("stageVariables.");
            if supported {
                headers.push(format!("{} = {}", q(header), q(source)));
            } else {
                out.untranslated.push(format!(
                    "{name}: response header {header} = {source}: only literals, integration.response.body.*, integration.response.header.*, context.* and stageVariables.* are supported"
                ));
            }
        }
        if !headers.is_empty() {
            toml.push_str(&format!("headers = {{ {} }}\n", headers.join(", ")));
        }
        if let Some(t) = resp["responseTemplates"].as_object() {
            let chosen = t.get("application/json").or_else(|| t.values().next());
            if let Some(text) = chosen.and_then(Json::as_str) {
                let file = format!(
                    "mappings/{base}-response-{}.vtl",
                    if pattern == "default" {
                        "default".to_string()
                    } else {
                        slug(pattern)
                    }
                );
                files.insert(file.clone(), text.to_string());
                toml.push_str(&format!("template = {}\n", q(&file)));
            }
            if t.len() > 1 {
                out.notes.push(format!(
                    "{name}: response {pattern}: only the application/json response template is used"
                ));
            }
        }
    }
    Ok(Route { toml, files, model })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_are_read_from_literal_templates_only() {
        let t = |a, s| target_in_template(a, s);
        assert_eq!(
            t(
                Action::KinesisPutRecords,
                r#"{"StreamName": "clicks", "Records": []}"#
            ),
            Some("clicks".into())
        );
        assert_eq!(
            t(
                Action::KinesisPutRecords,
                r#"{"StreamName": "$stageVariables.s"}"#
            ),
            None
        );
        assert_eq!(
            t(
                Action::SqsSendMessage,
                "Action=SendMessage&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123%2Fpartner-q&MessageBody=$input.body"
            ),
            Some("partner-q".into())
        );
        assert_eq!(
            t(
                Action::StatesStartSyncExecution,
                r#"{"input": "$util.escapeJavaScript($input.json('$'))", "stateMachineArn": "arn:aws:states:us-east-1:123:stateMachine:quotes"}"#
            ),
            Some("quotes".into())
        );
    }

    #[test]
    fn a_swagger_2_document_imports_with_its_model_validator_and_responses() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "t"},
            "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
            "definitions": {"Event": {"type": "object", "required": ["type"]}},
            "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
            "paths": {"/e/{id}": {"post": {
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "type": "string"},
                    {"name": "v", "in": "query", "required": true, "type": "string"},
                    {"in": "body", "name": "Event", "required": true, "schema": {"$ref": "#/definitions/Event"}}
                ],
                "security": [{"api_key": []}],
                "x-amazon-apigateway-request-validator": "all",
                "x-amazon-apigateway-integration": {
                    "type": "aws",
                    "uri": "arn:aws:apigateway:us-east-1:kinesis:action/PutRecord",
                    "httpMethod": "POST",
                    "requestTemplates": {"application/json": "{\"StreamName\": \"s1\", \"Data\": \"$util.base64Encode($input.body)\", \"PartitionKey\": \"$input.params('id')\"}"},
                    "passthroughBehavior": "WHEN_NO_TEMPLATES",
                    "timeoutInMillis": 5000,
                    "responses": {
                        "default": {"statusCode": "200", "responseParameters": {"method.response.header.x-seq": "integration.response.body.SequenceNumber"}},
                        "4\\d{2}": {"statusCode": "400", "responseTemplates": {"application/json": "{\"error\": \"$input.path('$.message')\"}"}}
                    }
                }
            }}}
        });
        let imported = import(&doc, "export.json").unwrap();
        assert_eq!(imported.routes, 1);
        assert!(
            imported.untranslated.is_empty(),
            "{:?}",
            imported.untranslated
        );
        let config: toml::Table = toml::from_str(&imported.config).unwrap();
        let route = &config["routes"][0];
        assert_eq!(route["method"].as_str(), Some("POST"));
        assert_eq!(route["action"].as_str(), Some("kinesis:PutRecord"));
        assert_eq!(route["target"].as_str(), Some("s1"));
        assert_eq!(route["passthrough"].as_str(), Some("when_no_templates"));
        assert_eq!(route["timeout"].as_str(), Some("5000ms"));
        assert_eq!(route["api_key_required"].as_bool(), Some(true));
        assert_eq!(route["request_model"].as_str(), Some("models/Event.json"));
        assert_eq!(route["required_parameters"]["path"][0].as_str(), Some("id"));
        assert_eq!(
            route["required_parameters"]["querystring"][0].as_str(),
            Some("v")
        );
        let responses = route["responses"].as_array().unwrap();
        assert_eq!(responses[0]["pattern"].as_str(), Some("4\\d{2}"));
        assert_eq!(responses[1].get("pattern"), None, "the default comes last");
        assert_eq!(
            responses[1]["headers"]["x-seq"].as_str(),
            Some("integration.response.body.SequenceNumber")
        );
        assert!(imported.files.contains_key("models/Event.json"));
    }

    #[test]
    fn what_cannot_be_served_is_reported_and_left_out() {
        let doc = json!({
            "openapi": "3.0.1",
            "info": {"title": "t"},
            "x-amazon-apigateway-binary-media-types": ["image/png"],
            "components": {"securitySchemes": {"auth": {"type": "apiKey", "name": "Authorization", "in": "header", "x-amazon-apigateway-authtype": "custom"}}},
            "paths": {
                "/lambda": {"post": {"x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/f/invocations"}}},
                "/secured": {"post": {"security": [{"auth": []}], "x-amazon-apigateway-integration": {"type": "aws", "uri": "arn:aws:apigateway:us-east-1:kinesis:action/PutRecord"}}},
                "/faces": {"post": {"x-amazon-apigateway-integration": {"type": "aws", "uri": "arn:aws:apigateway:us-east-1:rekognition:action/DetectLabels"}}},
                "/vpc": {"post": {"x-amazon-apigateway-integration": {"type": "http_proxy", "connectionType": "VPC_LINK"}}},
                "/bare": {"get": {}}
            }
        });
        let imported = import(&doc, "x").unwrap();
        assert_eq!(imported.routes, 0);
        let report = imported.untranslated.join("\n");
        for expected in [
            "security scheme auth (custom)",
            "POST /lambda: not imported: integration uri \"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/f/invocations\" names no Lambda function",
            "POST /secured: not imported: it requires the security scheme auth",
            "POST /faces: not imported: the AWS action rekognition:DetectLabels is not supported",
            "POST /vpc: not imported: the integration goes through a VPC link",
            "GET /bare: not imported: it has no x-amazon-apigateway-integration",
        ] {
            assert!(report.contains(expected), "{expected:?} in:\n{report}");
        }
    }
}
