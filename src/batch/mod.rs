//! Batching across requests: records from concurrent requests to one route are coalesced
//! into few, full upstream calls.
//!
//! The policy (what fits, when a batch is full, backoff) lives in [`policy`], pure and
//! unit-tested. This module is the plumbing: a task per batched route owns a bounded queue,
//! the linger timer and the flushes. A request submits its records and waits for their
//! results; the task adds them to the open batch and flushes it when it is full or when its
//! first record has waited `linger`. A flush runs as its own task (at most `max_in_flight` at
//! once), retries failed records (see `integrations::kinesis::put_entries`), and hands each
//! request exactly its own records' results, in order.
//!
//! Backpressure: the queue is bounded. When it is full, `submit` fails at once and the
//! client gets 503 with `Retry-After`; memory does not grow with load.

pub mod policy;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::integrations::IntegrationError;
use crate::integrations::kinesis::{self, Entry, EntryResult, StreamRef};
use crate::telemetry;
use policy::{Batch, BatchPolicy};

/// Requests waiting in a batcher's queue, at most (default).
pub const QUEUE_CAPACITY: usize = 2048;
/// Upstream calls a batcher makes at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;

type Reply = oneshot::Sender<Result<Vec<EntryResult>, IntegrationError>>;

struct Submission {
    entries: Vec<Entry>,
    deadline: Instant,
    submitted: Instant,
    reply: Reply,
}

/// Why a submission did not get results.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the batch queue is full")]
    QueueFull,
    #[error("the batcher stopped")]
    Closed,
    #[error(transparent)]
    Upstream(#[from] IntegrationError),
}

/// A handle to a Kinesis `PutRecords` batcher for one stream.
#[derive(Clone, Debug)]
pub struct KinesisBatcher {
    tx: mpsc::Sender<Submission>,
    route: Arc<str>,
}

impl KinesisBatcher {
    /// Starts the batcher task (on the current tokio runtime).
    pub fn spawn(
        client: aws_sdk_kinesis::Client,
        stream: StreamRef,
        policy: BatchPolicy,
        queue: usize,
        route: String,
    ) -> KinesisBatcher {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(rx, client, stream, policy, route.clone()));
        KinesisBatcher {
            tx,
            route: Arc::from(route),
        }
    }

    /// Submits a request's records and waits for their results.
    pub async fn submit(
        &self,
        entries: Vec<Entry>,
        deadline: Instant,
    ) -> Result<Vec<EntryResult>, SubmitError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .try_send(Submission {
                entries,
                deadline,
                submitted: Instant::now(),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        telemetry::batch_queue_depth(&self.route, self.tx.max_capacity() - self.tx.capacity());
        Ok(wait.await.map_err(|_| SubmitError::Closed)??)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Submission>,
    client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    policy: BatchPolicy,
    route: String,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch: Batch<Submission> = Batch::default();
    let mut opened: Option<Instant> = None;
    loop {
        let linger = async {
            match opened {
                Some(at) => tokio::time::sleep_until(at + policy.linger).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = rx.recv() => {
                let Some(sub) = received else { break };
                let (records, bytes) = (sub.entries.len(), sub.entries.iter().map(Entry::size).sum());
                if !batch.fits(&policy, records, bytes) {
                    flush(&mut batch, &in_flight, &client, &stream, &route).await;
                    opened = None;
                }
                if batch.is_empty() {
                    opened = Some(Instant::now());
                }
                batch.push(sub, records, bytes);
                if batch.is_full(&policy) {
                    flush(&mut batch, &in_flight, &client, &stream, &route).await;
                    opened = None;
                }
            }
            () = linger => {
                flush(&mut batch, &in_flight, &client, &stream, &route).await;
                opened = None;
            }
        }
    }
    flush(&mut batch, &in_flight, &client, &stream, &route).await;
}

/// Sends the open batch as one call, in its own task once a slot is free.
async fn flush(
    batch: &mut Batch<Submission>,
    in_flight: &Arc<Semaphore>,
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    route: &str,
) {
    if batch.is_empty() {
        return;
    }
    let records = batch.records();
    let subs = batch.take();
    let waited = subs
        .first()
        .map_or(Duration::ZERO, |s| s.submitted.elapsed());
    let Ok(permit) = in_flight.clone().acquire_owned().await else {
        return;
    };
    telemetry::batch_flushed(route, subs.len(), records, waited);
    let (client, stream) = (client.clone(), stream.clone());
    tokio::spawn(async move {
        let deadline = subs
            .iter()
            .map(|s| s.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let counts: Vec<usize> = subs.iter().map(|s| s.entries.len()).collect();
        let entries: Vec<Entry> = subs
            .iter()
            .flat_map(|s| s.entries.iter().cloned())
            .collect();
        let result = kinesis::put_entries(&client, &stream, &entries, deadline).await;
        drop(permit);
        match result {
            Ok(results) => {
                let mut results = results.into_iter();
                for (sub, n) in subs.into_iter().zip(counts) {
                    let mine: Vec<EntryResult> = results.by_ref().take(n).collect();
                    let _ = sub.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for sub in subs {
                    let _ = sub.reply.send(Err(copy_error(&e)));
                }
            }
        }
    });
}

/// The same error for every request of a failed batch.
fn copy_error(e: &IntegrationError) -> IntegrationError {
    match e {
        IntegrationError::InvalidRequest { action, detail } => IntegrationError::InvalidRequest {
            action: *action,
            detail: detail.clone(),
        },
        IntegrationError::Service {
            action,
            status,
            code,
            message,
        } => IntegrationError::Service {
            action: *action,
            status: *status,
            code: code.clone(),
            message: message.clone(),
        },
        IntegrationError::Timeout { action, timeout } => IntegrationError::Timeout {
            action: *action,
            timeout: *timeout,
        },
        IntegrationError::Transport { action, detail } => IntegrationError::Transport {
            action: *action,
            detail: detail.clone(),
        },
        IntegrationError::RecordsRejected {
            action,
            failed,
            total,
            code,
            retryable,
            response,
        } => IntegrationError::RecordsRejected {
            action: *action,
            failed: *failed,
            total: *total,
            code: code.clone(),
            retryable: *retryable,
            response: response.clone(),
        },
    }
}

/// Default linger for batched routes.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
