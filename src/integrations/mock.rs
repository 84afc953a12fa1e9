//! Mock integrations: no upstream. The request template says the status
//! (`{"statusCode": 200}`, as API Gateway), and integration responses render the body and
//! headers. CORS `OPTIONS` methods of real exports are mocks.

use serde_json::{Value as Json, json};

use super::{Action, Call, CallFuture, Integration, IntegrationError};

/// The mock integration.
pub struct Mock;

impl Integration for Mock {
    fn actions(&self) -> &'static [Action] {
        &[Action::Mock]
    }

    fn target_arn(&self, _target: &str, _region: &str, _account: &str) -> String {
        String::new()
    }

    fn target_in_template(&self) -> &'static str {
        r"([^\s\S])"
    }

    fn call<'a>(&'a self, _clients: &'a super::Clients, call: Call<'a>) -> CallFuture<'a> {
        let status = status(call.rendered);
        Box::pin(async move { status.map(|s| json!({ "statusCode": s })) })
    }
}

/// The status a mock's rendered request template selects: 200 when it renders nothing.
pub fn status(rendered: &str) -> Result<u16, IntegrationError> {
    if rendered.trim().is_empty() {
        return Ok(200);
    }
    let invalid = |detail: String| IntegrationError::InvalidRequest {
        action: Action::Mock,
        detail,
    };
    let v: Json = serde_json::from_str(rendered)
        .map_err(|e| invalid(format!("the mock's request template is not JSON: {e}")))?;
    let n = match &v["statusCode"] {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|n| (100..600).contains(n))
        .ok_or_else(|| {
            invalid("the mock's request template has no statusCode from 100 to 599".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_selects_the_status() {
        assert_eq!(status("").unwrap(), 200);
        assert_eq!(status(r#"{"statusCode": 204}"#).unwrap(), 204);
        assert_eq!(status(r#"{"statusCode": "404"}"#).unwrap(), 404);
        assert!(status(r#"{"statusCode": 99}"#).is_err());
        assert!(status("statusCode: 200").is_err());
        assert!(status(r#"{"status": 200}"#).is_err());
    }
}
