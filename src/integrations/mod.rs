//! The AWS services routes write to. Each target's module builds the SDK request from a
//! rendered template (a pure function), makes the call, and shapes the service's JSON
//! response the way API Gateway returns it. This is the only module that imports
//! `aws_sdk_*`.

use std::fmt;

/// An AWS action a route performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    KinesisPutRecord,
    KinesisPutRecords,
    FirehosePutRecord,
    FirehosePutRecordBatch,
    SqsSendMessage,
    SqsSendMessageBatch,
    StatesStartExecution,
    StatesStartSyncExecution,
}

impl Action {
    /// Every action's IAM name, in the order they are documented.
    pub const NAMES: [&'static str; 8] = [
        "kinesis:PutRecord",
        "kinesis:PutRecords",
        "firehose:PutRecord",
        "firehose:PutRecordBatch",
        "sqs:SendMessage",
        "sqs:SendMessageBatch",
        "states:StartExecution",
        "states:StartSyncExecution",
    ];
    const ALL: [Action; 8] = [
        Action::KinesisPutRecord,
        Action::KinesisPutRecords,
        Action::FirehosePutRecord,
        Action::FirehosePutRecordBatch,
        Action::SqsSendMessage,
        Action::SqsSendMessageBatch,
        Action::StatesStartExecution,
        Action::StatesStartSyncExecution,
    ];

    /// Parses an IAM-style name (`kinesis:PutRecords`), case-insensitively.
    pub fn parse(s: &str) -> Option<Action> {
        Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s.trim()))
            .map(|i| Self::ALL[i])
    }

    /// The IAM action name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|a| *a == self).unwrap_or(0)]
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub mod firehose;
pub mod headers;
pub mod kinesis;
pub mod kpl;
pub mod provision;
pub mod request;
pub mod sqs;
pub mod step_functions;

use std::time::Duration;

use serde_json::Value as Json;

use crate::config::AwsSettings;

/// One client per service, built once at start-up and shared by every request.
#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub firehose: aws_sdk_firehose::Client,
    pub sqs: sqs::Sqs,
    pub sfn: step_functions::Sfn,
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    /// Builds the clients from the standard credential chain; `AWS_ENDPOINT_URL` and
    /// `aws.endpoint_url` redirect every client (a local emulator, for instance).
    pub async fn new(settings: &AwsSettings) -> Clients {
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
        let shared = loader.load().await;
        let custom_endpoint =
            settings.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        Clients::from_sdk_config(&shared, custom_endpoint)
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
        }
    }
}

/// Why an integration call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// The rendered template is not a request this action accepts (a template or
    /// configuration problem: the client is not at fault).
    #[error("the rendered request is not a valid {action} request: {detail}")]
    InvalidRequest { action: Action, detail: String },
    /// The service refused the request.
    #[error("{action} failed with {code} (HTTP {status}): {message}")]
    Service {
        action: Action,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer within the route's timeout (or, `timeout` zero, within the SDK's attempt
    /// timeout, `aws.call_timeout`).
    #[error("{action} did not answer in time{}", if timeout.is_zero() { " (aws.call_timeout)".to_string() } else { format!(" ({timeout:?})") })]
    Timeout { action: Action, timeout: Duration },
    /// The service could not be reached.
    #[error("{action} could not be reached: {detail}")]
    Transport { action: Action, detail: String },
    /// Some records were still not accepted when the route's deadline came, after retries.
    #[error("{action}: {failed} of {total} records not accepted ({code})")]
    RecordsRejected {
        action: Action,
        failed: usize,
        total: usize,
        code: String,
        /// Whether every failure was transient, so the client may retry them.
        retryable: bool,
        /// The per-record results, in the service's response shape.
        response: Json,
    },
}

impl IntegrationError {
    /// Whether retrying the same request later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            IntegrationError::InvalidRequest { .. } => false,
            IntegrationError::Service { code, status, .. } => is_throttling(code) || *status >= 500,
            IntegrationError::Timeout { .. } | IntegrationError::Transport { .. } => true,
            IntegrationError::RecordsRejected { retryable, .. } => *retryable,
        }
    }

    /// Whether the service said it is overloaded or throttling.
    pub fn throttled(&self) -> bool {
        matches!(self, IntegrationError::Service { code, .. } if is_throttling(code))
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "ServiceUnavailableException"
            | "ServiceUnavailable"
            | "KMSThrottlingException"
            | "LimitExceededException"
            | "RequestThrottled"
            | "TooManyRequestsException"
    )
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

/// Performs `action` with a rendered request body within `timeout`.
pub async fn call(
    clients: &Clients,
    action: Action,
    target: Option<&str>,
    rendered: &str,
    timeout: Duration,
) -> Result<Response, IntegrationError> {
    // Retries of failed items stop early enough to answer within the timeout.
    let deadline = tokio::time::Instant::now() + timeout.mul_f64(0.8);
    let work = async {
        match action {
            Action::KinesisPutRecord => {
                kinesis::put_record(&clients.kinesis, target, rendered).await
            }
            Action::KinesisPutRecords => {
                kinesis::put_records(&clients.kinesis, target, rendered, deadline).await
            }
            Action::FirehosePutRecord => {
                firehose::put_record(&clients.firehose, target, rendered).await
            }
            Action::FirehosePutRecordBatch => {
                firehose::put_record_batch(&clients.firehose, target, rendered, deadline).await
            }
            Action::SqsSendMessage => sqs::send_message(&clients.sqs, target, rendered).await,
            Action::SqsSendMessageBatch => {
                sqs::send_message_batch(&clients.sqs, target, rendered, deadline).await
            }
            Action::StatesStartExecution => {
                step_functions::start_execution(&clients.sfn, target, rendered).await
            }
            Action::StatesStartSyncExecution => {
                step_functions::start_sync_execution(&clients.sfn, target, rendered).await
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(IntegrationError::Timeout { action, timeout }),
    }
}
