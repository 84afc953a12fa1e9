//! HTTP backends as an integration family: only what start-up and `iam-policy` ask of
//! every route (no AWS permissions, no target, no batching). Requests go out through the
//! proxy stage (`proxy::http`), which knows the route's URI and parameter mappings.

use super::{Action, Call, CallFuture, Integration, IntegrationError};

/// The HTTP integration.
pub struct Http;

impl Integration for Http {
    fn actions(&self) -> &'static [Action] {
        &[Action::Http]
    }

    fn target_arn(&self, _target: &str, _region: &str, _account: &str) -> String {
        String::new()
    }

    fn target_in_template(&self) -> &'static str {
        r"([^\s\S])"
    }

    fn call<'a>(&'a self, _clients: &'a super::Clients, call: Call<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            Err(IntegrationError::InvalidRequest {
                action: call.action,
                detail: "http routes are sent by the proxy stage".into(),
            })
        })
    }
}
