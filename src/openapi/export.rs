//! The served routes as an OpenAPI 3.0 document: paths, parameters, body models, the API key
//! security scheme and responses, with API Gateway's `x-amazon-apigateway-*` extensions (and
//! `x-ingest-gateway` for what API Gateway has no field for), so that importing it again
//! gives the same gateway. Built once at start-up; reads the template and model files.

use serde_json::{Map, Value as Json, json};

use super::uri_for_action;
use crate::config::{Config, Passthrough, RouteConfig};
use crate::spool::Mode;
use crate::upstream::Action;

/// The request validators every exported document declares.
const VALIDATORS: [(&str, bool, bool); 3] = [
    ("body-and-params", true, true),
    ("body", true, false),
    ("params", false, true),
];

/// Keywords a JSON Schema may hold that OpenAPI 3.0's Schema Object does not allow.
const NOT_IN_OAS30: [&str; 3] = ["$schema", "definitions", "id"];

/// Builds the document. `extensions: false` leaves out the integration details (templates,
/// targets): a description for clients only.
pub fn document(config: &Config, extensions: bool) -> Result<Json, String> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for route in &config.routes {
        let (key, op) = operation(config, route, extensions, &mut schemas)?;
        let item = paths
            .entry(route.path.as_str().to_string())
            .or_insert_with(|| json!({}));
        item[key] = op;
    }
    let mut schemes = Map::new();
    schemes.insert(
        "api_key".into(),
        json!({"type": "apiKey", "name": "x-api-key", "in": "header"}),
    );
    for a in &config.authorizers {
        schemes.insert(a.name().to_string(), security_scheme(config, a, extensions));
    }
    let mut doc = json!({
        "openapi": "3.0.1",
        "info": {"title": "ingest-gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": schemes,
            "schemas": schemas,
        },
    });
    if extensions {
        doc["x-ingest-gateway"] = json!({
            "stage": config.stage,
            "stage_variables": config.stage_variables,
        });
        // API Gateway has one key source per API.
        let from_authorizer = config.routes.iter().any(|r| r.api_key_from_authorizer);
        doc["x-amazon-apigateway-api-key-source"] = json!(if from_authorizer {
            "AUTHORIZER"
        } else {
            "HEADER"
        });
        if !config.binary_media_types.is_empty() {
            doc["x-amazon-apigateway-binary-media-types"] = json!(config.binary_media_types);
        }
        if !config.gateway_responses.is_empty() {
            let mut responses = Map::new();
            for (kind, r) in &config.gateway_responses {
                let mut v = json!({});
                if let Some(s) = r.status {
                    v["statusCode"] = json!(s.to_string());
                }
                if !r.headers.is_empty() {
                    v["responseParameters"] = response_parameters(
                        "gatewayresponse.header",
                        r.headers.iter().map(|(n, val)| {
                            (
                                n.as_str(),
                                format!("'{}'", val.to_str().unwrap_or_default()),
                            )
                        }),
                    );
                }
                if let Some(t) = &r.template {
                    v["responseTemplates"] = json!({"application/json": read(t)?});
                }
                responses.insert(kind.clone(), v);
            }
            doc["x-amazon-apigateway-gateway-responses"] = Json::Object(responses);
        }
        doc["x-amazon-apigateway-request-validators"] = VALIDATORS
            .iter()
            .map(|(name, body, params)| {
                (
                    name.to_string(),
                    json!({"validateRequestBody": body, "validateRequestParameters": params}),
                )
            })
            .collect::<Map<String, Json>>()
            .into();
    }
    Ok(doc)
}

