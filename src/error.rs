//! `GatewayError`: why a request did not succeed, whose fault it was, and whether the
//! client may retry. It holds no HTTP types; `respond` turns it into a response.

use crate::upstream::IntegrationError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong; retrying it unchanged will fail again.
    Client,
    /// An AWS service failed, was unreachable, or throttled.
    Upstream,
    /// The gateway or its configuration (including templates) is at fault.
    Internal,
}

/// What went wrong, in terms a client response can be chosen from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route for this method and path.
    NoRoute,
    /// The route needs an API key and none usable was presented.
    Forbidden,
    /// The route's authorizer found no valid token (missing, malformed, expired, not signed by
    /// the issuer): 401.
    Unauthorized,
    /// The token is valid but grants none of the route's scopes: 403.
    ScopeDenied,
    /// A Lambda authorizer failed or answered something that is not a decision: API
    /// Gateway's 500 `AuthorizerConfigurationException`.
    AuthorizerFailure,
    /// A policy refuses this client (its address, or the page's origin): API Gateway's
    /// resource-policy denial. The message says what was refused.
    AccessDenied { message: String },
    /// A throttle refused the request; seconds until it may try again.
    Throttled { retry_after: u64 },
    /// The key's quota for the period is spent; seconds until the next period.
    QuotaExceeded { retry_after: u64 },
    /// The request's head is one the gateway will not serve (two `Host` headers, a target
    /// naming another host).
    MalformedRequest,
    /// A transfer coding the gateway does not understand (only `chunked` is).
    NotImplemented,
    /// The body is larger than the configured limit.
    PayloadTooLarge { limit: usize },
    /// The route has templates but none for this content type (and passthrough is off).
    UnsupportedMediaType { accepted: Vec<String> },
    /// The body cannot be read as the route needs (not UTF-8, for instance).
    InvalidBody,
    /// A `Content-Encoding` the gateway does not decode.
    UnsupportedEncoding { encoding: String },
    /// The body could not be decoded (a corrupt or truncated compressed stream, an
    /// NDJSON line that is not JSON); the message says where.
    UndecodableBody { message: String },
    /// The client did not send its whole body within the body read timeout.
    BodyTimeout,
    /// A mapping template failed to render.
    Template,
    /// The template rendered a request the action cannot take, or the service refused what
    /// it built (a configuration problem).
    BadIntegrationRequest,
    /// What this request holds made its mapping fail: the template could not render it (a
    /// list past the loop limit, a method failing on one of its values), or rendered it into
    /// something the action cannot take (no records, ids that repeat). Other requests to the route
    /// map fine, so this is the client's to fix; the message says what failed.
    Unmappable { message: String },
    /// The service throttled the request.
    UpstreamThrottled,
    /// The service answered with an error, or could not be reached.
    UpstreamFailed,
    /// The service did not answer in time.
    UpstreamTimeout,
    /// The upstream's answer is not one the route can pass on (a Lambda proxy answer
    /// without a status, a backend's answer over the size limit): API Gateway's 502
    /// `Internal server error`.
    MalformedUpstreamResponse,
    /// Some of the request's records were not accepted after retries.
    RecordsRejected(Box<Rejected>),
    /// The gateway's own queue toward the upstream is full: come back shortly.
    Overloaded,
    /// The upstream is not taking records and the route's spool is full.
    SpoolFull,
    /// The request did not finish within the server's whole-request deadline.
    RequestTimeout,
    /// One of the request's records is one the service would refuse; the message names it
    /// and the limit.
    RecordRefused { too_large: bool, message: String },
    /// A request validator refused the request (missing parameters, or a body that does not
    /// match the route's model).
    Invalid(Box<Invalid>),
}

/// Records a service did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub failed: usize,
    pub total: usize,
    /// The first failure's error code.
    pub code: String,
    /// Whether every failure was transient, so the client may retry them.
    pub retryable: bool,
    /// The per-record results (the client may retry exactly the failed ones).
    pub response: serde_json::Value,
}

