//! The authorize stage: who is calling, and may they. A route's authorizers run in order and
//! each adds to the request's [`Identity`]; a refusal ends the request with API Gateway's
//! status (403, 429). Today the one kind is the API key with its usage plan
//! ([`api_key`]); JWT and Lambda authorizers are further files here, each a kind of
//! [`Identity`] source behind the same stage function.
//!
//! The key store, plans and limiters themselves live in `auth`; this stage only reads what
//! a request presents and turns the verdict into the request's identity or its error.

pub mod api_key;

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
}

/// Runs the route's authorizers; `route` is the route's index in `auth`, `path_params` what
/// its path matched.
/// `keys` is the store behind `auth`, checked for a key the snapshot does not know.
pub async fn authorize(
    auth: &Authorizer,
    keys: Option<&KeySync>,
    route: usize,
    config: &RouteConfig,
    req: &Request,
    path_params: &[(String, String)],
) -> Result<Identity, GatewayError> {
    let mut identity = Identity::default();
    api_key::authorize(auth, keys, route, config, req, path_params, &mut identity).await?;
    Ok(identity)
}
