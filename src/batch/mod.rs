//! Batching across requests: records from concurrent requests to one route are coalesced
//! into few, full upstream calls through the route's [`Sink`]. A sink is an integration
//! family's (Kinesis `PutRecords`, Firehose `PutRecordBatch`, SQS `SendMessageBatch`); this
//! module knows sinks only through the trait.
//!
//! The policy (what fits, when a batch is full, backoff) lives in [`policy`], pure and
//! unit-tested. This module is the plumbing: a task per batched route owns a bounded queue,
//! the linger timer and the flushes. A request submits its records and waits for their
//! results; the task adds them to the open batch and flushes it when it is full or when its
//! first record has waited `linger`. A flush runs as its own task (at most `max_in_flight` at
//! once); the sink retries failed records (see [`retry`]), and the flush hands each request
//! exactly its own records' results, in order.
//!
//! Backpressure: the queue is bounded. When it is full, `submit` fails at once and the
//! client gets 503 with `Retry-After`; memory does not grow with load.

pub mod policy;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::telemetry;
use crate::upstream::IntegrationError;
use policy::{Batch, BatchPolicy};

/// Requests waiting in a batcher's queue, at most (default).
pub const QUEUE_CAPACITY: usize = 2048;
/// Body bytes a batched route's requests may hold while their records wait for their batch
/// (default): 16 MiB, some 16,000 records of 1 KiB, enough to keep every upstream call a
/// batcher may make at once full.
pub const QUEUE_BYTES: usize = 16 << 20;
/// Upstream calls a batcher makes at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// Where a batcher's flushes go: one upstream call for many requests' items, one result per
/// item, in order.
pub trait Sink: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;
    /// Bytes an item counts against the call's byte limit.
    fn size(item: &Self::Item) -> usize;
    /// Puts the items (retrying transient failures until `deadline`).
    fn put(
        &self,
        items: Vec<Self::Item>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Self::Output>, IntegrationError>> + Send;
    /// Runs once before the first flush.
    fn prepare(self: &Arc<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

type Reply<O> = oneshot::Sender<Result<Vec<O>, IntegrationError>>;

struct Submission<I, O> {
    entries: Vec<I>,
    deadline: Instant,
    submitted: Instant,
    reply: Reply<O>,
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

/// A handle to one route's batcher.
pub struct Batcher<S: Sink> {
    tx: mpsc::Sender<Submission<S::Item, S::Output>>,
    route: Arc<str>,
    depth: telemetry::LazyGauge,
}

impl<S: Sink> Clone for Batcher<S> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            route: self.route.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<S: Sink> std::fmt::Debug for Batcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("route", &self.route)
            .finish()
    }
}

impl<S: Sink> Batcher<S> {
    /// Starts the batcher task (on the current tokio runtime).
    pub fn spawn(sink: S, policy: BatchPolicy, route: String) -> Batcher<S> {
        let (tx, rx) = mpsc::channel(policy.queue.max(1));
        let depth = telemetry::batch_queue_depth(&route);
        tokio::spawn(run(
            rx,
            Arc::new(sink),
            policy,
            route.clone(),
            depth.clone(),
        ));
        Batcher {
            tx,
            route: Arc::from(route),
            depth,
        }
    }

    /// Submits a request's items and waits for their results.
    pub async fn submit(
        &self,
        entries: Vec<S::Item>,
        deadline: Instant,
    ) -> Result<Vec<S::Output>, SubmitError> {
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
        self.depth
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        Ok(wait.await.map_err(|_| SubmitError::Closed)??)
    }
}

async fn run<S: Sink>(
    mut rx: mpsc::Receiver<Submission<S::Item, S::Output>>,
    sink: Arc<S>,
    policy: BatchPolicy,
    route: String,
    depth: telemetry::LazyGauge,
) {
    sink.prepare().await;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut batch: Batch<Submission<S::Item, S::Output>> = Batch::default();
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
                // What still waits behind it (submitters set it as they add).
                depth.set(rx.len() as f64);
                let (records, bytes) = (sub.entries.len(), sub.entries.iter().map(S::size).sum());
                if !batch.fits(&policy, records, bytes) {
                    flush(&mut batch, &in_flight, &sink, &route).await;
                    opened = None;
                }
                if batch.is_empty() {
                    opened = Some(Instant::now());
                }
                batch.push(sub, records, bytes);
                if batch.is_full(&policy) {
                    flush(&mut batch, &in_flight, &sink, &route).await;
                    opened = None;
                }
            }
            () = linger => {
                flush(&mut batch, &in_flight, &sink, &route).await;
                opened = None;
            }
        }
    }
    flush(&mut batch, &in_flight, &sink, &route).await;
}

/// Sends the open batch as one call, in its own task once a slot is free.
async fn flush<S: Sink>(
    batch: &mut Batch<Submission<S::Item, S::Output>>,
    in_flight: &Arc<Semaphore>,
    sink: &Arc<S>,
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
    let sink = sink.clone();
    tokio::spawn(async move {
        let deadline = subs
            .iter()
            .map(|s| s.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        // The records move into the call; each request keeps its count and reply.
        let mut entries: Vec<S::Item> = Vec::with_capacity(records);
        let mut waiting = Vec::with_capacity(subs.len());
        for sub in subs {
            waiting.push((sub.entries.len(), sub.reply));
            entries.extend(sub.entries);
        }
        let result = sink.put(entries, deadline).await;
        drop(permit);
        match result {
            Ok(results) => {
                let mut results = results.into_iter();
                for (n, reply) in waiting {
                    let mine: Vec<S::Output> = results.by_ref().take(n).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    });
}

/// Default linger for batched routes.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
