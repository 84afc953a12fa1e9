//! The services routes call, behind one interface. An integration family (Kinesis,
//! Firehose, SQS, Step Functions) is a module that implements [`Integration`]: which actions
//! it performs, the caps a batch of them may have (config validation clamps to them), the
//! direct call, and, for actions that batch across requests, the batcher a route sends
//! through (see [`batched`]). Each family owns its request parsing (a pure function from the
//! rendered template to the SDK request), its limits, its batch sink and its response shape
//! (the service's JSON, the way API Gateway returns it).
//!
//! Adding a family: a module here implementing [`Integration`], its actions in
//! [`Action`]'s table, and one line in [`INTEGRATIONS`].
//!
//! This is the only module that imports `aws_sdk_*`. It never renders templates or builds
//! HTTP responses.

pub mod aws;
pub mod batched;
pub mod dynamodb;
pub mod events;
pub mod firehose;
pub mod headers;
pub mod http;
pub mod kinesis;
pub mod lambda;
pub mod mock;
pub mod provision;
pub mod request;
pub mod sns;
pub mod sqs;
pub mod step_functions;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

pub use crate::upstream::{Action, IntegrationError};
pub use batched::{Batched, Submitted};

use crate::batch::policy::BatchPolicy;
use crate::spool::Spool;

/// Every integration family, each once.
pub const INTEGRATIONS: &[&dyn Integration] = &[
    &kinesis::Kinesis,
    &firehose::Firehose,
    &sqs::SqsIntegration,
    &step_functions::StepFunctions,
    &lambda::Lambda,
    &mock::Mock,
    &http::Http,
];

/// The family that performs an action (every action has one; a unit test checks).
pub fn of(action: Action) -> Option<&'static dyn Integration> {
    if let Action::Aws(a) = action {
        return aws::service(a).map(|_| &aws::AnyAws as &'static dyn Integration);
    }
    INTEGRATIONS
        .iter()
        .copied()
        .find(|i| i.actions().contains(&action))
}

/// What a service takes as a rendered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFormat {
    /// A JSON document.
    Json,
    /// A JSON document whose `Data` fields (`Data`, `Records[*].Data`, `Record.Data`) are
    /// base64: Kinesis and Firehose.
    JsonWithData,
    /// A JSON document or the query protocol's form encoding (`Action=...&Name=value`).
    JsonOrForm,
    /// Anything (an S3 object).
    Any,
}

/// What a route needs from an integration family.
pub trait Integration: Send + Sync + 'static {
    /// The actions it performs.
    fn actions(&self) -> &'static [Action];

    /// The IAM action a route of `action` needs on its target.
    fn iam_action(&self, action: Action) -> &'static str {
        action.name()
    }

    /// For an action that can batch across requests: the caps of one call, which a route's
    /// batch settings must stay within (user records when `aggregate`). `None`: it cannot.
    fn batch_caps(&self, _action: Action, _aggregate: bool) -> Option<BatchCaps> {
        None
    }

    /// Whether a route to `target` batches when its configuration does not say (an action
    /// that can batch does, unless batching would change what the service sees).
    fn batches_by_default(&self, _action: Action, _target: &str) -> bool {
        true
    }

    /// Whether a batched route of `action` can pack records KPL-aggregated.
    fn aggregates(&self, _action: Action) -> bool {
        false
    }

    /// Whether a batched route of `action` can spool what the upstream does not take.
    fn spools(&self, _action: Action) -> bool {
        false
    }

    /// The ARN of a target named without one, for `iam-policy`.
    fn target_arn(&self, target: &str, region: &str, account: &str) -> String;

    /// What `iam-policy` grants a route of `action` on (its target's ARN).
    fn policy_resource(&self, action: Action, target: &str, region: &str, account: &str) -> String {
        let _ = action;
        self.target_arn(target, region, account)
    }

    /// IAM actions a route needs besides its own: on its target, and on every resource
    /// (`*`), for a route with `target` (lookups of queue URLs or state machines by name).
    fn extra_permissions(&self, _target: Option<&str>) -> Permissions {
        Permissions::default()
    }

    /// A pattern whose first matching group is the literal target a rendered request names
    /// (`"StreamName": "clicks"`), for importing templates that carry their target.
    fn target_in_template(&self) -> &'static str;

    /// Whether the service's requests may be form-encoded (as classic SQS templates are).
    fn reads_form_requests(&self) -> bool {
        false
    }

    /// What a rendered request of `action` must be, for the template linter.
    fn request_format(&self, _action: Action) -> RequestFormat {
        if self.reads_form_requests() {
            RequestFormat::JsonOrForm
        } else {
            RequestFormat::Json
        }
    }

    /// One call with a rendered request. Retries of failed items stop at `call.deadline`.
    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a>;

    /// Whether `target` exists and answers, by a cheap read (`DescribeStreamSummary`,
    /// `GetQueueUrl`, ...): the check of each route's upstream at start-up.
    fn check<'a>(
        &'a self,
        _clients: &'a Clients,
        _action: Action,
        _target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Starts the batcher of a batched route (on the current tokio runtime); with a spool,
    /// also its replayer, which sends through a sink of its own to the same target.
    /// `None` for an action that does not batch.
    fn batcher(
        &self,
        _clients: &Clients,
        _route: BatchRoute<'_>,
        _spool: Option<&Spool>,
    ) -> Option<Box<dyn Batched>> {
        None
    }

    /// Delivers, through a sink of the route's own, what a route's spool holds or its dead
    /// letters (`ingest-gateway spool replay`; see [`crate::spool::Replay`]). `None` for an
    /// action that does not spool.
    fn replay<'a>(
        &'a self,
        _clients: &'a Clients,
        _route: BatchRoute<'a>,
        _what: crate::spool::Replay<'a>,
    ) -> Option<ReplayFuture<'a>> {
        None
    }
}

