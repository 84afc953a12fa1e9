//! What the gateway asks of an upstream and how that can fail: the [`Action`]s routes
//! perform and [`IntegrationError`], with its retry decision. This is the vocabulary the
//! integrations, the batcher, the spool and `error` share; it makes no calls and imports no
//! other module of the crate, so each of them can depend on it without depending on the
//! others.

use std::fmt;
use std::time::Duration;

use serde_json::Value as Json;

/// What a route performs upstream: an AWS action, a Lambda function, an HTTP backend, or
/// nothing (a mock).
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
    /// A Lambda function, invoked and waited for (`lambda:Invoke`).
    LambdaInvoke,
    /// A Lambda function, invoked asynchronously (`lambda:Invoke` with
    /// `invocation = "event"`): the client gets 202 once Lambda has queued the event.
    LambdaInvokeAsync,
    /// An HTTP backend (`http`).
    Http,
    /// No upstream: integration responses answer (`mock`).
    Mock,
    /// Any action of an AWS service the gateway knows the protocol of
    /// (`aws:dynamodb:PutItem`), signed and sent as the service's own API.
    Aws(AwsAction),
}

/// `aws:SERVICE:Operation`, interned: the same name is one `&'static str` however often a
/// configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AwsAction {
    /// A thin pointer, so that an [`Action`] (and every error that names one) stays small.
    name: &'static &'static str,
}

impl AwsAction {
    /// `aws:SERVICE:Operation` with a lower-case service of letters, digits and `-`, and an
    /// operation of ASCII letters and digits.
    pub fn parse(s: &str) -> Option<AwsAction> {
        let rest = s.trim().strip_prefix("aws:")?;
        let (service, operation) = rest.split_once(':')?;
        let service_ok = !service.is_empty()
            && service.len() <= 40
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let operation_ok = !operation.is_empty()
            && operation.len() <= 80
            && operation.bytes().all(|b| b.is_ascii_alphanumeric())
            && operation.as_bytes()[0].is_ascii_uppercase();
        (service_ok && operation_ok).then(|| AwsAction {
            name: intern(&format!("aws:{service}:{operation}")),
        })
    }

    /// `aws:dynamodb:PutItem`.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// `dynamodb`.
    pub fn service(self) -> &'static str {
        self.name[4..].split(':').next().unwrap_or("")
    }

    /// `PutItem`.
    pub fn operation(self) -> &'static str {
        self.name.rsplit(':').next().unwrap_or("")
    }
}

/// One `&'static &'static str` per distinct text (a handful per configuration).
fn intern(s: &str) -> &'static &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static &'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| ***n == s) {
        return n;
    }
    let text: &'static str = Box::leak(s.to_string().into_boxed_str());
    let leaked: &'static &'static str = Box::leak(Box::new(text));
    names.push(leaked);
    leaked
}

impl Action {
    /// Every fixed action's name, in the order they are documented (besides these, any
    /// `aws:SERVICE:Operation`).
    pub const NAMES: [&'static str; 11] = [
        "kinesis:PutRecord",
        "kinesis:PutRecords",
        "firehose:PutRecord",
        "firehose:PutRecordBatch",
        "sqs:SendMessage",
        "sqs:SendMessageBatch",
        "states:StartExecution",
        "states:StartSyncExecution",
        "lambda:Invoke",
        "http",
        "mock",
    ];
    const ALL: [Action; 11] = [
        Action::KinesisPutRecord,
        Action::KinesisPutRecords,
        Action::FirehosePutRecord,
        Action::FirehosePutRecordBatch,
        Action::SqsSendMessage,
        Action::SqsSendMessageBatch,
        Action::StatesStartExecution,
        Action::StatesStartSyncExecution,
        Action::LambdaInvoke,
        Action::Http,
        Action::Mock,
    ];

