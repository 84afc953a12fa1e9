//! Step Functions: `StartExecution` and `StartSyncExecution` (EXPRESS state machines; the
//! workflow's output goes back to the client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sfn::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_sfn::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sfn::error::BoxError;
use serde_json::{Map, Value as Json, json};

use super::request::{invalid, json_object, opt_string, resolve_target};
use super::{
    Action, Call, CallFuture, CheckFuture, Clients, Integration, IntegrationError, Permissions,
    classify,
};

/// The Step Functions integration (no batching: an execution is one request's).
pub struct StepFunctions;

impl Integration for StepFunctions {
    fn check<'a>(
        &'a self,
        clients: &'a Clients,
        action: Action,
        target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let arn = clients.sfn.arn(action, target).await?;
            clients
                .sfn
                .client
                .describe_state_machine()
                .state_machine_arn(arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e))
        })
    }

    fn actions(&self) -> &'static [Action] {
        &[
            Action::StatesStartExecution,
            Action::StatesStartSyncExecution,
        ]
    }

    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        format!("arn:aws:states:{region}:{account}:stateMachine:{target}")
    }

    /// A state machine named without its ARN is looked up by listing them.
    fn extra_permissions(&self, target: Option<&str>) -> Permissions {
        let by_name = target.is_some_and(|t| !t.starts_with("arn:"));
        Permissions {
            on_target: &[],
            anywhere: if by_name {
                &["states:ListStateMachines"]
            } else {
                &[]
            },
        }
    }

    fn target_in_template(&self) -> &'static str {
        r#""stateMachineArn"\s*:\s*"([^"$]+)""#
    }

    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a> {
        let sfn = &clients.sfn;
        match call.action {
            Action::StatesStartSyncExecution => {
                Box::pin(start_sync_execution(sfn, call.target, call.rendered))
            }
            _ => Box::pin(start_execution(sfn, call.target, call.rendered)),
        }
    }
}

/// The Step Functions client and the state machine ARNs it has looked up by name.
#[derive(Clone, Debug)]
pub struct Sfn {
    pub client: aws_sdk_sfn::Client,
    arns: Arc<Mutex<HashMap<String, String>>>,
}

/// `StartSyncExecution` prefixes the host with `sync-`, which a custom endpoint such as a
/// local emulator (`sync-127.0.0.1`) cannot resolve; with an endpoint override the prefix is
/// removed before the request is signed.
#[derive(Debug)]
struct StripSyncHostPrefix;

impl Intercept for StripSyncHostPrefix {
    fn name(&self) -> &'static str {
        "StripSyncHostPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_string();
        if let Some((scheme, rest)) = uri.split_once("://")
            && let Some(rest) = rest.strip_prefix("sync-")
        {
            request.set_uri(format!("{scheme}://{rest}"))?;
        }
        Ok(())
    }
}

/// The client, with the prefix fix when an endpoint override is set.
pub fn client(shared: &aws_config::SdkConfig, custom_endpoint: bool) -> Sfn {
    let mut conf =
        aws_sdk_sfn::config::Builder::from(shared).interceptor(super::headers::CaptureHeaders);
    if custom_endpoint {
        conf = conf.interceptor(StripSyncHostPrefix);
    }
    Sfn {
        client: aws_sdk_sfn::Client::from_conf(conf.build()),
        arns: Arc::default(),
    }
}

impl Sfn {
    /// An ARN for a state machine name (or the ARN itself), looked up once.
    async fn arn(&self, action: Action, machine: &str) -> Result<String, IntegrationError> {
        if machine.starts_with("arn:") {
            return Ok(machine.to_string());
        }
        if let Some(arn) = self
            .arns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(machine)
        {
            return Ok(arn.clone());
        }
        let mut pages = self.client.list_state_machines().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(action, e))?;
            if let Some(m) = page.state_machines().iter().find(|m| m.name() == machine) {
                let arn = m.state_machine_arn().to_string();
                self.arns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(machine.to_string(), arn.clone());
                return Ok(arn);
            }
        }
        Err(IntegrationError::Service {
            action,
            status: 400,
            code: "StateMachineDoesNotExist".into(),
            message: format!("no state machine named {machine}"),
        })
    }
}

struct Start {
    arn: String,
    name: Option<String>,
    input: Option<String>,
    trace_header: Option<String>,
}

async fn start(
    sfn: &Sfn,
    action: Action,
    target: Option<&str>,
    rendered: &str,
) -> Result<Start, IntegrationError> {
    let m: Map<String, Json> = json_object(action, rendered)?;
    let machine = resolve_target(
        action,
        target,
        opt_string(action, &m, "stateMachineArn")?,
        "stateMachineArn",
    )?;
    let input = match m.get("input") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        // API Gateway templates must escape the input into a string; accept an object too.
        Some(other) => Some(other.to_string()),
    };
    if let Some(i) = &input
        && serde_json::from_str::<Json>(i).is_err()
    {
        return Err(invalid(action, "input is not a JSON document"));
    }
    Ok(Start {
        arn: sfn.arn(action, machine).await?,
        name: opt_string(action, &m, "name")?.map(str::to_string),
        input,
        trace_header: opt_string(action, &m, "traceHeader")?.map(str::to_string),
    })
}

fn epoch_seconds(t: &aws_sdk_sfn::primitives::DateTime) -> f64 {
    t.as_secs_f64()
}

pub async fn start_execution(
    sfn: &Sfn,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::StatesStartExecution;
    let s = start(sfn, action, target, rendered).await?;
    let out = sfn
        .client
        .start_execution()
        .state_machine_arn(s.arn)
        .set_name(s.name)
        .set_input(s.input)
        .set_trace_header(s.trace_header)
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    Ok(json!({"executionArn": out.execution_arn(), "startDate": epoch_seconds(out.start_date())}))
}

pub async fn start_sync_execution(
    sfn: &Sfn,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::StatesStartSyncExecution;
    let s = start(sfn, action, target, rendered).await?;
    let out = sfn
        .client
        .start_sync_execution()
        .state_machine_arn(s.arn)
        .set_name(s.name)
        .set_input(s.input)
        .set_trace_header(s.trace_header)
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    let mut resp = json!({
        "executionArn": out.execution_arn(),
        "startDate": epoch_seconds(out.start_date()),
        "stopDate": epoch_seconds(out.stop_date()),
        "status": out.status().as_str(),
    });
    for (key, value) in [
        ("stateMachineArn", out.state_machine_arn()),
        ("name", out.name()),
        ("input", out.input()),
        ("output", out.output()),
        ("error", out.error()),
        ("cause", out.cause()),
        ("traceHeader", out.trace_header()),
    ] {
        if let Some(v) = value {
            resp[key] = json!(v);
        }
    }
    Ok(resp)
}