/// An upstream check's future (see [`Integration::check`]).
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), IntegrationError>> + Send + 'a>>;

/// A spool replay's future.
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<crate::spool::Replayed>> + Send + 'a>>;

/// IAM actions beyond a route's own (see [`Integration::extra_permissions`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// On the route's target.
    pub on_target: &'static [&'static str],
    /// On every resource.
    pub anywhere: &'static [&'static str],
}

/// The caps of one batched call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCaps {
    pub max_records: usize,
    pub max_bytes: usize,
}

/// One direct call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub action: Action,
    /// The route's target; the rendered request may name it, but never another.
    pub target: Option<&'a str>,
    pub rendered: &'a str,
    /// When retries of failed items stop.
    pub deadline: Instant,
    /// The route's `request_parameters`, resolved for this request.
    pub mapped: &'a [crate::upstream::Mapped],
}

/// A direct call's future (boxed: SDK futures are large, and held inline they would
/// enlarge every request's future; see benches/RESULTS.md).
pub type CallFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response, IntegrationError>> + Send + 'a>>;

/// A route that batches, as its batcher is started.
#[derive(Debug, Clone, Copy)]
pub struct BatchRoute<'a> {
    pub action: Action,
    pub target: &'a str,
    pub policy: BatchPolicy,
    /// `"METHOD /path"`, for metrics and logs.
    pub name: &'a str,
    /// Batches the spool's replayer sends at once.
    pub replay_in_flight: usize,
}

impl BatchRoute<'_> {
    /// What the spool's replayer sends at once: the route's batches.
    pub fn replay_limits(&self) -> crate::spool::ReplayLimits {
        crate::spool::ReplayLimits {
            max_records: self.policy.max_records,
            max_bytes: self.policy.max_bytes,
            in_flight: self.replay_in_flight,
        }
    }
}

/// The SDK configuration from the standard credential chain and `[aws]`: `AWS_ENDPOINT_URL`
/// and `aws.endpoint_url` redirect every client (a local emulator, for instance).
pub async fn shared_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let region = settings
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_string());
    loader = loader
        .region(aws_config::Region::new(region))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.call_timeout)
                .build(),
        );
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// A signer for calls to any known service's API (the fleet store's DynamoDB calls).
pub async fn signer(settings: &AwsSettings) -> aws::Signer {
    aws::Signer::new(&shared_config(settings).await)
}

