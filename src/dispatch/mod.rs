//! The dispatch stage: a rendered request reaches its upstream one of three ways.
//!
//! - **Direct**: one call of the route's integration for this request.
//! - **Batched**: the request's records join other requests' in the route's batcher (see
//!   `integrations::batched`); the request is answered from its own records' results.
//! - **Spooled**: on a route with a spool, records go to the local durable spool instead:
//!   always (`spool = "always"`, or while the spool is catching up after an outage), or when
//!   the upstream did not take them by the route's deadline (`fallback`). The client then
//!   gets 202 and the spool's replayer delivers them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use serde_json::Value as Json;

use crate::batch::SubmitError;
use crate::error::{ErrorKind, GatewayError};
use crate::integrations::{
    self, Action, Batched, Clients, Integration, IntegrationError, Submitted,
};
use crate::spool::{self, Spool};

/// How one route reaches its upstream, fixed at start-up.
pub struct Upstream {
    pub integration: &'static dyn Integration,
    pub action: Action,
    pub target: Option<String>,
    pub timeout: Duration,
    /// Set when the route batches.
    pub batched: Option<Box<dyn Batched>>,
    /// Set when the route spools.
    pub spool: Option<(Spool, spool::Mode)>,
    /// Whether the route's responses read the service's response headers (direct calls only).
    pub capture_headers: bool,
    /// Set when the route batches: body bytes its requests may hold while their records wait
    /// for a batch.
    pub room: Option<Room>,
}

/// Room for a batched route's requests to wait for their batch (`batch.queue_bytes`), taken
/// before a request's body is read: a request that would pass it waits for earlier ones to
/// be answered with its body unread (the client's socket holds it: TCP backpressure), so
/// memory does not grow with the number of clients when the upstream or the CPU is the
/// bottleneck. Counted by the declared `Content-Length` (a body sent without one counts as
/// empty here; it is still bounded by the body budget); one larger than the whole room
/// waits for all of it.
pub struct Room {
    bytes: Arc<Semaphore>,
    size: usize,
}

impl Room {
    pub fn new(size: usize) -> Room {
        Room {
            bytes: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Room for a body of `declared` bytes, held until the permit drops; 503 when none is
    /// freed by `deadline`.
    pub async fn wait(
        &self,
        declared: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, GatewayError> {
        let n = u32::try_from(declared.min(self.size)).unwrap_or(u32::MAX);
        if n == 0 {
            return Ok(None);
        }
        match tokio::time::timeout_at(deadline, self.bytes.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(GatewayError::new(
                ErrorKind::Overloaded,
                "the route's records waiting for their batch stayed at their limit",
            )),
        }
    }
}

/// Where a request went.
pub enum Dispatched {
    /// To the upstream, with its answer and (when the route reads them) its response headers.
    Upstream {
        result: Result<Json, IntegrationError>,
        headers: Vec<(String, String)>,
    },
    /// `spooled` of the request's `records` to the spool (the rest to the upstream).
    Spooled { spooled: usize, records: usize },
}

/// Sends a rendered request to its upstream, or its records to the spool, within `timeout`
/// (the route's, or less when the request's own deadline is nearer).
pub async fn dispatch(
    upstream: &Upstream,
    clients: &Clients,
    rendered: String,
    mapped: &[crate::upstream::Mapped],
    timeout: Duration,
) -> Result<Dispatched, GatewayError> {
    let Some(batched) = &upstream.batched else {
        let call = integrations::call(
            upstream.integration,
            clients,
            upstream.action,
            upstream.target.as_deref(),
            &rendered,
            mapped,
            timeout,
        );
        let (result, headers) = if upstream.capture_headers {
            integrations::headers::capturing(call).await
        } else {
            (call.await, Vec::new())
        };
        return Ok(Dispatched::Upstream { result, headers });
    };
    let answered = |result| Dispatched::Upstream {
        result,
        headers: Vec::new(),
    };
    let Some((spool, mode)) = &upstream.spool else {
        let submitted = batched
            .submit(rendered, timeout, false)
            .await
            .map_err(|e| overloaded(&e))?;
        return Ok(match submitted {
            Submitted::Answered(result) => answered(result),
            // Without `keep`, everything is answered.
            Submitted::Undelivered { .. } => answered(Err(IntegrationError::Timeout {
                action: upstream.action,
                timeout,
            })),
        });
    };
    if *mode == spool::Mode::Always || spool.spilling() {
        let payloads = match batched.payloads(&rendered) {
            Ok(p) => p,
            Err(e) => return Ok(answered(Err(e))),
        };
        let records = payloads.len();
        return append(spool, payloads, records).await;
    }
    match batched.submit(rendered, timeout, true).await {
        Ok(Submitted::Answered(result)) => Ok(answered(result)),
        Ok(Submitted::Undelivered { payloads, records }) => {
            spool.upstream_failing();
            append(spool, payloads, records).await
        }
        Err(e) => Err(overloaded(&e)),
    }
}

async fn append(
    spool: &Spool,
    payloads: Vec<Vec<u8>>,
    records: usize,
) -> Result<Dispatched, GatewayError> {
    let spooled = payloads.len();
    match spool.append(payloads).await {
        Ok(()) => Ok(Dispatched::Spooled { spooled, records }),
        Err(spool::SpoolError::Full) => Err(GatewayError::new(
            ErrorKind::SpoolFull,
            "the upstream is not taking records and the spool is full",
        )),
        Err(e) => Err(GatewayError::new(ErrorKind::Overloaded, e.to_string())),
    }
}

/// The batcher could not take the request: come back shortly.
fn overloaded(e: &SubmitError) -> GatewayError {
    // Only the batcher's own refusals (a full queue, a stopped batcher) come here.
    GatewayError::new(ErrorKind::Overloaded, e.to_string())
}
