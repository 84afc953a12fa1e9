//! A route's integration beyond its action: `integration = "proxy"` (API Gateway's
//! `aws_proxy` and `http_proxy`), a Lambda route's `invocation`, an HTTP route's `uri` and
//! `http_method`, and `request_parameters`, API Gateway's mappings of request values
//! (`method.request.path.id`, `'literal'`, `context.requestId`, `stageVariables.host`) into
//! the integration request (`integration.request.path.id`, `...querystring.q`,
//! `...header.X-Amz-Target`).

use indexmap::IndexMap;
use toml::Spanned;

use super::Validator;
use crate::upstream::Action;

/// Where a mapped value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamTarget {
    /// A `{name}` of the HTTP route's `uri`.
    Path(String),
    Query(String),
    /// Lower-case.
    Header(String),
}

/// Where a mapped value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSource {
    Path(String),
    Query(String),
    /// Lower-case.
    Header(String),
    Literal(String),
    /// A `$context` value by its dotted path (`requestId`, `identity.sourceIp`,
    /// `authorizer.principalId`).
    Context(String),
    StageVariable(String),
}

impl ParamTarget {
    /// `integration.request.{path|querystring|header}.NAME`.
    pub fn parse(s: &str) -> Option<ParamTarget> {
        let rest = s.trim().strip_prefix("integration.request.")?;
        let (kind, name) = rest.split_once('.')?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        match kind {
            "path" => Some(ParamTarget::Path(name.to_string())),
            "querystring" => Some(ParamTarget::Query(name.to_string())),
            "header" => http::HeaderName::try_from(name)
                .ok()
                .map(|h| ParamTarget::Header(h.as_str().to_string())),
            _ => None,
        }
    }

    /// API Gateway's spelling, for the export.
    pub fn apigw(&self) -> String {
        match self {
            ParamTarget::Path(n) => format!("integration.request.path.{n}"),
            ParamTarget::Query(n) => format!("integration.request.querystring.{n}"),
            ParamTarget::Header(n) => format!("integration.request.header.{n}"),
        }
    }
}

impl ParamSource {
    /// `method.request.{path|querystring|header}.NAME`, `'literal'`, `context.NAME`,
    /// `stageVariables.NAME`.
    pub fn parse(s: &str) -> Option<ParamSource> {
        let s = s.trim();
        if let Some(lit) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Some(ParamSource::Literal(lit.to_string()));
        }
        if let Some(rest) = s.strip_prefix("method.request.") {
            let (kind, name) = rest.split_once('.')?;
            if name.is_empty() {
                return None;
            }
            return match kind {
                "path" => Some(ParamSource::Path(name.to_string())),
                "querystring" => Some(ParamSource::Query(name.to_string())),
                "header" => Some(ParamSource::Header(name.to_ascii_lowercase())),
                _ => None,
            };
        }
        if let Some(name) = s.strip_prefix("context.").filter(|n| !n.is_empty()) {
            return Some(ParamSource::Context(name.to_string()));
        }
        if let Some(name) = s.strip_prefix("stageVariables.").filter(|n| !n.is_empty()) {
            return Some(ParamSource::StageVariable(name.to_string()));
        }
        None
    }

    /// API Gateway's spelling, for the export.
    pub fn apigw(&self) -> String {
        match self {
            ParamSource::Path(n) => format!("method.request.path.{n}"),
            ParamSource::Query(n) => format!("method.request.querystring.{n}"),
            ParamSource::Header(n) => format!("method.request.header.{n}"),
            ParamSource::Literal(v) => format!("'{v}'"),
            ParamSource::Context(n) => format!("context.{n}"),
            ParamSource::StageVariable(n) => format!("stageVariables.{n}"),
        }
    }
}

/// An HTTP route's backend: a fixed origin and a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBackend {
    /// `scheme://host[:port]`, fixed by configuration (stage variables already in).
    pub origin: String,
    /// The path, with `{name}` (and a final `{name+}`) filled by `request_parameters`.
    pub path: String,
    /// The URI's own query string, sent as written.
    pub query: Option<String>,
    /// The method the backend is called with (default: the request's).
    pub method: Option<http::Method>,
    /// Placeholders whose value keeps its `/` (written `{name+}`, or mapped from the
    /// route's greedy parameter, as API Gateway passes `{proxy+}` to `{proxy}`).
    pub greedy: Vec<String>,
    /// The URI as configured, for the OpenAPI export.
    pub uri: String,
    /// CA certificates (PEM) the backend's certificate may chain to, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl HttpBackend {
    /// Whether a placeholder's value keeps its `/`.
    pub fn is_greedy(&self, name: &str) -> bool {
        self.greedy.iter().any(|g| g == name)
    }
}

