//! Batching across requests: records from concurrent requests to one route are coalesced
//! into few, full upstream calls: Kinesis `PutRecords` ([`KinesisSink`]) and Firehose
//! `PutRecordBatch` ([`FirehoseSink`]).
//!
//! The policy (what fits, when a batch is full, backoff) lives in [`policy`], pure and
//! unit-tested. This module is the plumbing: a task per batched route owns a bounded queue,
//! the linger timer and the flushes. A request submits its records and waits for their
//! results; the task adds them to the open batch and flushes it when it is full or when its
//! first record has waited `linger`. A flush runs as its own task (at most `max_in_flight` at
//! once), retries failed records (see `integrations::kinesis::put_entries`), and hands each
//! request exactly its own records' results, in order.
//!
//! With `aggregate`, a flush packs the batch's user records into KPL aggregated records
//! (see `integrations::kpl`) grouped by shard, from a shard map refreshed with `ListShards`
//! every [`SHARD_REFRESH`], and gives each user record its aggregate's result.
//!
//! Backpressure: the queue is bounded. When it is full, `submit` fails at once and the
//! client gets 503 with `Retry-After`; memory does not grow with load.

pub mod policy;
pub mod retry;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::integrations::IntegrationError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::integrations::kinesis::{self, Entry, EntryResult, StreamRef};
use crate::integrations::kpl::{self, ShardRange};
use crate::integrations::{firehose, sqs};
use crate::telemetry;
use policy::{Batch, BatchPolicy};
use retry::Outcome;

/// Requests waiting in a batcher's queue, at most (default).
pub const QUEUE_CAPACITY: usize = 2048;
/// Upstream calls a batcher makes at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// How often an aggregating batcher reloads the stream's shard map.
pub const SHARD_REFRESH: Duration = Duration::from_secs(60);

/// The open shards of an aggregating batcher's stream, as last listed.
type ShardMap = Arc<RwLock<Arc<Vec<ShardRange>>>>;

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
    depth: metrics::Gauge,
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

/// A Kinesis `PutRecords` batcher.
pub type KinesisBatcher = Batcher<KinesisSink>;
/// A Firehose `PutRecordBatch` batcher.
pub type FirehoseBatcher = Batcher<FirehoseSink>;