    /// Parses a name (`kinesis:PutRecords`, `lambda:Invoke`, `http`, `mock`,
    /// `aws:dynamodb:PutItem`), case-insensitively but for the `aws:` form's operation.
    pub fn parse(s: &str) -> Option<Action> {
        if let Some(a) = AwsAction::parse(s) {
            return Some(Action::Aws(a));
        }
        Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s.trim()))
            .map(|i| Self::ALL[i])
    }

    /// The action's name as configured (IAM-style for AWS actions).
    pub fn name(self) -> &'static str {
        match self {
            Action::Aws(a) => a.name(),
            Action::LambdaInvokeAsync => "lambda:Invoke",
            fixed => Self::NAMES[Self::ALL.iter().position(|a| *a == fixed).unwrap_or(0)],
        }
    }

    /// Whether the action calls AWS (and so needs IAM permissions and the AWS clients).
    pub fn is_aws(self) -> bool {
        !matches!(self, Action::Http | Action::Mock)
    }

    /// Whether a route can hand its requests over whole (`integration = "proxy"`).
    pub fn can_proxy(self) -> bool {
        matches!(self, Action::LambdaInvoke | Action::Http)
    }

    /// The action's asynchronous form (`invocation = "event"`), if it has one.
    pub fn asynchronous(self) -> Option<Action> {
        (self == Action::LambdaInvoke).then_some(Action::LambdaInvokeAsync)
    }

    /// Whether a route of this action must name its target (a function).
    pub fn needs_target(self) -> bool {
        matches!(self, Action::LambdaInvoke | Action::LambdaInvokeAsync)
    }

    /// Whether a route of this action takes a target at all.
    pub fn takes_target(self) -> bool {
        !matches!(self, Action::Mock | Action::Http)
    }

    /// Whether the action calls an HTTP backend.
    pub fn is_http(self) -> bool {
        self == Action::Http
    }

    /// The `aws:SERVICE:Operation` it is, if it is one.
    pub fn aws(self) -> Option<AwsAction> {
        match self {
            Action::Aws(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the answer is the status the request template chose (a mock's), not a
    /// service's body.
    pub fn answers_with_status(self) -> bool {
        self == Action::Mock
    }

    /// Whether an answer that is not JSON (an HTTP backend's, a query API's XML) is passed
    /// back as its text.
    pub fn answers_text(self) -> bool {
        matches!(self, Action::Http | Action::Aws(_))
    }

    /// The status of an answer no integration response selects, given the upstream's: a
    /// mock's and an HTTP backend's own, 202 for an event queued for a function, else 200.
    pub fn default_status(self, upstream: u16) -> u16 {
        match self {
            Action::Mock | Action::Http => upstream,
            Action::LambdaInvokeAsync => 202,
            _ => 200,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request value a route's `request_parameters` map into the integration request, resolved
/// for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// `integration.request.path.NAME` (an S3 object's key, say).
    Path(String, String),
    /// `integration.request.querystring.NAME`.
    Query(String, String),
    /// `integration.request.header.NAME`, the name lower-case.
    Header(String, String),
}

/// Why an integration call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntegrationError {
    /// The rendered template is not a request this action accepts (a template or
    /// configuration problem: the client is not at fault).
    #[error("the rendered request is not a valid {action} request: {detail}")]
    InvalidRequest { action: Action, detail: String },
    /// What this request holds made the rendered request invalid (a list of no records, ids
    /// that repeat): the client is at fault, and told so (400) with this detail.
    #[error("the request could not be mapped to a {action} request: {detail}")]
    Unmappable { action: Action, detail: String },
    /// One of the client's records is one the service would refuse (too large, a key too
    /// long): the client's data is at fault, not the template's, and no call was made.
    #[error("{action}: record {index} {reason}")]
    RecordRefused {
        action: Action,
        /// The record's position in the request, from 0.
        index: usize,
        /// What is wrong with it, naming the service's limit.
        reason: String,
        /// Refused for its size (413) rather than its shape (400).
        too_large: bool,
    },
    /// The service refused the request.
    #[error("{action} failed with {code} (HTTP {status}): {message}")]
    Service {
        action: Action,
        status: u16,
        code: String,
        message: String,
    },
    /// A Lambda function raised: `error_message` is its `errorMessage` (what integration
    /// responses' `error_pattern` selects on, as API Gateway's selection pattern does), and
    /// `body` its whole error document (`errorMessage`, `errorType`, `stackTrace`).
    #[error("{action}: the function raised: {error_message}")]
    FunctionError {
        action: Action,
        error_message: String,
        body: Json,
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
        /// The per-record results, in the service's response shape (boxed: it is large,
        /// and every `Result` carrying an `IntegrationError` would pay for it).
        response: Box<Json>,
    },
}

impl IntegrationError {
    /// Whether retrying the same request later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            IntegrationError::InvalidRequest { .. }
            | IntegrationError::Unmappable { .. }
            | IntegrationError::RecordRefused { .. }
            | IntegrationError::FunctionError { .. } => false,
            IntegrationError::Service { code, status, .. } => is_throttling(code) || *status >= 500,
            IntegrationError::Timeout { .. } | IntegrationError::Transport { .. } => true,
            IntegrationError::RecordsRejected { retryable, .. } => *retryable,
        }
    }

    /// The action that failed.
    pub fn action(&self) -> Action {
        match self {
            IntegrationError::InvalidRequest { action, .. }
            | IntegrationError::Unmappable { action, .. }
            | IntegrationError::RecordRefused { action, .. }
            | IntegrationError::Service { action, .. }
            | IntegrationError::FunctionError { action, .. }
            | IntegrationError::Timeout { action, .. }
            | IntegrationError::Transport { action, .. }
            | IntegrationError::RecordsRejected { action, .. } => *action,
        }
    }

    /// Whether the service refused a whole call for what one of its records holds (a record
    /// over a limit, say): the same call without that record may succeed, so a batch of
    /// several requests' records is split to find it rather than failed as a whole.
    pub fn caused_by_content(&self) -> bool {
        matches!(
            self,
            IntegrationError::Service { status: 400..=499, code, .. } if content_error(code)
        )
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

/// Error codes with which services refuse a call for what its records hold.
fn content_error(code: &str) -> bool {
    matches!(
        code,
        "ValidationException"
            | "InvalidArgumentException"
            | "SerializationException"
            | "InvalidParameterValue"
            | "InvalidParameterValueException"
            | "InvalidMessageContents"
            | "BatchRequestTooLong"
            | "AWS.SimpleQueueService.BatchRequestTooLong"
            | "InvalidBatchEntryId"
            | "AWS.SimpleQueueService.InvalidBatchEntryId"
    )
}

/// Whether a per-record error code is worth retrying (throttling, transient service
/// errors); validation errors are not.
pub fn retryable_record_error(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailableException"
            | "KMSThrottlingException"
            | "ThrottlingException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_by_name_and_aws_actions_intern() {
        assert_eq!(
            Action::parse("Kinesis:PutRecords"),
            Some(Action::KinesisPutRecords)
        );
        assert_eq!(Action::parse("lambda:invoke"), Some(Action::LambdaInvoke));
        assert_eq!(Action::parse("mock"), Some(Action::Mock));
        let Some(Action::Aws(a)) = Action::parse("aws:dynamodb:PutItem") else {
            panic!("an AWS action")
        };
        assert_eq!((a.service(), a.operation()), ("dynamodb", "PutItem"));
        let Some(Action::Aws(b)) = Action::parse("aws:dynamodb:PutItem") else {
            panic!("an AWS action")
        };
        assert!(std::ptr::eq(a.name(), b.name()), "interned once");
        for bad in [
            "aws:DynamoDB:PutItem",
            "aws:dynamodb:",
            "aws::PutItem",
            "aws:s3:put object",
            "aws:s3:putObject",
        ] {
            assert_eq!(Action::parse(bad), None, "{bad}");
        }
        assert_eq!(Action::LambdaInvokeAsync.name(), "lambda:Invoke");
    }

    #[test]
    fn only_transient_record_errors_are_retried() {
        assert!(retryable_record_error(
            "ProvisionedThroughputExceededException"
        ));
        assert!(retryable_record_error("InternalFailure"));
        assert!(!retryable_record_error("ValidationException"));
        assert!(!retryable_record_error("AccessDeniedException"));
    }
}
