//! The API key authorizer: the key a request presents (the `x-api-key` header, or the
//! route's query parameter), checked against the key store and the key's usage plan
//! (throttle and quota), and the route and account throttles, which apply with or without a
//! key. A route with `customer_param` also requires its path to name the key's customer.
//! With `api_key_source = "authorizer"` the key is the Lambda authorizer's
//! `usageIdentifierKey` instead of the request's.

use super::Identity;
use crate::auth::sync::KeySync;
use crate::auth::{Authorizer, Caller, Denied, UNKNOWN_KEY};
use crate::config::RouteConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::request::Request;

/// Admits the request or refuses it (403, 429); records the key in `identity`.
pub async fn authorize(
    auth: &Authorizer,
    keys: Option<&KeySync>,
    route: usize,
    config: &RouteConfig,
    req: &Request,
    path_params: &[(String, String)],
    identity: &mut Identity,
) -> Result<(), GatewayError> {
    // `api_key_source = "authorizer"`: the key is the one the Lambda authorizer named.
    let presented = if config.api_key_from_authorizer {
        identity.decision.as_ref().and_then(|d| d.usage_key.clone())
    } else {
        presented(req, config)
    };
    let now = req.received_epoch_ms;
    let caller = Caller {
        origin: req
            .headers
            .get(http::header::ORIGIN)
            .and_then(|o| o.to_str().ok()),
        ip: Some(req.client_ip),
    };
    let mut admitted = auth.authorize_caller(route, presented.as_deref(), now, caller);
    // A key issued a moment ago is in the store before the next periodic reload.
    if let (Err(Denied::Forbidden(UNKNOWN_KEY)), Some(keys), Some(key)) =
        (&admitted, keys, presented.as_deref())
        && keys.recheck(key).await
    {
        admitted = auth.authorize_caller(route, Some(key), now, caller);
    }
    // The node's lease of the key's quota is spent: wait for the next one.
    let admitted = with_leases(
        auth,
        keys,
        || auth.authorize_caller(route, presented.as_deref(), now, caller),
        admitted,
    )
    .await
    .map_err(denied)?;
    if let (Some(param), Some(key)) = (&config.customer_param, &admitted.key) {
        let named = path_params
            .iter()
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.as_str());
        if named.is_none() || key.customer() != named {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("the key's customer is not the {param} the path names"),
            ));
        }
    }
    if let Some(key) = admitted.key {
        identity.api_key = presented;
        identity.api_key_id = Some(key.id().to_string());
    }
    identity.quota = admitted.quota;
    Ok(())
}

/// The gateway-wide throttle, spent only by requests that reach their upstream (see
/// `Authorizer::admit_to_upstream`).
pub fn admit_to_upstream(auth: &Authorizer) -> Result<(), GatewayError> {
    auth.admit_to_upstream().map_err(denied)
}

/// The key a request presents: the `x-api-key` header, or the route's query parameter.
fn presented(req: &Request, route: &RouteConfig) -> Option<String> {
    req.header("x-api-key").or_else(|| {
        let name = route.api_key_query.as_deref()?;
        req.query_param(name).map(str::to_string)
    })
}

/// Leases rounds a request waits through before it is answered 503.
const LEASE_ROUNDS: usize = 4;

/// `first`, or, while it says the node needs a lease of the key's quota, `again` after the
/// fleet store granted one (or said none is left).
pub(super) async fn with_leases<T>(
    auth: &Authorizer,
    keys: Option<&KeySync>,
    mut again: impl FnMut() -> Result<T, Denied>,
    first: Result<T, Denied>,
) -> Result<T, Denied> {
    let mut result = first;
    // One bound for every round: a lease being taken by the lease task, stuck on a store
    // that does not answer, must not cost a request a wait per round.
    let deadline = tokio::time::Instant::now() + crate::auth::fleet::leases::REQUEST_WAIT;
    for _ in 0..LEASE_ROUNDS {
        if !matches!(result, Err(Denied::NeedsLease)) {
            return result;
        }
        let Some(leases) = keys.and_then(KeySync::leases) else {
            break;
        };
        let late = leases.wait(auth, deadline).await;
        result = again();
        if late {
            break;
        }
    }
    match result {
        Err(Denied::NeedsLease) => Err(Denied::Unavailable { retry_after: 1 }),
        other => other,
    }
}

pub(super) fn denied(d: Denied) -> GatewayError {
    match d {
        Denied::Forbidden(reason) => GatewayError::new(ErrorKind::Forbidden, reason),
        Denied::Throttled { retry_after, scope } => GatewayError::new(
            ErrorKind::Throttled { retry_after },
            format!("{scope} throttle"),
        ),
        Denied::QuotaExceeded { retry_after } => {
            GatewayError::new(ErrorKind::QuotaExceeded { retry_after }, "quota exceeded")
        }
        Denied::NeedsLease | Denied::Unavailable { .. } => GatewayError::new(
            ErrorKind::Overloaded,
            "the fleet store could not lease the key's quota",
        ),
    }
}