impl<S: Sink> Batcher<S> {
    /// Starts the batcher task (on the current tokio runtime).
    pub fn spawn(sink: S, policy: BatchPolicy, route: String) -> Batcher<S> {
        let (tx, rx) = mpsc::channel(policy.queue.max(1));
        let depth = telemetry::batch_queue_depth(&route);
        tokio::spawn(run(rx, Arc::new(sink), policy, route.clone()));
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

/// An SQS `SendMessageBatch` batcher.
pub type SqsBatcher = Batcher<SqsSink>;

/// SQS `SendMessageBatch` to one queue.
pub struct SqsSink {
    pub sqs: sqs::Sqs,
    pub queue: String,
}

impl Sink for SqsSink {
    type Item = SendMessageBatchRequestEntry;
    type Output = Outcome<serde_json::Value>;

    fn size(item: &SendMessageBatchRequestEntry) -> usize {
        item.message_body().len()
    }

    async fn put(
        &self,
        items: Vec<SendMessageBatchRequestEntry>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<serde_json::Value>>, IntegrationError> {
        sqs::put_entries(&self.sqs, &self.queue, &items, deadline).await
    }
}

/// Firehose `PutRecordBatch` to one delivery stream.
pub struct FirehoseSink {
    pub client: aws_sdk_firehose::Client,
    pub delivery_stream: String,
}

impl Sink for FirehoseSink {
    type Item = Vec<u8>;
    type Output = Outcome<String>;

    fn size(item: &Vec<u8>) -> usize {
        item.len()
    }

    async fn put(
        &self,
        items: Vec<Vec<u8>>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<String>>, IntegrationError> {
        firehose::put_entries(&self.client, &self.delivery_stream, &items, deadline).await
    }
}

/// Kinesis `PutRecords` to one stream, KPL-aggregated when `shards` is set.
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: StreamRef,
    /// Set when aggregating.
    shards: Option<ShardMap>,
    route: String,
}

impl KinesisSink {
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: StreamRef,
        aggregate: bool,
        route: String,
    ) -> KinesisSink {
        KinesisSink {
            client,
            stream,
            shards: aggregate.then(ShardMap::default),
            route,
        }
    }
}

impl Sink for KinesisSink {
    type Item = Entry;
    type Output = EntryResult;

    fn size(item: &Entry) -> usize {
        item.size()
    }

    /// Puts the batch's records, aggregated when configured; one result per user record.
    async fn put(
        &self,
        entries: Vec<Entry>,
        deadline: Instant,
    ) -> Result<Vec<EntryResult>, IntegrationError> {
        let Some(shards) = &self.shards else {
            return kinesis::put_entries(&self.client, &self.stream, &entries, deadline).await;
        };
        let map = shards.read().map(|m| Arc::clone(&m)).unwrap_or_default();
        let (packed, members): (Vec<Entry>, Vec<Vec<usize>>) =
            kpl::aggregate(&entries, &map, kpl::DEFAULT_MAX_BYTES)
                .into_iter()
                .unzip();
        let mut results = Vec::with_capacity(packed.len());
        // The batch limits keep this to one call; chunk in case a stream has many shards.
        for chunk in chunks(&packed) {
            results
                .extend(kinesis::put_entries(&self.client, &self.stream, chunk, deadline).await?);
        }
        telemetry::batch_aggregated(&self.route, entries.len(), packed.len());
        Ok(kpl::spread(&members, &results, entries.len())
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| EntryResult::Failed {
                    code: "InternalFailure".into(),
                    message: "the record was not sent".into(),
                })
            })
            .collect())
    }

    /// Lists the shards before the first flush, then keeps the map fresh.
    async fn prepare(self: &Arc<Self>) {
        let Some(map) = &self.shards else { return };
        refresh_shards(&self.client, &self.stream, map, &self.route).await;
        tokio::spawn(keep_shards_fresh(Arc::downgrade(self)));
    }
}

/// Splits aggregated records into `PutRecords`-sized calls.
fn chunks(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        if i > start
            && (i - start >= kinesis::MAX_RECORDS || bytes + e.size() > kinesis::MAX_BATCH_BYTES)
        {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += e.size();
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// Lists the stream's shards into `map`; on failure keeps the old map (an empty map still
/// works: aggregates then go by their first partition key).
async fn refresh_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    map: &ShardMap,
    route: &str,
) {
    match kinesis::open_shards(client, stream).await {
        Ok(ranges) => {
            if let Ok(mut m) = map.write() {
                *m = Arc::new(ranges);
            }
        }
        Err(e) => tracing::warn!(route, error = %e, "listing the stream's shards failed"),
    }
}

/// Refreshes the shard map until the batcher stops.
async fn keep_shards_fresh(sink: std::sync::Weak<KinesisSink>) {
    loop {
        tokio::time::sleep(SHARD_REFRESH).await;
        let Some(sink) = sink.upgrade() else { return };
        if let Some(map) = &sink.shards {
            refresh_shards(&sink.client, &sink.stream, map, &sink.route).await;
        }
    }
}

async fn run<S: Sink>(
    mut rx: mpsc::Receiver<Submission<S::Item, S::Output>>,
    sink: Arc<S>,
    policy: BatchPolicy,
    route: String,
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
                    let _ = reply.send(Err(copy_error(&e)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Entry {
        Entry {
            data: vec![b'x'; bytes],
            partition_key: "k".into(),
            explicit_hash_key: None,
        }
    }

    #[test]
    fn aggregates_are_split_into_calls_within_the_service_limits() {
        assert!(chunks(&[]).is_empty());
        let many: Vec<Entry> = (0..1_234).map(|_| entry(10)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![500, 500, 234]);
        let big: Vec<Entry> = (0..5).map(|_| entry(2_000_000)).collect();
        let sizes: Vec<usize> = chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