/// API Gateway's `responseParameters`: `{PREFIX.NAME: source}`.
fn response_parameters<'a>(prefix: &str, headers: impl Iterator<Item = (&'a str, String)>) -> Json {
    headers
        .map(|(name, source)| (format!("{prefix}.{name}"), Json::String(source)))
        .collect::<Map<String, Json>>()
        .into()
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A JSON Schema `type` list (`["object", "array"]`, `["string", "null"]`) as OpenAPI 3.0
/// has it, which allows one type only: `null` as `nullable: true`, several as `anyOf` one
/// type each (beside an `anyOf` already there, both under `allOf`).
fn oas30_types(m: &mut Map<String, Json>) {
    let Some(Json::Array(types)) = m.get("type") else {
        return;
    };
    let mut names: Vec<String> = types
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    m.remove("type");
    if names.iter().any(|t| t == "null") {
        names.retain(|t| t != "null");
        m.insert("nullable".into(), Json::Bool(true));
    }
    match names.as_slice() {
        [] => {}
        [one] => {
            m.insert("type".into(), Json::String(one.clone()));
        }
        several => {
            let any: Vec<Json> = several
                .iter()
                .map(|t| serde_json::json!({ "type": t }))
                .collect();
            match m.remove("anyOf") {
                None => {
                    m.insert("anyOf".into(), Json::Array(any));
                }
                Some(existing) => {
                    let mut all = match m.remove("allOf") {
                        Some(Json::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    all.push(serde_json::json!({ "anyOf": existing }));
                    all.push(serde_json::json!({ "anyOf": any }));
                    m.insert("allOf".into(), Json::Array(all));
                }
            }
        }
    }
}

/// A model as OpenAPI 3.0 schemas: the model under `name`, its `definitions` beside it (named
/// `{name}_{definition}` where the plain name is taken by another schema), and `$ref`s
/// pointing at them there.
fn add_model(name: &str, schema: &Json, schemas: &mut Map<String, Json>) {
    fn rewrite(v: &mut Json, renamed: &Map<String, Json>) {
        match v {
            Json::Object(m) => {
                oas30_types(m);
                for (k, inner) in m.iter_mut() {
                    if k == "$ref"
                        && let Some(n) = inner.as_str().and_then(super::ref_name)
                    {
                        let target = renamed.get(&n).and_then(Json::as_str).unwrap_or(&n);
                        *inner = Json::String(format!("#/components/schemas/{target}"));
                    } else {
                        rewrite(inner, renamed);
                    }
                }
            }
            Json::Array(a) => a.iter_mut().for_each(|i| rewrite(i, renamed)),
            _ => {}
        }
    }
    let mut schema = schema.clone();
    let definitions = schema
        .get("definitions")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    // Where each definition goes.
    let mut renamed = Map::new();
    for (n, s) in &definitions {
        let free = n != name && schemas.get(n).is_none_or(|existing| existing == s);
        let target = if free {
            n.clone()
        } else {
            format!("{name}_{n}")
        };
        renamed.insert(n.clone(), Json::String(target));
    }
    for (n, s) in &definitions {
        let mut s = s.clone();
        if let Json::Object(m) = &mut s {
            for k in NOT_IN_OAS30 {
                m.remove(k);
            }
        }
        rewrite(&mut s, &renamed);
        let target = renamed[n].as_str().unwrap_or(n).to_string();
        schemas.insert(target, s);
    }
    if let Json::Object(m) = &mut schema {
        for k in NOT_IN_OAS30 {
            m.remove(k);
        }
    }
    rewrite(&mut schema, &renamed);
    schemas.insert(name.to_string(), schema);
}

/// A pattern as written: stored anchored as `\A(?:...)\z`.
fn unanchored(p: &regex::Regex) -> String {
    let p = p.as_str();
    p.strip_prefix(r"\A(?:")
        .and_then(|p| p.strip_suffix(r")\z"))
        .unwrap_or(p)
        .to_string()
}

/// One route as an operation: its key under the path, and the operation.
/// An authorizer as API Gateway exports it: a security scheme with
/// `x-amazon-apigateway-authorizer` (an HTTP API's `jwt` for a plain JWT authorizer).
fn security_scheme(
    config: &Config,
    a: &crate::config::authorizers::AuthorizerConfig,
    extensions: bool,
) -> Json {
    use crate::config::authorizers::{AuthorizerConfig, LambdaKind, TokenSource};
    let region = config.aws.region.as_deref().unwrap_or("us-east-1");
    let account = config.aws.account_id.as_deref().unwrap_or("000000000000");
    let header_scheme = |source: &TokenSource| match source {
        TokenSource::Header(n) => json!({"type": "apiKey", "name": n, "in": "header"}),
        TokenSource::Query(n) => json!({"type": "apiKey", "name": n, "in": "query"}),
        TokenSource::Cookie(n) => json!({"type": "apiKey", "name": n, "in": "cookie"}),
    };
    let uri = |function: &str| {
        let arn = if function.starts_with("arn:") {
            function.to_string()
        } else {
            format!("arn:aws:lambda:{region}:{account}:function:{function}")
        };
        format!("arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")
    };
    let (mut scheme, authtype, authorizer, source) = match a {
        AuthorizerConfig::Jwt(j) if j.cognito => (
            header_scheme(&j.source),
            "cognito_user_pools",
            json!({"type": "cognito_user_pools", "providerARNs": j.user_pools}),
            Some(&j.source),
        ),
        AuthorizerConfig::Jwt(j) => {
            let (issuer, jwks) = j.issuers.first().cloned().unwrap_or_default();
            let mut authorizer = json!({
                "type": "jwt",
                "jwtConfiguration": {"issuer": issuer, "audience": j.audiences},
            });
            if let Some(s) = j.source.apigw() {
                authorizer["identitySource"] = json!(s);
            }
            if let Some(url) = jwks {
                authorizer["x-ingest-gateway-jwks-url"] = json!(url);
            }
            let discovery = format!("{issuer}/.well-known/openid-configuration");
            (
                json!({"type": "openIdConnect", "openIdConnectUrl": discovery}),
                "jwt",
                authorizer,
                Some(&j.source),
            )
        }
        AuthorizerConfig::Lambda(l) => match &l.kind {
            LambdaKind::Token {
                source,
                validation_regex,
            } => {
                let mut authorizer = json!({
                    "type": "token",
                    "authorizerUri": uri(&l.function),
                    "authorizerResultTtlInSeconds": l.ttl.as_secs(),
                });
                if let Some(s) = source.apigw() {
                    authorizer["identitySource"] = json!(s);
                }
                if let Some(re) = validation_regex {
                    authorizer["identityValidationExpression"] = json!(re);
                }
                (header_scheme(source), "custom", authorizer, Some(source))
            }
            LambdaKind::Request { sources } => {
                let list: Vec<String> = sources.iter().map(|s| s.apigw()).collect();
                (
                    json!({"type": "apiKey", "name": "Unused", "in": "header"}),
                    "custom",
                    json!({
                        "type": "request",
                        "authorizerUri": uri(&l.function),
                        "authorizerResultTtlInSeconds": l.ttl.as_secs(),
                        "identitySource": list.join(", "),
                    }),
                    None,
                )
            }
        },
    };
    if extensions {
        scheme["x-amazon-apigateway-authtype"] = json!(authtype);
        scheme["x-amazon-apigateway-authorizer"] = authorizer;
        if let Some(TokenSource::Cookie(_)) = source {
            scheme["x-ingest-gateway"] = json!({"identity_source": source.map(TokenSource::spec)});
        }
    }
    scheme
}

/// API Gateway's integration type, method and URI for a route.
fn integration_kind(
    route: &RouteConfig,
    region: &str,
    account: &str,
) -> (&'static str, String, String) {
    let lambda_uri = |function: &str| {
        let arn = if function.starts_with("arn:") {
            function.to_string()
        } else {
            format!("arn:aws:lambda:{region}:{account}:function:{function}")
        };
        format!("arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")
    };
    let target = route.target.as_deref().unwrap_or_default();
    match route.action {
        Action::LambdaInvoke if route.integration.proxy => {
            ("aws_proxy", "POST".into(), lambda_uri(target))
        }
        Action::LambdaInvoke | Action::LambdaInvokeAsync => {
            ("aws", "POST".into(), lambda_uri(target))
        }
        Action::Mock => ("mock", "POST".into(), String::new()),
        Action::Http => {
            let backend = route.integration.http.as_ref();
            let method = backend
                .and_then(|b| b.method.as_ref())
                .map_or_else(|| "ANY".to_string(), |m| m.to_string());
            let uri = backend.map(|b| b.uri.clone()).unwrap_or_default();
            let kind = if route.integration.proxy {
                "http_proxy"
            } else {
                "http"
            };
            (kind, method, uri)
        }
        action => ("aws", "POST".into(), uri_for_action(action, region)),
    }
}

fn operation(
    config: &Config,
    route: &RouteConfig,
    extensions: bool,
    schemas: &mut Map<String, Json>,
) -> Result<(String, Json), String> {
    let key = route
        .method
        .as_ref()
        .map_or("x-amazon-apigateway-any-method".to_string(), |m| {
            m.as_str().to_ascii_lowercase()
        });
    let mut op = json!({
        "operationId": super::import::slug(&route.name()),
        "responses": {},
    });
    // Parameters: every path parameter, and the required query and header ones.
    let mut parameters = Vec::new();
    for name in route.path.param_names() {
        parameters.push(
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    }
    for name in &route.required_parameters.querystring {
        parameters.push(
            json!({"name": name, "in": "query", "required": true, "schema": {"type": "string"}}),
        );
    }
    for name in &route.required_parameters.header {
        parameters.push(
            json!({"name": name, "in": "header", "required": true, "schema": {"type": "string"}}),
        );
    }
    if !parameters.is_empty() {
        op["parameters"] = Json::Array(parameters);
    }
    if let Some(model) = &route.request_model {
        let name = model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("Model")
            .to_string();
        let schema: Json =
            serde_json::from_str(&read(model)?).map_err(|e| format!("{}: {e}", model.display()))?;
        add_model(&name, &schema, schemas);
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
        });
    }
    let mut requirement = Map::new();
    if route.api_key_required {
        requirement.insert("api_key".into(), json!([]));
    }
    if let Some(a) = &route.authorizer {
        requirement.insert(a.clone(), json!(route.scopes));
    }
    if !requirement.is_empty() {
        op["security"] = json!([requirement]);
    }
    // Responses: each integration response's status, with its headers.
    let mut responses = Map::new();
    for r in &route.responses {
        let entry = responses
            .entry(r.status.to_string())
            .or_insert_with(|| json!({"description": format!("{} response", r.status)}));
        for (name, _) in &r.headers {
            entry["headers"][name.as_str()] = json!({"schema": {"type": "string"}});
        }
    }
    if responses.is_empty() {
        responses.insert("200".into(), json!({"description": "200 response"}));
    }
    op["responses"] = Json::Object(responses);
    if !extensions {
        return Ok((key, op));
    }

    let validator = match (
        route.request_model.is_some(),
        !route.required_parameters.is_empty(),
    ) {
        (true, true) => Some("body-and-params"),
        (true, false) => Some("body"),
        (false, true) => Some("params"),
        (false, false) => None,
    };
    if let Some(v) = validator {
        op["x-amazon-apigateway-request-validator"] = json!(v);
    }
    let mut templates = Map::new();
    for (media, path) in &route.request_templates {
        templates.insert(media.clone(), Json::String(read(path)?));
    }
    let region = config.aws.region.as_deref().unwrap_or("us-east-1");
    let account = config.aws.account_id.as_deref().unwrap_or("000000000000");
    let (kind, method, uri) = integration_kind(route, region, account);
    let mut integration = json!({
        "type": kind,
        "httpMethod": method,
        "uri": uri,
        "passthroughBehavior": match route.passthrough {
            Passthrough::WhenNoMatch => "WHEN_NO_MATCH",
            Passthrough::WhenNoTemplates => "WHEN_NO_TEMPLATES",
            Passthrough::Never => "NEVER",
        },
        "timeoutInMillis": route.timeout.as_millis() as u64,
    });
    if uri.is_empty() {
        integration.as_object_mut().map(|m| m.remove("uri"));
    }
    if !templates.is_empty() {
        integration["requestTemplates"] = Json::Object(templates);
    }
    let mut parameters: Map<String, Json> = route
        .integration
        .request_parameters
        .iter()
        .map(|(t, s)| (t.apigw(), Json::String(s.apigw())))
        .collect();
    if route.action == Action::LambdaInvokeAsync {
        parameters.insert(
            "integration.request.header.X-Amz-Invocation-Type".into(),
            json!("'Event'"),
        );
    }
    if !parameters.is_empty() {
        integration["requestParameters"] = Json::Object(parameters);
    }
    let mut integration_responses = Map::new();
    for r in &route.responses {
        let mut resp = json!({"statusCode": r.status.to_string()});
        if let Some(e) = &r.error_pattern {
            resp["x-ingest-gateway-error-pattern"] = json!(unanchored(e));
            if let Some(p) = &r.pattern {
                resp["x-ingest-gateway-status-pattern"] = json!(unanchored(p));
            }
        }
        if !r.headers.is_empty() {
            resp["responseParameters"] = response_parameters(
                "method.response.header",
                r.headers.iter().map(|(n, s)| (n.as_str(), s.to_string())),
            );
        }
        if let Some(t) = r.template.as_ref().or(route.response_template.as_ref()) {
            resp["responseTemplates"] = json!({"application/json": read(t)?});
        }
        let pattern = match (&r.pattern, &r.error_pattern) {
            // API Gateway keys responses by their status pattern. One that also looks at the
            // error code gets a key of its own (which matches no status there); an import
            // reads both patterns beside it.
            (_, Some(e)) => format!("x-error-{}:{}", integration_responses.len(), unanchored(e)),
            (Some(p), None) => unanchored(p),
            (None, None) => "default".to_string(),
        };
        integration_responses.insert(pattern, resp);
    }
    if integration_responses.is_empty()
        && let Some(t) = &route.response_template
    {
        integration_responses.insert(
            "default".into(),
            json!({"statusCode": "200", "responseTemplates": {"application/json": read(t)?}}),
        );
    }
    if !integration_responses.is_empty() {
        integration["responses"] = Json::Object(integration_responses);
    }
    op["x-amazon-apigateway-integration"] = integration;

    // What API Gateway has no field for.
    let mut own = json!({});
    if let Some(t) = &route.target {
        own["target"] = json!(t);
    }
    if let Some(q) = &route.api_key_query {
        own["api_key_query"] = json!(q);
    }
    // A private CA for an HTTPS backend: its PEM, so that the export stands alone.
    if let Some(ca) = route
        .integration
        .http
        .as_ref()
        .and_then(|b| b.ca_file.as_ref())
    {
        own["backend_ca"] = json!(read(ca)?);
    }
    if route.rate_limit_headers {
        own["rate_limit_headers"] = json!(true);
    }
    if route.validation_details {
        own["validation_details"] = json!(true);
    }
    if let Some(t) = &route.throttle {
        own["throttle"] = json!({"rate": t.rate, "burst": t.burst});
    }
    if let Some(m) = route.spool {
        own["spool"] = json!(match m {
            Mode::Fallback => "fallback",
            Mode::Always => "always",
        });
    }
    match &route.batch {
        Some(b) => {
            own["batch"] = json!({
                "linger": format!("{}ms", b.linger.as_millis()),
                "max_records": b.max_records,
                "max_bytes": b.max_bytes,
                "queue": b.queue,
                "queue_bytes": b.queue_bytes,
                "aggregate": b.aggregate,
            });
        }
        None => own["batch"] = json!(false),
    }
    op["x-ingest-gateway"] = own;
    Ok((key, op))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    fn converted(v: Json) -> Json {
        let Json::Object(mut m) = v else {
            panic!("an object")
        };
        super::oas30_types(&mut m);
        Json::Object(m)
    }

    #[test]
    fn type_lists_become_what_openapi_3_0_allows() {
        assert_eq!(
            converted(json!({"type": ["object", "array"], "items": {}})),
            json!({"items": {}, "anyOf": [{"type": "object"}, {"type": "array"}]})
        );
        assert_eq!(
            converted(json!({"type": ["string", "null"]})),
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            converted(json!({"type": ["integer", "string"], "anyOf": [{"minimum": 1}]})),
            json!({"allOf": [{"anyOf": [{"minimum": 1}]}, {"anyOf": [{"type": "integer"}, {"type": "string"}]}]})
        );
        assert_eq!(
            converted(json!({"type": "object"})),
            json!({"type": "object"})
        );
    }
}
