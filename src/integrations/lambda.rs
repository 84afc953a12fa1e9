//! Lambda functions as API Gateway's custom (`aws`) Lambda integration: the rendered
//! template is the payload, the function's answer is the service response integration
//! responses map, and a function error (`Handled` or `Unhandled`) is an error whose code is
//! its `errorMessage`, so integration responses' `error_pattern` selects on it as API
//! Gateway's selection pattern does. `invocation = "event"` invokes asynchronously: the
//! client is answered 202 once Lambda has queued the event.
//!
//! The proxy integration (`aws_proxy`) is not here: it hands the whole request over and
//! answers with the function's response (see `proxy::lambda`), using [`invoke`].

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::{Value as Json, json};

use super::{
    Action, Call, CallFuture, CheckFuture, Clients, Integration, IntegrationError, classify,
};

/// A Lambda answer larger than this (Lambda's own limit for a synchronous answer is 6 MB)
/// is refused rather than held.
pub const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// What a function answered.
#[derive(Debug, Clone)]
pub struct Answered {
    /// `Handled` or `Unhandled`, when the function raised.
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// The Lambda integration.
pub struct Lambda;

impl Integration for Lambda {
    fn actions(&self) -> &'static [Action] {
        &[Action::LambdaInvoke, Action::LambdaInvokeAsync]
    }

    fn iam_action(&self, _action: Action) -> &'static str {
        "lambda:InvokeFunction"
    }

    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        if target.starts_with("arn:") {
            target.to_string()
        } else {
            format!("arn:aws:lambda:{region}:{account}:function:{target}")
        }
    }

    fn target_in_template(&self) -> &'static str {
        // A payload does not name its function.
        r"([^\s\S])"
    }

    fn check<'a>(
        &'a self,
        clients: &'a Clients,
        action: Action,
        target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            clients
                .lambda
                .get_function()
                .function_name(target)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e))
        })
    }

    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            let function = call
                .target
                .ok_or_else(|| IntegrationError::InvalidRequest {
                    action: call.action,
                    detail: "the route names no function (target)".into(),
                })?;
            // Lambda takes JSON; a template that renders nothing sends `{}`, as API Gateway.
            let payload = if call.rendered.trim().is_empty() {
                b"{}".to_vec()
            } else {
                call.rendered.as_bytes().to_vec()
            };
            let asynchronous = call.action == Action::LambdaInvokeAsync;
            let answered = invoke(clients, call.action, function, payload, asynchronous).await?;
            answer(call.action, &answered)
        })
    }
}

/// Invokes a function (`asynchronous`: as an event, answered once Lambda queued it).
pub async fn invoke(
    clients: &Clients,
    action: Action,
    function: &str,
    payload: Vec<u8>,
    asynchronous: bool,
) -> Result<Answered, IntegrationError> {
    let out = clients
        .lambda
        .invoke()
        .function_name(function)
        .invocation_type(if asynchronous {
            InvocationType::Event
        } else {
            InvocationType::RequestResponse
        })
        .payload(Blob::new(payload))
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    let payload = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    if payload.len() > MAX_ANSWER_BYTES {
        return Err(IntegrationError::Service {
            action,
            status: 502,
            code: "ResponseTooLarge".into(),
            message: format!("the function answered {} bytes", payload.len()),
        });
    }
    Ok(Answered {
        function_error: out.function_error().map(str::to_string),
        payload,
    })
}

/// Invokes a proxy route's function with its event, within `timeout`.
pub async fn invoke_proxy(
    clients: &Clients,
    function: &str,
    event: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<Answered, IntegrationError> {
    let action = Action::LambdaInvoke;
    tokio::time::timeout(timeout, invoke(clients, action, function, event, false))
        .await
        .unwrap_or(Err(IntegrationError::Timeout { action, timeout }))
}

/// A custom integration's view of the answer: the function's JSON (text that is not JSON as
/// a string), or, when it raised, an error whose code is its `errorMessage`.
pub fn answer(action: Action, answered: &Answered) -> Result<Json, IntegrationError> {
    if action == Action::LambdaInvokeAsync {
        return Ok(json!({}));
    }
    let text = String::from_utf8_lossy(&answered.payload);
    let body: Json = serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.to_string()));
    match &answered.function_error {
        None => Ok(body),
        Some(_) => {
            let error_message = match &body["errorMessage"] {
                Json::String(m) => m.clone(),
                Json::Null => body.to_string(),
                other => other.to_string(),
            };
            Err(IntegrationError::FunctionError {
                action,
                error_message,
                body,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_errors_carry_their_message_as_the_code() {
        let raised = Answered {
            function_error: Some("Unhandled".into()),
            payload: br#"{"errorMessage": "Bad Request: missing id", "errorType": "ValueError"}"#
                .to_vec(),
        };
        let Err(IntegrationError::FunctionError {
            error_message,
            body,
            ..
        }) = answer(Action::LambdaInvoke, &raised)
        else {
            panic!("an error")
        };
        assert_eq!(error_message, "Bad Request: missing id");
        assert_eq!(body["errorType"], "ValueError");
        let ok = Answered {
            function_error: None,
            payload: br#"{"id": 7}"#.to_vec(),
        };
        assert_eq!(answer(Action::LambdaInvoke, &ok).unwrap(), json!({"id": 7}));
        let text = Answered {
            function_error: None,
            payload: b"plain".to_vec(),
        };
        assert_eq!(answer(Action::LambdaInvoke, &text).unwrap(), json!("plain"));
        assert_eq!(answer(Action::LambdaInvokeAsync, &ok).unwrap(), json!({}));
    }
}