/// Why a request is invalid (see `validate`): API Gateway's message, and (when the route
/// asks) the list of what failed and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub errors: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    /// For the operator's log; never sent to the client.
    pub detail: String,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> GatewayError {
        GatewayError {
            kind,
            detail: detail.into(),
        }
    }

    pub fn fault(&self) -> Fault {
        match self.kind {
            ErrorKind::NoRoute
            | ErrorKind::Forbidden
            | ErrorKind::AccessDenied { .. }
            | ErrorKind::Unauthorized
            | ErrorKind::ScopeDenied
            | ErrorKind::UnsupportedEncoding { .. }
            | ErrorKind::UndecodableBody { .. }
            | ErrorKind::Throttled { .. }
            | ErrorKind::QuotaExceeded { .. }
            | ErrorKind::PayloadTooLarge { .. }
            | ErrorKind::UnsupportedMediaType { .. }
            | ErrorKind::InvalidBody
            | ErrorKind::BodyTimeout
            | ErrorKind::Invalid(_)
            | ErrorKind::RecordRefused { .. }
            | ErrorKind::Unmappable { .. }
            | ErrorKind::MalformedRequest
            | ErrorKind::NotImplemented => Fault::Client,
            ErrorKind::Template
            | ErrorKind::BadIntegrationRequest
            | ErrorKind::RequestTimeout
            | ErrorKind::AuthorizerFailure => Fault::Internal,
            ErrorKind::UpstreamThrottled
            | ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::MalformedUpstreamResponse
            | ErrorKind::RecordsRejected(_)
            | ErrorKind::Overloaded
            | ErrorKind::SpoolFull => Fault::Upstream,
        }
    }

    /// Whether the client may retry the same request later.
    pub fn retryable(&self) -> bool {
        self.retry_after().is_some()
    }

    /// Seconds the client should wait before retrying, when a retry may succeed.
    pub fn retry_after(&self) -> Option<u64> {
        match &self.kind {
            ErrorKind::Throttled { retry_after } | ErrorKind::QuotaExceeded { retry_after } => {
                Some(*retry_after)
            }
            ErrorKind::UpstreamThrottled
            | ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::RequestTimeout => Some(1),
            ErrorKind::RecordsRejected(r) if r.retryable => Some(1),
            ErrorKind::Overloaded => Some(1),
            // Room comes back as the replayer delivers; that takes a while.
            ErrorKind::SpoolFull => Some(5),
            _ => None,
        }
    }
}

impl From<IntegrationError> for GatewayError {
    fn from(e: IntegrationError) -> GatewayError {
        let kind = match &e {
            IntegrationError::RecordsRejected {
                failed,
                total,
                code,
                retryable,
                response,
                ..
            } => ErrorKind::RecordsRejected(Box::new(Rejected {
                failed: *failed,
                total: *total,
                code: code.clone(),
                retryable: *retryable,
                response: (**response).clone(),
            })),
            IntegrationError::RecordRefused {
                index,
                reason,
                too_large,
                ..
            } => ErrorKind::RecordRefused {
                too_large: *too_large,
                message: format!("Record {index} {reason}"),
            },
            IntegrationError::Unmappable { action, detail } => ErrorKind::Unmappable {
                message: format!("The request could not be mapped to a {action} request: {detail}"),
            },
            IntegrationError::InvalidRequest { .. } => ErrorKind::BadIntegrationRequest,
            IntegrationError::Timeout { .. } => ErrorKind::UpstreamTimeout,
            IntegrationError::Transport { .. } | IntegrationError::FunctionError { .. } => {
                ErrorKind::UpstreamFailed
            }
            e if e.throttled() => ErrorKind::UpstreamThrottled,
            // The service rejected what the template built: a configuration problem.
            IntegrationError::Service { status, .. } if *status < 500 => {
                ErrorKind::BadIntegrationRequest
            }
            IntegrationError::Service { .. } => ErrorKind::UpstreamFailed,
        };
        GatewayError::new(kind, e.to_string())
    }
}
