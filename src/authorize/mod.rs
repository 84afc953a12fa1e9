//! The authorize stage: who is calling, and may they. A route's authorizers run in order and
//! each adds to the request's [`Identity`]; a refusal ends the request with API Gateway's
//! status (401, 403, 429). The route's token authorizer ([`jwt`]: JWTs and Cognito user
//! pools) runs first, then the API key with its usage plan ([`api_key`]); Lambda
//! authorizers will be a further file here behind the same stage function.
//!
//! The key store, plans and limiters themselves live in `auth`; this stage only reads what
//! a request presents and turns the verdict into the request's identity or its error.

pub mod api_key;
pub mod jwt;

use crate::auth::sync::KeySync;
use crate::auth::{Authorizer, QuotaStatus};
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::request::Request;
pub use api_key::admit_to_upstream;

/// Who a request is, as far as the route's authorizers established it; templates read it
/// through `$context`.
#[derive(Debug, Default, Clone)]
pub struct Identity {
    /// The API key the request presented, when the route admitted it by key.
    pub api_key: Option<String>,
    /// That key's id.
    pub api_key_id: Option<String>,
    /// The key's quota position after this request, when its plan has a quota.
    pub quota: Option<QuotaStatus>,
    /// The authorizer's principal (a JWT's `sub`).
    pub principal_id: Option<String>,
    /// A verified token's claims.
    pub claims: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl Identity {
    /// `$context.authorizer`: `claims` (every value a string, as REST APIs give them) and
    /// `principalId`, when an authorizer admitted the request.
    pub fn authorizer_context(&self) -> Option<serde_json::Value> {
        let claims = self.claims.as_ref()?;
        Some(serde_json::json!({
            "claims": jwt::claims_as_strings(claims),
            "principalId": self.principal_id,
        }))
    }
}

/// Runs the route's authorizers; `route` is the route's index in `auth`, `path_params` what
/// its path matched.
/// `keys` is the store behind `auth`, checked for a key the snapshot does not know.
#[allow(clippy::too_many_arguments)]
pub async fn authorize(
    auth: &Authorizer,
    keys: Option<&KeySync>,
    authorizers: &[jwt::JwtVerifier],
    route: usize,
    config: &RouteConfig,
    req: &Request,
    path_params: &[(String, String)],
) -> Result<Identity, GatewayError> {
    let mut identity = Identity::default();
    // As on API Gateway: the authorizer first, then the key and its plan.
    if let Some(name) = &config.authorizer {
        let verifier = authorizers
            .iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                GatewayError::new(
                    crate::error::ErrorKind::Template,
                    format!("authorizer {name} is not configured"),
                )
            })?;
        token(verifier, config, req, &mut identity).await?;
    }
    api_key::authorize(auth, keys, route, config, req, path_params, &mut identity).await?;
    Ok(identity)
}

/// A JWT authorizer: 401 without a valid token, 403 without one of the route's scopes.
async fn token(
    verifier: &jwt::JwtVerifier,
    config: &RouteConfig,
    req: &Request,
    identity: &mut Identity,
) -> Result<(), GatewayError> {
    use crate::error::ErrorKind;
    let decided = |result: &'static str| {
        metrics::counter!(crate::telemetry::names::AUTHORIZER_DECISIONS, "authorizer" => verifier.name().to_string(), "result" => result).increment(1);
    };
    let Some(token) = verifier.token(req) else {
        decided("no_token");
        return Err(GatewayError::new(
            ErrorKind::Unauthorized,
            format!("authorizer {}: no token", verifier.name()),
        ));
    };
    let verified = verifier.verify(&token).await.map_err(|why| {
        decided("invalid");
        GatewayError::new(
            ErrorKind::Unauthorized,
            format!("authorizer {}: {}", verifier.name(), why.0),
        )
    })?;
    if !config.scopes.is_empty() {
        let granted = jwt::scopes(&verified.claims);
        if !config.scopes.iter().any(|s| granted.contains(s)) {
            decided("scope_denied");
            return Err(GatewayError::new(
                ErrorKind::ScopeDenied,
                format!(
                    "authorizer {}: the token grants none of {:?}",
                    verifier.name(),
                    config.scopes
                ),
            ));
        }
    }
    decided("allowed");
    identity.principal_id = verified
        .claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    identity.claims = Some(verified.claims);
    Ok(())
}
