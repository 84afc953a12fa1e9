//! `[authorizers.NAME]`: who may call the routes that name them (`authorizer = "NAME"`):
//! JWT (any OIDC issuer), Cognito user pools, and Lambda TOKEN and REQUEST authorizers.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawAuthorizer {
    /// `jwt`, `cognito_user_pools`, `lambda_token` or `lambda_request`.
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// `jwt`: the `iss` tokens must carry, exactly.
    pub issuer: Option<String>,
    /// `jwt`: accepted audiences, checked against `aud` (id tokens) or `client_id` (access
    /// tokens); empty: any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// `jwt`: where the signing keys are (default: `jwks_uri` of
    /// `{issuer}/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
    /// Where the token is: `header:NAME` (default `header:Authorization`), `query:NAME` or
    /// `cookie:NAME`; a `Bearer ` prefix is optional, as on API Gateway.
    pub identity_source: Option<String>,
    /// `cognito_user_pools`: the pools' ARNs (`arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID`).
    #[serde(default)]
    pub user_pools: Vec<String>,
    /// Lambda: the function's name or ARN (or API Gateway's `authorizerUri`).
    pub function: Option<String>,
    /// `lambda_token`: the token must match this (the whole token), or the request is
    /// refused with 401 without invoking the function.
    pub validation_regex: Option<String>,
    /// Lambda: how long a decision is reused for the same identity (default `300s`; `0s`:
    /// every request invokes the function).
    pub ttl: Option<Spanned<String>>,
    /// `lambda_request`: the values a decision is cached by, each required: `header:NAME`,
    /// `query:NAME`, `path:NAME`, `stage:NAME`, `context:NAME` (or API Gateway's
    /// `method.request.header.NAME` forms).
    #[serde(default)]
    pub identity_sources: Vec<String>,
}

/// A validated authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizerConfig {
    Jwt(JwtAuthorizer),
    Lambda(LambdaAuthorizer),
}

impl AuthorizerConfig {
    pub fn name(&self) -> &str {
        match self {
            AuthorizerConfig::Jwt(j) => &j.name,
            AuthorizerConfig::Lambda(l) => &l.name,
        }
    }
}

/// A validated Lambda authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaAuthorizer {
    pub name: String,
    /// The function's name or ARN, as `Invoke` takes it.
    pub function: String,
    pub kind: LambdaKind,
    /// Decisions are reused this long; zero: never.
    pub ttl: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LambdaKind {
    /// The token (the whole header value, `Bearer ` and all, as API Gateway passes it), and
    /// the pattern it must match.
    Token {
        source: TokenSource,
        validation_regex: Option<String>,
    },
    /// The values the decision is cached by; a request missing one is refused with 401.
    Request { sources: Vec<IdentitySource> },
}

/// One of a REQUEST authorizer's identity sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A header, lower-case.
    Header(String),
    Query(String),
    Path(String),
    Stage(String),
    /// A `$context` value: `sourceIp` (or `identity.sourceIp`), `httpMethod`, `resourcePath`,
    /// `path`, `stage`, `apiId`, `requestId`, `identity.userAgent`.
    Context(String),
}

/// The `$context` values an identity source may name.
pub const CONTEXT_SOURCES: [&str; 8] = [
    "sourceIp",
    "identity.sourceIp",
    "identity.userAgent",
    "httpMethod",
    "resourcePath",
    "path",
    "stage",
    "apiId",
];

