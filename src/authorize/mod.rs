//! The authorize stage: who is calling, and may they. A route's authorizers run in order and
//! each adds to the request's [`Identity`]; a refusal ends the request with API Gateway's
//! status (401, 403, 429, 500). The route's authorizer runs first ([`jwt`]: JWTs and Cognito
//! user pools; [`lambda`]: Lambda TOKEN and REQUEST authorizers), then the API key with its
//! usage plan ([`api_key`]), then the route's plan by identity, which counts the principal
//! the authorizer established.
//!
//! The key store, plans and limiters themselves live in `auth`; this stage only reads what
//! a request presents and turns the verdict into the request's identity or its error.

pub mod api_key;
pub mod jwt;
pub mod lambda;

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::auth::plans::PlanIdentity;
use crate::auth::sync::KeySync;
use crate::auth::{Authorizer, QuotaStatus};
use crate::config::RouteConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::request::Request;
pub use api_key::admit_to_upstream;

/// A configured authorizer, ready to decide.
#[derive(Debug)]
pub enum Verifier {
    Jwt(jwt::JwtVerifier),
    Lambda(lambda::LambdaVerifier),
}

impl Verifier {
    pub fn name(&self) -> &str {
        match self {
            Verifier::Jwt(v) => v.name(),
            Verifier::Lambda(v) => v.name(),
        }
    }
}

/// Who a request is, as far as the route's authorizers established it; templates read it
/// through `$context`.
#[derive(Debug, Default, Clone)]
pub struct Identity {
    /// The API key the request presented, when the route admitted it by key.
    pub api_key: Option<String>,
    /// That key's id.
    pub api_key_id: Option<String>,
    /// The quota position after this request (the key's, else the principal's plan's).
    pub quota: Option<QuotaStatus>,
    /// The authorizer's principal (a JWT's `sub`, a Lambda authorizer's `principalId`).
    pub principal_id: Option<String>,
    /// A verified token's claims.
    pub claims: Option<Arc<Map<String, Json>>>,
    /// A Lambda authorizer's decision (its `context` and `usageIdentifierKey`).
    pub decision: Option<Arc<lambda::Decision>>,
}

impl Identity {
    /// `$context.authorizer`: for a JWT, `claims` (every value a string, as REST APIs give
    /// them) and `principalId`; for a Lambda authorizer, `principalId` and each `context`
    /// value.
    pub fn authorizer_context(&self) -> Option<Json> {
        if let Some(d) = &self.decision {
            let mut m = d.context.clone();
            m.insert("principalId".into(), Json::String(d.principal_id.clone()));
            return Some(Json::Object(m));
        }
        let claims = self.claims.as_ref()?;
        Some(serde_json::json!({
            "claims": jwt::claims_as_strings(claims),
            "principalId": self.principal_id,
        }))
    }

    /// What a plan by identity counts this request under.
    fn plan_identity(&self, by: &PlanIdentity) -> Option<String> {
        let value = match by {
            PlanIdentity::Principal => return self.principal_id.clone(),
            PlanIdentity::Claim(name) => match (&self.claims, &self.decision) {
                (Some(claims), _) => claims.get(name)?,
                (None, Some(d)) => d.context.get(name)?,
                (None, None) => return None,
            },
        };
        Some(match value {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Runs the route's authorizers; `route` is the route's index in `auth`, `path_params` what
/// its path matched.
/// `keys` is the store behind `auth`, checked for a key the snapshot does not know.
#[allow(clippy::too_many_arguments)]
pub async fn authorize(
    auth: &Authorizer,
    keys: Option<&KeySync>,
    authorizers: &[Verifier],
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
                    ErrorKind::Template,
                    format!("authorizer {name} is not configured"),
                )
            })?;
        match verifier {
            Verifier::Jwt(v) => token(v, config, req, &mut identity).await?,
            Verifier::Lambda(v) => custom(v, config, req, path_params, &mut identity).await?,
        }
    }
    api_key::authorize(auth, keys, route, config, req, path_params, &mut identity).await?;
    if let Some(by) = auth.identity_plan(route) {
        let principal = identity.plan_identity(by);
        let now = req.received_epoch_ms;
        let first = auth.authorize_principal(route, principal.as_deref(), now);
        let quota = api_key::with_leases(
            auth,
            keys,
            || auth.authorize_principal(route, principal.as_deref(), now),
            first,
        )
        .await
        .map_err(api_key::denied)?;
        identity.quota = identity.quota.or(quota);
    }
    Ok(identity)
}

fn decided(authorizer: &str, result: &'static str) {
    metrics::counter!(crate::telemetry::names::AUTHORIZER_DECISIONS, "authorizer" => authorizer.to_string(), "result" => result).increment(1);
}

/// API Gateway's words for a policy that denies.
pub const EXPLICIT_DENY: &str =
    "User is not authorized to access this resource with an explicit deny";
pub const NOT_ALLOWED: &str = "User is not authorized to access this resource";

/// A Lambda authorizer: 401 without the identity (or when the function says
/// `Unauthorized`), 403 when its policy does not allow the method, 500 when it fails.
async fn custom(
    verifier: &lambda::LambdaVerifier,
    config: &RouteConfig,
    req: &Request,
    path_params: &[(String, String)],
    identity: &mut Identity,
) -> Result<(), GatewayError> {
    let name = verifier.name();
    let resource = config.path.as_str();
    let presented = verifier
        .identify(req, resource, path_params)
        .map_err(|missing| {
            decided(name, "no_token");
            GatewayError::new(
                ErrorKind::Unauthorized,
                format!("authorizer {name}: {}", missing.0),
            )
        })?;
    let method_arn = &presented.method_arn;
    let event = || verifier.event(&presented, req, resource, path_params);
    let decision = match verifier.decide(presented.key, event).await {
        lambda::Outcome::Decided(d) => d,
        lambda::Outcome::Unauthorized => {
            decided(name, "unauthorized");
            return Err(GatewayError::new(
                ErrorKind::Unauthorized,
                format!("authorizer {name}: the function answered Unauthorized"),
            ));
        }
        lambda::Outcome::Failed(why) => {
            decided(name, "failed");
            return Err(GatewayError::new(
                ErrorKind::AuthorizerFailure,
                format!("authorizer {name}: {why}"),
            ));
        }
    };
    let refused = |message: &str, result: &'static str| {
        decided(name, result);
        GatewayError::new(
            ErrorKind::AccessDenied {
                message: message.to_string(),
            },
            format!(
                "authorizer {name}: the policy for {} does not allow {method_arn}",
                decision.principal_id
            ),
        )
    };
    match lambda::evaluate(&decision.statements, method_arn) {
        lambda::Effect::Allow => {}
        lambda::Effect::ExplicitDeny => return Err(refused(EXPLICIT_DENY, "denied")),
        lambda::Effect::NotAllowed => return Err(refused(NOT_ALLOWED, "not_allowed")),
    }
    decided(name, "allowed");
    identity.principal_id = Some(decision.principal_id.clone());
    identity.decision = Some(decision);
    Ok(())
}

/// A JWT authorizer: 401 without a valid token, 403 without one of the route's scopes.
async fn token(
    verifier: &jwt::JwtVerifier,
    config: &RouteConfig,
    req: &Request,
    identity: &mut Identity,
) -> Result<(), GatewayError> {
    let decided = |result: &'static str| decided(verifier.name(), result);
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