fn placeholders(path: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        match name.strip_suffix('+') {
            Some(n) => out.push((n.to_string(), true)),
            None => out.push((name.to_string(), false)),
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// A route's integration settings, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationSettings {
    /// The request is handed over whole and the answer becomes the response (Lambda and
    /// HTTP routes).
    pub proxy: bool,
    pub http: Option<HttpBackend>,
    pub request_parameters: Vec<(ParamTarget, ParamSource)>,
}

/// `${stageVariables.NAME}` replaced by the stage variable's value; the names not defined.
pub fn with_stage_variables(s: &str, vars: &IndexMap<String, String>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${stageVariables.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${stageVariables.".len()..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

/// The raw fields, as the route has them.
pub struct RawIntegration<'a> {
    pub integration: Option<&'a Spanned<String>>,
    pub invocation: Option<&'a Spanned<String>>,
    pub uri: Option<&'a Spanned<String>>,
    pub http_method: Option<&'a Spanned<String>>,
    /// The CA file, found, and where the file names it.
    pub backend_ca: Option<(std::path::PathBuf, std::ops::Range<usize>)>,
    pub request_parameters: &'a IndexMap<String, String>,
    pub has_templates: bool,
    pub has_responses: bool,
    pub has_target: bool,
}

impl Validator<'_> {
    /// Validates the integration fields; `action` becomes `LambdaInvokeAsync` for
    /// `invocation = "event"`. `path_params` are the route path's parameter names.
    pub(super) fn integration(
        &mut self,
        name: &str,
        action: &mut Action,
        raw: &RawIntegration<'_>,
        (path_params, greedy_param): (&[&str], Option<&str>),
        stage_variables: &IndexMap<String, String>,
        span: Option<std::ops::Range<usize>>,
    ) -> IntegrationSettings {
        let mut settings = IntegrationSettings::default();
        let what = format!("route {name}");
        match raw.integration.map(|i| i.get_ref().to_ascii_lowercase()) {
            None => {}
            Some(i) if i == "custom" => {}
            Some(i) if i == "proxy" => {
                if !action.can_proxy() {
                    self.error(
                        raw.integration.map(Spanned::span),
                        format!(
                            "{what}: integration = \"proxy\" is for lambda:Invoke and http routes"
                        ),
                    );
                }
                if raw.has_templates || raw.has_responses {
                    self.error(
                        raw.integration.map(Spanned::span),
                        format!("{what}: a proxy route hands the request over whole and answers with the backend's response: it has no request_templates or responses"),
                    );
                }
                settings.proxy = true;
            }
            Some(other) => self.error(
                raw.integration.map(Spanned::span),
                format!("{what}: integration {other:?}: expected \"proxy\" or \"custom\""),
            ),
        }
        if let Some(inv) = raw.invocation {
            match inv.get_ref().to_ascii_lowercase().as_str() {
                "request_response" | "requestresponse" => {}
                "event" if action.asynchronous().is_some() && !settings.proxy => {
                    *action = action.asynchronous().unwrap_or(*action);
                }
                "event" => self.error(
                    Some(inv.span()),
                    format!("{what}: invocation = \"event\" is for lambda:Invoke routes without integration = \"proxy\""),
                ),
                other => self.error(
                    Some(inv.span()),
                    format!("{what}: invocation {other:?}: expected \"request_response\" or \"event\""),
                ),
            }
        }
        if let Some(a) = action.aws()
            && crate::integrations::aws::service(a).is_none()
        {
            self.error(
                span.clone(),
                format!(
                    "{what}: the gateway does not know the protocol of AWS service {:?}; it knows {} (describe others in [aws.services.NAME])",
                    a.service(),
                    crate::integrations::aws::SERVICES
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if action.needs_target() && !raw.has_target {
            self.error(
                span.clone(),
                format!(
                    "{what}: a {} route names its function in target",
                    action.name()
                ),
            );
        }
        if !action.takes_target() && raw.has_target {
            self.error(
                span.clone(),
                format!("{what}: a {} route has no target", action.name()),
            );
        }
        for (to, from) in raw.request_parameters {
            match (ParamTarget::parse(to), ParamSource::parse(from)) {
                (Some(t), Some(s)) => {
                    if let ParamSource::Path(p) = &s
                        && !path_params.contains(&p.as_str())
                    {
                        self.error(
                            span.clone(),
                            format!("{what}: request_parameters: {from:?}: the route's path has no {{{p}}}"),
                        );
                    }
                    settings.request_parameters.push((t, s));
                }
                (None, _) => self.error(
                    span.clone(),
                    format!("{what}: request_parameters: {to:?} is not integration.request.path.NAME, integration.request.querystring.NAME or integration.request.header.NAME"),
                ),
                (_, None) => self.error(
                    span.clone(),
                    format!("{what}: request_parameters: {from:?} is not method.request.(path|querystring|header).NAME, 'literal', context.NAME or stageVariables.NAME"),
                ),
            }
        }
        if action.is_http() {
            settings.http = self.http_backend(
                &what,
                raw,
                &mut settings.request_parameters,
                (path_params, greedy_param),
                stage_variables,
                span,
            );
        } else {
            if let Some(u) = raw.uri {
                self.error(Some(u.span()), format!("{what}: uri is for http routes"));
            }
            if let Some((_, span)) = &raw.backend_ca {
                self.error(
                    Some(span.clone()),
                    format!("{what}: backend_ca is for http routes"),
                );
            }
            if action.aws().is_none()
                && settings
                    .request_parameters
                    .iter()
                    .any(|(t, _)| matches!(t, ParamTarget::Path(_)))
            {
                self.error(
                    span,
                    format!("{what}: integration.request.path.* fills an http route's uri, or an S3 object's key"),
                );
            }
        }
        // One mapping per destination: their order is not meaningful.
        settings.request_parameters.sort_by_key(|(t, _)| t.apigw());
        settings
    }

    fn http_backend(
        &mut self,
        what: &str,
        raw: &RawIntegration<'_>,
        mappings: &mut Vec<(ParamTarget, ParamSource)>,
        (path_params, greedy_param): (&[&str], Option<&str>),
        stage_variables: &IndexMap<String, String>,
        span: Option<std::ops::Range<usize>>,
    ) -> Option<HttpBackend> {
        let Some(uri) = raw.uri else {
            self.error(
                span,
                format!("{what}: an http route needs uri (\"https://host/path/{{proxy}}\")"),
            );
            return None;
        };
        let (text, missing) = with_stage_variables(uri.get_ref(), stage_variables);
        for m in missing {
            self.error(
                Some(uri.span()),
                format!("{what}: uri: no stage variable {m:?} in [stage_variables]"),
            );
        }
        let bad = |v: &mut Self, why: &str| {
            v.error(
                Some(uri.span()),
                format!("{what}: uri {:?}: {why}", uri.get_ref()),
            );
            None
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad(self, "not an http(s) URL");
        };
        if scheme != "http" && scheme != "https" {
            return bad(self, "not an http(s) URL");
        }
        let (authority, path_and_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // The host is configuration's alone: nothing a request holds can reach it.
        if authority.is_empty()
            || authority.contains(['{', '}', '@', '?', '#'])
            || http::uri::Authority::try_from(authority).is_err()
        {
            return bad(
                self,
                "its host must be fixed (no {placeholders} or credentials)",
            );
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_and_query.to_string(), None),
        };
        if query.as_deref().is_some_and(|q| q.contains(['{', '}'])) {
            return bad(
                self,
                "placeholders go in its path; map query values with integration.request.querystring.*",
            );
        }
        let holes = placeholders(&path);
        for (i, (name, greedy)) in holes.iter().enumerate() {
            if *greedy && i + 1 != holes.len() {
                return bad(self, "only its last placeholder may be greedy ({name+})");
            }
            let mapped = mappings
                .iter()
                .any(|(t, _)| matches!(t, ParamTarget::Path(n) if n == name));
            if !mapped {
                // A placeholder named as one of the route's own parameters takes it.
                if path_params.contains(&name.as_str()) {
                    mappings.push((
                        ParamTarget::Path(name.clone()),
                        ParamSource::Path(name.clone()),
                    ));
                } else {
                    return bad(
                        self,
                        &format!(
                            "{{{name}}} is neither mapped (integration.request.path.{name}) nor a parameter of the route's path"
                        ),
                    );
                }
            }
        }
        let literal = path.replace(['{', '}', '+'], "");
        if http::uri::PathAndQuery::try_from(literal.as_str()).is_err() {
            return bad(self, "its path is not a URI path");
        }
        let method = match raw.http_method {
            None => None,
            Some(m) if m.get_ref().eq_ignore_ascii_case("ANY") => None,
            Some(m) => {
                match http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        self.error(
                            Some(m.span()),
                            format!("{what}: http_method {:?} is not a method", m.get_ref()),
                        );
                        None
                    }
                }
            }
        };
        let greedy = holes
            .iter()
            .filter(|(name, plus)| {
                *plus
                    || mappings.iter().any(|(t, s)| {
                        matches!((t, s), (ParamTarget::Path(n), ParamSource::Path(from))
                            if n == name && Some(from.as_str()) == greedy_param)
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        if let Some((file, span)) = &raw.backend_ca {
            if scheme != "https" {
                self.error(
                    Some(span.clone()),
                    format!("{what}: backend_ca is for https backends"),
                );
            } else if let Ok(pem) = std::fs::read(file) {
                use rustls::pki_types::pem::PemObject as _;
                let certs: Result<Vec<_>, _> =
                    rustls::pki_types::CertificateDer::pem_slice_iter(&pem).collect();
                if !certs.is_ok_and(|c| !c.is_empty()) {
                    self.error(
                        Some(span.clone()),
                        format!("{what}: backend_ca holds no PEM certificate"),
                    );
                }
            }
        }
        Some(HttpBackend {
            ca_file: raw.backend_ca.as_ref().map(|(f, _)| f.clone()),
            greedy,
            origin: format!("{scheme}://{authority}"),
            path,
            query,
            method,
            uri: uri.get_ref().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_read_as_api_gateway_writes_them() {
        assert_eq!(
            ParamTarget::parse("integration.request.header.X-Amz-Target"),
            Some(ParamTarget::Header("x-amz-target".into()))
        );
        assert_eq!(
            ParamTarget::parse("integration.request.path.proxy"),
            Some(ParamTarget::Path("proxy".into()))
        );
        assert_eq!(ParamTarget::parse("integration.response.header.x"), None);
        assert_eq!(
            ParamSource::parse("'DynamoDB_20120810.PutItem'"),
            Some(ParamSource::Literal("DynamoDB_20120810.PutItem".into()))
        );
        assert_eq!(
            ParamSource::parse("method.request.header.X-Client"),
            Some(ParamSource::Header("x-client".into()))
        );
        assert_eq!(
            ParamSource::parse("context.identity.sourceIp"),
            Some(ParamSource::Context("identity.sourceIp".into()))
        );
        assert_eq!(ParamSource::parse("method.request.body.x"), None);
        for s in [
            ParamSource::Path("p".into()),
            ParamSource::Query("q".into()),
            ParamSource::Header("h".into()),
            ParamSource::Literal("v".into()),
            ParamSource::Context("requestId".into()),
            ParamSource::StageVariable("s".into()),
        ] {
            assert_eq!(ParamSource::parse(&s.apigw()), Some(s));
        }
    }

    #[test]
    fn stage_variables_fill_uris_and_placeholders_are_found() {
        let vars = IndexMap::from([("host".to_string(), "collector.internal".to_string())]);
        assert_eq!(
            with_stage_variables(
                "https://${stageVariables.host}/in/${stageVariables.nope}",
                &vars
            ),
            (
                "https://collector.internal/in/".to_string(),
                vec!["nope".to_string()]
            )
        );
        assert_eq!(
            placeholders("/a/{id}/b/{proxy+}"),
            vec![("id".to_string(), false), ("proxy".to_string(), true)]
        );
    }
}