impl IdentitySource {
    /// `header:NAME`, `query:NAME`, `path:NAME`, `stage:NAME`, `context:NAME`, or API
    /// Gateway's `method.request.header.NAME`, `method.request.querystring.NAME`,
    /// `method.request.path.NAME`, `stageVariables.NAME`, `context.NAME`.
    pub fn parse(s: &str) -> Option<IdentitySource> {
        let s = s.trim();
        let (kind, name) = if let Some(rest) = s.strip_prefix("method.request.") {
            rest.split_once('.')?
        } else if let Some(rest) = s.strip_prefix("stageVariables.") {
            ("stage", rest)
        } else if let Some(rest) = s.strip_prefix("context.") {
            ("context", rest)
        } else {
            s.split_once(':')?
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        match kind {
            "header" => Some(IdentitySource::Header(name.to_ascii_lowercase())),
            "query" | "querystring" => Some(IdentitySource::Query(name.to_string())),
            "path" => Some(IdentitySource::Path(name.to_string())),
            "stage" => Some(IdentitySource::Stage(name.to_string())),
            "context" if CONTEXT_SOURCES.contains(&name) => {
                Some(IdentitySource::Context(name.to_string()))
            }
            _ => None,
        }
    }

    /// API Gateway's spelling (`method.request.header.NAME`), for the OpenAPI export.
    pub fn apigw(&self) -> String {
        match self {
            IdentitySource::Header(n) => format!("method.request.header.{n}"),
            IdentitySource::Query(n) => format!("method.request.querystring.{n}"),
            IdentitySource::Path(n) => format!("method.request.path.{n}"),
            IdentitySource::Stage(n) => format!("stageVariables.{n}"),
            IdentitySource::Context(n) => format!("context.{n}"),
        }
    }
}

/// The function a Lambda authorizer names: a name, an ARN, or API Gateway's
/// `arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations`.
pub fn lambda_function(s: &str) -> Option<String> {
    let s = s.trim();
    let s = match s.split_once(":lambda:path/2015-03-31/functions/") {
        Some((_, rest)) => rest.strip_suffix("/invocations")?,
        None => s,
    };
    let ok = !s.is_empty()
        && s.len() <= 170
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.$".contains(&b));
    ok.then(|| s.to_string())
}

/// Where a request carries its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A header, lower-case.
    Header(String),
    Query(String),
    Cookie(String),
}

/// A validated JWT authorizer (a Cognito user pool is one, with its pool's issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthorizer {
    pub name: String,
    /// `(issuer, where its keys are)`: one for `jwt`, one per pool for Cognito. `None`:
    /// discovered from the issuer's OpenID configuration.
    pub issuers: Vec<(String, Option<String>)>,
    pub audiences: Vec<String>,
    pub source: TokenSource,
    /// Cognito: `token_use` must be `id` or `access`.
    pub cognito: bool,
    /// Cognito: the pools' ARNs, as configured.
    pub user_pools: Vec<String>,
}

impl TokenSource {
    /// As the configuration writes it: `header:NAME`, `query:NAME`, `cookie:NAME`.
    pub fn spec(&self) -> String {
        match self {
            TokenSource::Header(n) => format!("header:{n}"),
            TokenSource::Query(n) => format!("query:{n}"),
            TokenSource::Cookie(n) => format!("cookie:{n}"),
        }
    }

    /// API Gateway's `identitySource`, where it has one (not for cookies).
    pub fn apigw(&self) -> Option<String> {
        match self {
            TokenSource::Header(n) => Some(format!("method.request.header.{n}")),
            TokenSource::Query(n) => Some(format!("method.request.querystring.{n}")),
            TokenSource::Cookie(_) => None,
        }
    }

    /// `header:NAME`, `query:NAME`, `cookie:NAME`, or API Gateway's
    /// `method.request.header.NAME` / `$request.header.NAME` forms.
    pub fn parse(s: &str) -> Option<TokenSource> {
        let s = s.trim();
        let s = s
            .strip_prefix("method.request.")
            .or_else(|| s.strip_prefix("$request."))
            .map(|rest| rest.replacen('.', ":", 1))
            .unwrap_or_else(|| s.to_string());
        let (kind, name) = s.split_once(':')?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=')
        {
            return None;
        }
        match kind {
            "header" => Some(TokenSource::Header(name.to_ascii_lowercase())),
            "query" | "querystring" => Some(TokenSource::Query(name.to_string())),
            "cookie" => Some(TokenSource::Cookie(name.to_string())),
            _ => None,
        }
    }
}