/// One client per service, built once at start-up and shared by every request.
#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub firehose: aws_sdk_firehose::Client,
    pub sqs: sqs::Sqs,
    pub sfn: step_functions::Sfn,
    pub s3: aws_sdk_s3::Client,
    /// Lambda functions (integrations and authorizers).
    pub lambda: aws_sdk_lambda::Client,
    /// Signed calls to any known service's API (`aws:SERVICE:Operation`).
    pub aws: aws::Signer,
}

impl Clients {
    /// Builds the clients from the standard credential chain; `AWS_ENDPOINT_URL` and
    /// `aws.endpoint_url` redirect every client (a local emulator, for instance).
    pub async fn new(settings: &AwsSettings) -> Clients {
        let shared = shared_config(settings).await;
        let custom_endpoint =
            settings.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        Clients::from_sdk_config(&shared, custom_endpoint)
    }

    /// Invokes a Lambda function and waits for it: its `X-Amz-Function-Error` (when it
    /// raised) and its answer.
    pub async fn invoke_function(
        &self,
        function: &str,
        payload: Vec<u8>,
    ) -> Result<(Option<String>, Vec<u8>), String> {
        let answered = lambda::invoke(self, Action::LambdaInvoke, function, payload, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok((answered.function_error, answered.payload))
    }

    /// Builds the clients from an SDK configuration (tests pass static credentials).
    /// `custom_endpoint` says the endpoint is not AWS's own (an emulator, for instance).
    pub fn from_sdk_config(shared: &aws_config::SdkConfig, custom_endpoint: bool) -> Clients {
        let s3 = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(custom_endpoint)
            .build();
        // Every client records response headers for `integration.response.header.*`.
        let kinesis = aws_sdk_kinesis::config::Builder::from(shared)
            .interceptor(headers::CaptureHeaders)
            .build();
        let firehose = aws_sdk_firehose::config::Builder::from(shared)
            .interceptor(headers::CaptureHeaders)
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(shared)
            .interceptor(headers::CaptureHeaders)
            .build();
        Clients {
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis),
            firehose: aws_sdk_firehose::Client::from_conf(firehose),
            sqs: sqs::Sqs::new(aws_sdk_sqs::Client::from_conf(sqs)),
            sfn: step_functions::client(shared, custom_endpoint),
            s3: aws_sdk_s3::Client::from_conf(s3),
            lambda: aws_sdk_lambda::Client::new(shared),
            aws: aws::Signer::new(shared),
        }
    }
}

/// Turns an SDK error into an [`IntegrationError`].
pub(crate) fn classify<E>(
    action: Action,
    e: aws_sdk_kinesis::error::SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
) -> IntegrationError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            IntegrationError::Service {
                action,
                status,
                code: err.code().unwrap_or("UnknownError").to_string(),
                message: err.message().unwrap_or("").to_string(),
            }
        }
        // An attempt cut off by `aws.call_timeout`.
        SdkError::TimeoutError(_) => IntegrationError::Timeout {
            action,
            timeout: Duration::ZERO,
        },
        SdkError::ConstructionFailure(c) => IntegrationError::InvalidRequest {
            action,
            detail: format!("{:?}", c),
        },
        other => IntegrationError::Transport {
            action,
            detail: aws_error_chain(&other),
        },
    }
}

fn aws_error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A call's successful result: the service's JSON response, in API Gateway's shape.
pub type Response = Json;

/// Performs a route's action directly with a rendered request, within `timeout`.
pub async fn call(
    integration: &dyn Integration,
    clients: &Clients,
    action: Action,
    target: Option<&str>,
    rendered: &str,
    mapped: &[crate::upstream::Mapped],
    timeout: Duration,
) -> Result<Response, IntegrationError> {
    // Retries of failed items stop early enough to answer within the timeout.
    let deadline = Instant::now() + timeout.mul_f64(0.8);
    let work = integration.call(
        clients,
        Call {
            action,
            target,
            rendered,
            deadline,
            mapped,
        },
    );
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(IntegrationError::Timeout { action, timeout }),
    }
}

/// How the AWS clients are built (`[aws]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// One attempt of one call, at most.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub account_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_exactly_one_family() {
        for name in Action::NAMES {
            let action = Action::parse(name).unwrap();
            let families = INTEGRATIONS
                .iter()
                .filter(|i| i.actions().contains(&action))
                .count();
            assert_eq!(families, 1, "{name}");
        }
    }
}
