//! What the gateway asks of an upstream and how that can fail: the [`Action`]s routes
//! perform and [`IntegrationError`], with its retry decision. This is the vocabulary the
//! integrations, the batcher, the spool and `error` share; it makes no calls and imports no
//! other module of the crate, so each of them can depend on it without depending on the
//! others.

use std::fmt;
use std::time::Duration;

use serde_json::Value as Json;

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
            IntegrationError::InvalidRequest { .. }
            | IntegrationError::Unmappable { .. }
            | IntegrationError::RecordRefused { .. } => false,
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
    fn only_transient_record_errors_are_retried() {
        assert!(retryable_record_error(
            "ProvisionedThroughputExceededException"
        ));
        assert!(retryable_record_error("InternalFailure"));
        assert!(!retryable_record_error("ValidationException"));
        assert!(!retryable_record_error("AccessDeniedException"));
    }
}