/// A pool ARN's region and id.
fn user_pool(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:aws:cognito-idp:")?;
    let mut parts = rest.splitn(3, ':');
    let region = parts.next()?.to_string();
    let _account = parts.next()?;
    let id = parts.next()?.strip_prefix("userpool/")?.to_string();
    let ok = !region.is_empty()
        && id.starts_with(&format!("{region}_"))
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some((region, id))
}

impl Validator<'_> {
    pub(super) fn authorizers(
        &mut self,
        raw: &IndexMap<String, Spanned<RawAuthorizer>>,
        endpoint: Option<&str>,
    ) -> Vec<AuthorizerConfig> {
        let mut out = Vec::new();
        for (name, spanned) in raw {
            let span = Some(spanned.span());
            let a = spanned.get_ref();
            let what = format!("authorizer {name}");
            let source = match &a.identity_source {
                None => TokenSource::Header("authorization".into()),
                Some(s) => TokenSource::parse(s).unwrap_or_else(|| {
                    self.error(
                        span.clone(),
                        format!("{what}: identity_source {s:?}: use header:NAME, query:NAME or cookie:NAME"),
                    );
                    TokenSource::Header("authorization".into())
                }),
            };
            let kind = a.kind.as_ref().map(|k| k.get_ref().as_str());
            match kind {
                Some("jwt") => {
                    let issuer = a.issuer.clone().unwrap_or_else(|| {
                        self.error(
                            span.clone(),
                            format!("{what}: a jwt authorizer needs issuer"),
                        );
                        String::new()
                    });
                    for url in [Some(&issuer), a.jwks_url.as_ref()].into_iter().flatten() {
                        if !(url.starts_with("https://") || url.starts_with("http://")) {
                            self.error(
                                span.clone(),
                                format!("{what}: {url:?} is not an http(s) URL"),
                            );
                        }
                    }
                    out.push(AuthorizerConfig::Jwt(JwtAuthorizer {
                        name: name.clone(),
                        issuers: vec![(
                            issuer.trim_end_matches('/').to_string(),
                            a.jwks_url.clone(),
                        )],
                        audiences: a.audiences.clone(),
                        source,
                        cognito: false,
                        user_pools: Vec::new(),
                    }));
                }
                Some("cognito_user_pools") => {
                    if a.user_pools.is_empty() {
                        self.error(
                            span.clone(),
                            format!("{what}: user_pools must name at least one pool ARN"),
                        );
                    }
                    let mut issuers = Vec::new();
                    for arn in &a.user_pools {
                        let Some((region, id)) = user_pool(arn) else {
                            self.error(
                                span.clone(),
                                format!("{what}: {arn:?} is not a user pool ARN (arn:aws:cognito-idp:REGION:ACCOUNT:userpool/REGION_ID)"),
                            );
                            continue;
                        };
                        // The emulator (an endpoint override) serves the pool's keys at
                        // {endpoint}/{pool}/.well-known/jwks.json; tokens still name AWS.
                        let keys_at = match endpoint {
                            Some(e) => {
                                format!("{}/{id}/.well-known/jwks.json", e.trim_end_matches('/'))
                            }
                            None => format!(
                                "https://cognito-idp.{region}.amazonaws.com/{id}/.well-known/jwks.json"
                            ),
                        };
                        issuers.push((
                            format!("https://cognito-idp.{region}.amazonaws.com/{id}"),
                            Some(keys_at),
                        ));
                    }
                    out.push(AuthorizerConfig::Jwt(JwtAuthorizer {
                        name: name.clone(),
                        issuers,
                        audiences: a.audiences.clone(),
                        source,
                        cognito: true,
                        user_pools: a.user_pools.clone(),
                    }));
                }
                Some(kind @ ("lambda_token" | "lambda_request")) => {
                    let function = match a.function.as_deref().map(lambda_function) {
                        Some(Some(f)) => f,
                        Some(None) => {
                            self.error(span.clone(), format!("{what}: function {:?} is not a Lambda function name or ARN", a.function.as_deref().unwrap_or_default()));
                            String::new()
                        }
                        None => {
                            self.error(span.clone(), format!("{what}: a Lambda authorizer needs function (a name or ARN)"));
                            String::new()
                        }
                    };
                    let ttl = match &a.ttl {
                        None => std::time::Duration::from_secs(300),
                        Some(t) if t.get_ref().trim() == "0" => std::time::Duration::ZERO,
                        Some(t) => super::parse_duration(t.get_ref()).unwrap_or_else(|| {
                            self.error(Some(t.span()), format!("{what}: ttl: expected a duration such as \"300s\" or \"0s\", got {:?}", t.get_ref()));
                            std::time::Duration::ZERO
                        }),
                    };
                    // API Gateway's limit for a cached authorizer result.
                    if ttl > std::time::Duration::from_secs(3600) {
                        self.error(span.clone(), format!("{what}: ttl is at most 3600s, as on API Gateway"));
                    }
                    let lambda_kind = if kind == "lambda_token" {
                        if !a.identity_sources.is_empty() {
                            self.error(span.clone(), format!("{what}: a TOKEN authorizer has one identity_source, not identity_sources"));
                        }
                        if let Some(re) = &a.validation_regex
                            && let Err(e) = regex::Regex::new(re)
                        {
                            self.error(span.clone(), format!("{what}: validation_regex: {e}"));
                        }
                        LambdaKind::Token {
                            source,
                            validation_regex: a.validation_regex.clone(),
                        }
                    } else {
                        if a.identity_source.is_some() || a.validation_regex.is_some() {
                            self.error(span.clone(), format!("{what}: a REQUEST authorizer takes identity_sources (a list) and no validation_regex"));
                        }
                        let mut sources = Vec::new();
                        for s in &a.identity_sources {
                            match IdentitySource::parse(s) {
                                Some(src) => sources.push(src),
                                None => self.error(span.clone(), format!("{what}: identity source {s:?}: use header:NAME, query:NAME, path:NAME, stage:NAME or context:NAME (context: one of {})", CONTEXT_SOURCES.join(", "))),
                            }
                        }
                        if sources.is_empty() && !ttl.is_zero() {
                            self.error(span.clone(), format!("{what}: a cached REQUEST authorizer needs identity_sources (its cache key); set ttl = \"0s\" to invoke on every request"));
                        }
                        LambdaKind::Request { sources }
                    };
                    out.push(AuthorizerConfig::Lambda(LambdaAuthorizer {
                        name: name.clone(),
                        function,
                        kind: lambda_kind,
                        ttl,
                    }));
                }
                Some(other) => self.error(
                    span.clone(),
                    format!("{what}: unknown type {other:?}; expected jwt, cognito_user_pools, lambda_token or lambda_request"),
                ),
                None => self.error(
                    span.clone(),
                    format!("{what}: type is required (jwt, cognito_user_pools, lambda_token or lambda_request)"),
                ),
            }
        }
        out
    }
}

