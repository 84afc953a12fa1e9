//! `[authorizers.NAME]`: who may call the routes that name them (`authorizer = "NAME"`).
//! JWT (any OIDC issuer) and Cognito user pools today; Lambda TOKEN and REQUEST authorizers
//! are refused by name until they are built.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawAuthorizer {
    /// `jwt` or `cognito_user_pools` (`lambda_token` and `lambda_request` are not built yet).
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
    /// Lambda authorizers' fields, read so that the error names the type, not a field.
    pub function: Option<String>,
    pub validation_regex: Option<String>,
    pub ttl: Option<String>,
    #[serde(default)]
    pub identity_sources: Vec<String>,
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
}

impl TokenSource {
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
    ) -> Vec<JwtAuthorizer> {
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
                    out.push(JwtAuthorizer {
                        name: name.clone(),
                        issuers: vec![(
                            issuer.trim_end_matches('/').to_string(),
                            a.jwks_url.clone(),
                        )],
                        audiences: a.audiences.clone(),
                        source,
                        cognito: false,
                    });
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
                    out.push(JwtAuthorizer {
                        name: name.clone(),
                        issuers,
                        audiences: a.audiences.clone(),
                        source,
                        cognito: true,
                    });
                }
                Some(other @ ("lambda_token" | "lambda_request")) => {
                    self.error(
                        span.clone(),
                        format!("{what}: type {other:?} (Lambda authorizers) is not supported by this version; jwt and cognito_user_pools are"),
                    );
                }
                Some(other) => self.error(
                    span.clone(),
                    format!("{what}: unknown type {other:?}; expected jwt or cognito_user_pools"),
                ),
                None => self.error(
                    span.clone(),
                    format!("{what}: type is required (jwt or cognito_user_pools)"),
                ),
            }
        }
        out
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
