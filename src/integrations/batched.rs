//! The way into a batched route, shared by every family that batches: a rendered request is
//! parsed into records ([`BatchSink::parse`]), submitted to the route's batcher with the
//! records of other requests, and answered from its own records' results
//! ([`BatchSink::answer`]) in the service's response shape.
//!
//! Whether records go to the spool instead is the dispatch stage's decision; here a
//! submission can keep, encoded for the spool, the records the upstream did not take in
//! time ([`Submitted::Undelivered`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

use super::BatchRoute;
use crate::batch::{Batcher, Sink, SubmitError};
use crate::spool::{Delivered, Record, Spool};
use crate::upstream::{Action, IntegrationError};

/// Starts a route's batcher (on the current tokio runtime); its records are never spooled.
pub fn start<S: BatchSink>(sink: S, route: BatchRoute<'_>) -> Box<dyn Batched> {
    let batcher = Batcher::spawn(sink, route.policy, route.name.to_string());
    Box::new(BatchedRoute::new(batcher, route.action, route.target))
}

/// Starts the batcher of a route whose records can be spooled, and with a spool also the
/// spool's replayer; `sink` makes each of them a sink of its own to the route's target.
pub fn start_spooling<S>(
    sink: impl Fn() -> S,
    route: BatchRoute<'_>,
    spool: Option<&Spool>,
) -> Box<dyn Batched>
where
    S: BatchSink<Item: Record>,
{
    let Some(spool) = spool else {
        return start(sink(), route);
    };
    spool.spawn_replayer(sink(), route.replay_limits());
    let batcher = Batcher::spawn(sink(), route.policy, route.name.to_string());
    Box::new(BatchedRoute::spooling(batcher, route.action, route.target))
}

/// A batch sink that can also read a client's request and answer it.
pub trait BatchSink: Sink<Output: Delivered> {
    /// What the answer needs of the request besides its records' results (say, the
    /// client's entry ids).
    type Request: Send + 'static;

    /// The records of a rendered request, the route's `target` being where they may go.
    fn parse(
        target: Option<&str>,
        rendered: &str,
    ) -> Result<(Self::Request, Vec<Self::Item>), IntegrationError>;

    /// The client's answer: the service's response for these records, or the error that
    /// carries it when some were not accepted.
    fn answer(request: Self::Request, results: &[Self::Output]) -> Result<Json, IntegrationError>;
}

/// What became of a submission.
#[derive(Debug)]
pub enum Submitted {
    /// The upstream's answer (or why there is none).
    Answered(Result<Json, IntegrationError>),
    /// With `keep`: of the request's `records`, these were not delivered by the deadline
    /// (the service refused them for now, was down or slow, or the queue toward it was full),
    /// encoded for the spool. After a timeout the batch may still deliver them: spooling them
    /// too can send them twice, never zero times.
    Undelivered {
        payloads: Vec<Vec<u8>>,
        records: usize,
    },
}

/// A future a batched route answers with.
pub type SubmitFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Submitted, SubmitError>> + Send + 'a>>;

/// A batched route, whatever its family.
pub trait Batched: Send + Sync {
    /// Submits a rendered request's records and waits for them, at most `timeout`. With
    /// `keep`, what was not delivered comes back for the spool instead of as an error.
    /// `Err` only when the batcher could not take the request (its queue is full).
    /// The rendered text is freed once read: only the records wait for the batch.
    fn submit(&self, rendered: String, timeout: Duration, keep: bool) -> SubmitFuture<'_>;

    /// A rendered request's records encoded for the spool, without sending them.
    fn payloads(&self, rendered: &str) -> Result<Vec<Vec<u8>>, IntegrationError>;
}

/// Encodes a record for the spool.
type Encode<I> = fn(&I) -> Vec<u8>;

/// A route's batcher with its family's reading and answering of requests.
pub struct BatchedRoute<S: BatchSink> {
    batcher: Batcher<S>,
    action: Action,
    target: String,
    /// Set when the route's records can be spooled.
    encode: Option<Encode<S::Item>>,
}

impl<S: BatchSink> BatchedRoute<S> {
    /// A route whose records are never spooled.
    pub fn new(batcher: Batcher<S>, action: Action, target: &str) -> BatchedRoute<S> {
        BatchedRoute {
            batcher,
            action,
            target: target.to_string(),
            encode: None,
        }
    }

    /// A route whose records can be spooled.
    pub fn spooling(batcher: Batcher<S>, action: Action, target: &str) -> BatchedRoute<S>
    where
        S::Item: Record,
    {
        BatchedRoute {
            encode: Some(Record::to_payload),
            ..BatchedRoute::new(batcher, action, target)
        }
    }

    async fn run(
        &self,
        rendered: String,
        timeout: Duration,
        keep: bool,
    ) -> Result<Submitted, SubmitError> {
        let parsed = S::parse(Some(&self.target), &rendered);
        drop(rendered);
        let (request, items) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Submitted::Answered(Err(e))),
        };
        let records = items.len();
        // A copy, in case the upstream does not take them in time.
        let kept: Option<Vec<Vec<u8>>> = match (keep, self.encode) {
            (true, Some(encode)) => Some(items.iter().map(encode).collect()),
            _ => None,
        };
        // Retries of failed records stop early enough to answer within the timeout.
        let deadline = Instant::now() + timeout.mul_f64(0.8);
        let submitted = tokio::time::timeout(timeout, self.batcher.submit(items, deadline)).await;
        let Some(payloads) = kept else {
            return match submitted {
                Ok(Ok(results)) => Ok(Submitted::Answered(S::answer(request, &results))),
                Ok(Err(SubmitError::Upstream(e))) => Ok(Submitted::Answered(Err(e))),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(Submitted::Answered(Err(IntegrationError::Timeout {
                    action: self.action,
                    timeout,
                }))),
            };
        };
        match submitted {
            Ok(Ok(results)) => {
                if results.iter().all(Delivered::delivered) {
                    return Ok(Submitted::Answered(S::answer(request, &results)));
                }
                let payloads = payloads
                    .into_iter()
                    .zip(&results)
                    .filter(|(_, r)| !r.delivered())
                    .map(|(p, _)| p)
                    .collect();
                Ok(Submitted::Undelivered { payloads, records })
            }
            // The service refused the request itself: spooling would not make it acceptable.
            Ok(Err(SubmitError::Upstream(e))) if !e.retryable() => Ok(Submitted::Answered(Err(e))),
            // Down, throttling, slow, or the queue toward it full.
            Ok(Err(_)) | Err(_) => Ok(Submitted::Undelivered { payloads, records }),
        }
    }
}

impl<S: BatchSink> Batched for BatchedRoute<S> {
    fn submit(&self, rendered: String, timeout: Duration, keep: bool) -> SubmitFuture<'_> {
        Box::pin(self.run(rendered, timeout, keep))
    }

    fn payloads(&self, rendered: &str) -> Result<Vec<Vec<u8>>, IntegrationError> {
        let Some(encode) = self.encode else {
            return Err(IntegrationError::InvalidRequest {
                action: self.action,
                detail: "this route's records cannot be spooled".into(),
            });
        };
        let (_, items) = S::parse(Some(&self.target), rendered)?;
        Ok(items.iter().map(encode).collect())
    }
}