impl super::Validator<'_> {
    /// What routes ask of authorizers and plans by identity, checked against what exists.
    pub(super) fn route_authorizers(
        &mut self,
        raw: &super::raw::RawConfig,
        routes: &[super::RouteConfig],
        authorizers: &[AuthorizerConfig],
        usage_plans: &[crate::auth::plans::UsagePlan],
    ) {
        for route in routes {
            let span_of = |name: &str| {
                raw.routes
                    .iter()
                    .filter_map(|r| r.get_ref().authorizer.as_ref())
                    .find(|a| a.get_ref() == name)
                    .map(Spanned::span)
            };
            let found = route
                .authorizer
                .as_ref()
                .and_then(|n| authorizers.iter().find(|a| a.name() == n));
            let lambda = matches!(found, Some(AuthorizerConfig::Lambda(_)));
            if route.api_key_from_authorizer && !(lambda && route.api_key_required) {
                self.error(
                    route.authorizer.as_deref().and_then(span_of),
                    format!("route {}: api_key_source = \"authorizer\" needs a Lambda authorizer and api_key_required = true", route.name()),
                );
            }
            if lambda && !route.scopes.is_empty() {
                self.error(
                    route.authorizer.as_deref().and_then(span_of),
                    format!("route {}: scopes apply to JWT and Cognito authorizers; a Lambda authorizer's policy decides", route.name()),
                );
            }
            let Some(name) = &route.authorizer else {
                continue;
            };
            if !raw.authorizers.contains_key(name) {
                let span = raw
                    .routes
                    .iter()
                    .filter_map(|r| r.get_ref().authorizer.as_ref())
                    .find(|a| a.get_ref() == name)
                    .map(Spanned::span);
                self.error(
                    span,
                    format!(
                        "route {}: no authorizer {name:?} in [authorizers]",
                        route.name()
                    ),
                );
            }
        }
        for route in routes {
            let name = route.name();
            let covering: Vec<&crate::auth::plans::UsagePlan> = usage_plans
                .iter()
                .filter(|p| p.identity.is_some() && super::plan_covers(p, route))
                .collect();
            if covering.len() > 1 {
                self.error(
                    None,
                    format!(
                        "route {name}: usage plans {} all count its principals; give each plan by identity its own routes",
                        covering.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            for p in covering {
                if route.authorizer.is_none() {
                    self.error(
                        raw.usage_plans.get(&p.name).map(Spanned::span),
                        format!("usage plan {}: route {name} has no authorizer, so no principal to count", p.name),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_read_as_api_gateway_writes_them() {
        assert_eq!(
            TokenSource::parse("header:Authorization"),
            Some(TokenSource::Header("authorization".into()))
        );
        assert_eq!(
            TokenSource::parse("method.request.header.X-Token"),
            Some(TokenSource::Header("x-token".into()))
        );
        assert_eq!(
            TokenSource::parse("$request.querystring.token"),
            Some(TokenSource::Query("token".into()))
        );
        assert_eq!(
            TokenSource::parse("cookie:session"),
            Some(TokenSource::Cookie("session".into()))
        );
        assert_eq!(TokenSource::parse("body:token"), None);
        assert_eq!(TokenSource::parse("header:"), None);
    }

    #[test]
    fn identity_sources_read_as_api_gateway_writes_them() {
        assert_eq!(
            IdentitySource::parse("method.request.header.X-Webhook-Secret"),
            Some(IdentitySource::Header("x-webhook-secret".into()))
        );
        assert_eq!(
            IdentitySource::parse("path:source"),
            Some(IdentitySource::Path("source".into()))
        );
        assert_eq!(
            IdentitySource::parse("stageVariables.tenant"),
            Some(IdentitySource::Stage("tenant".into()))
        );
        assert_eq!(
            IdentitySource::parse("context.identity.sourceIp"),
            Some(IdentitySource::Context("identity.sourceIp".into()))
        );
        assert_eq!(IdentitySource::parse("context:secretThing"), None);
        assert_eq!(IdentitySource::parse("body:x"), None);
        for s in [
            IdentitySource::Header("a".into()),
            IdentitySource::Query("q".into()),
            IdentitySource::Path("p".into()),
            IdentitySource::Stage("s".into()),
            IdentitySource::Context("sourceIp".into()),
        ] {
            assert_eq!(IdentitySource::parse(&s.apigw()), Some(s));
        }
    }

    #[test]
    fn lambda_functions_by_name_arn_or_authorizer_uri() {
        assert_eq!(
            lambda_function("partner-auth").as_deref(),
            Some("partner-auth")
        );
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:partner-auth";
        assert_eq!(lambda_function(arn).as_deref(), Some(arn));
        assert_eq!(
            lambda_function(&format!(
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"
            ))
            .as_deref(),
            Some(arn)
        );
        assert_eq!(lambda_function("a b"), None);
        assert_eq!(lambda_function(""), None);
    }

    #[test]
    fn pool_arns_give_region_and_id() {
        assert_eq!(
            user_pool("arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_AbC123"),
            Some(("us-east-1".into(), "us-east-1_AbC123".into()))
        );
        assert_eq!(
            user_pool("arn:aws:cognito-idp:us-east-1:123456789012:userpool/eu-west-1_x"),
            None
        );
        assert_eq!(user_pool("us-east-1_AbC123"), None);
    }
}
