//! The durable spool: records a route could not deliver in time (or, in `always` mode, every
//! record) go to an append-only log on local disk, the client is acknowledged, and a replayer
//! delivers them in order once the upstream takes them.
//!
//! Off by default; on per route or for every route that can spool (batched routes of the
//! actions whose integration says so: Kinesis `PutRecords` and Firehose `PutRecordBatch`).
//! The spool does not know which integration drains it: it stores [`Record`]s and replays
//! them through a [`Sink`]. The shape of the module:
//!
//! - [`format`](mod@format): the bytes on disk (pure).
//! - [`log`]: one route's segment files, cursor and crash recovery (blocking I/O).
//! - this module: a writer thread per route that commits concurrent appends together (one
//!   `fdatasync` for all of them, or one per interval) and a replayer task that reads from
//!   the cursor, sends through the route's [`Sink`] until every record is accepted, and only
//!   then moves the cursor. Delivery is at least once: a crash between a send and the cursor
//!   move sends those records again.

pub mod format;
pub mod log;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::Digest;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::batch::Sink;
use crate::batch::retry::Outcome;
use crate::telemetry::SpoolMetrics;
pub use format::Record;
pub use log::{Log, Recovered, Status};

/// When a route's records go to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// When the upstream did not take them within the route's deadline (or the batch queue
    /// is full), and while earlier records still wait in the spool, so that order holds.
    Fallback,
    /// Always: the client is acknowledged once its records are on disk, and only the
    /// replayer calls the upstream.
    Always,
}

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before the client is acknowledged (concurrent appends share one `fdatasync`).
    Always,
    /// At most this long after the append; the client is acknowledged once the records are
    /// written. A process crash loses nothing; a machine crash may lose the last interval.
    Interval(Duration),
}

/// The spool settings shared by every route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dir: PathBuf,
    /// Per route.
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: Fsync,
    /// Batches the replayer sends at once.
    pub replay_in_flight: usize,
}

/// Appends waiting for the writer thread, at most; beyond, clients get 503.
pub const WRITE_QUEUE: usize = 4096;
/// Appends the writer commits together, at most.
const GROUP: usize = 1024;
/// How long one replay attempt may take before it is tried again.
const REPLAY_DEADLINE: Duration = Duration::from_secs(10);
/// Waits between replay attempts: from the first to the longest.
const REPLAY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Why records were not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full")]
    Full,
    #[error("the spool's write queue is full")]
    Busy,
    #[error("the spool failed: {0}")]
    Failed(String),
}

impl From<log::AppendError> for SpoolError {
    fn from(e: log::AppendError) -> SpoolError {
        match e {
            log::AppendError::Full => SpoolError::Full,
            log::AppendError::Io(e) => SpoolError::Failed(e.to_string()),
        }
    }
}

/// What a sink's per-record result says about delivery.
pub trait Delivered {
    fn delivered(&self) -> bool;
    /// Refused for good: sending it again will not help (a KMS key that denies, say).
    fn refused(&self) -> bool;
}

impl<R> Delivered for Outcome<R> {
    fn delivered(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    fn refused(&self) -> bool {
        matches!(
            self,
            Outcome::Failed {
                retryable: false,
                ..
            }
        )
    }
}

/// Attempts a record refused for good gets before it moves to the dead letters.
pub const DEAD_AFTER: u32 = 5;

struct Job {
    payloads: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

struct Shared {
    route: String,
    /// The route's spool directory (for the dead letters).
    dir: PathBuf,
    log: Mutex<Log>,
    /// Wakes the replayer after appends.
    appended: Notify,
    /// Records waiting, as of the last append or acknowledgement.
    records: AtomicU64,
    /// Whether the replayer's last attempt succeeded (true until one fails).
    upstream_ok: AtomicBool,
    /// Records waiting beyond which new ones join them (a replay batch).
    catch_up: AtomicU64,
    metrics: SpoolMetrics,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves the log as consistent as any crash would.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, s: Status) {
        self.records.store(s.records, Ordering::Relaxed);
        self.metrics.records.set(s.records as f64);
        self.metrics.bytes.set(s.bytes as f64);
    }
}

/// A handle to one route's spool.
#[derive(Clone)]
pub struct Spool {
    tx: std_mpsc::SyncSender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("route", &self.shared.route)
            .finish()
    }
}

impl Spool {
    /// Opens the route's spool under `settings.dir` (recovering from a crash) and starts its
    /// writer thread.
    pub fn open(route: &str, settings: &Settings) -> io::Result<(Spool, Recovered)> {
        let dir = route_dir(&settings.dir, route);
        let options = log::Options {
            segment_bytes: settings.segment_bytes,
            max_bytes: settings.max_bytes,
        };
        let (log, recovered) = Log::open(&dir, options)?;
        log::write_private(&dir.join("route"), route.as_bytes())?;
        let status = log.status();
        let shared = Arc::new(Shared {
            route: route.to_string(),
            dir: dir.clone(),
            log: Mutex::new(log),
            appended: Notify::new(),
            records: AtomicU64::new(0),
            upstream_ok: AtomicBool::new(true),
            catch_up: AtomicU64::new(0),
            metrics: SpoolMetrics::new(route),
        });
        shared.publish(status);
        let (tx, rx) = std_mpsc::sync_channel(WRITE_QUEUE);
        let writer = shared.clone();
        let fsync = settings.fsync;
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || write_loop(&rx, &writer, fsync))?;
        Ok((Spool { tx, shared }, recovered))
    }

    /// Appends a request's records (all or none) and waits until they count as written
    /// under the fsync policy.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> Result<(), SpoolError> {
        let (reply, wait) = oneshot::channel();
        let sent = self.tx.try_send(Job { payloads, reply });
        let result = match sent {
            Ok(()) => wait
                .await
                .unwrap_or_else(|_| Err(SpoolError::Failed("the spool writer stopped".into()))),
            Err(std_mpsc::TrySendError::Full(_)) => Err(SpoolError::Busy),
            Err(std_mpsc::TrySendError::Disconnected(_)) => {
                Err(SpoolError::Failed("the spool writer stopped".into()))
            }
        };
        if result.is_err() {
            self.shared.metrics.refused.increment(1);
        }
        result
    }

    /// Records waiting for delivery.
    pub fn backlog(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Says that the upstream just failed to take records in time, so that new records
    /// join the spool at once instead of each waiting out the deadline; the replayer's next
    /// success clears it.
    pub fn upstream_failing(&self) {
        self.shared.upstream_ok.store(false, Ordering::Relaxed);
    }

    /// Whether new records should join the spool rather than go to the upstream: while the
    /// replayer's upstream fails, and while more than a replay batch waits (so that records
    /// do not overtake older ones by much, and the upstream is not hit from both sides).
    pub fn spilling(&self) -> bool {
        let backlog = self.backlog();
        backlog > 0
            && (!self.shared.upstream_ok.load(Ordering::Relaxed)
                || backlog > self.shared.catch_up.load(Ordering::Relaxed))
    }

    pub fn status(&self) -> Status {
        self.shared.log().status()
    }

    /// Starts delivering the spool through `sink`, for as long as the runtime runs.
    pub fn spawn_replayer<S>(&self, sink: S, limits: ReplayLimits)
    where
        S: Sink,
        S::Item: Record,
        S::Output: Delivered,
    {
        let shared = self.shared.clone();
        shared.catch_up.store(
            (limits.max_records * limits.in_flight.max(1)) as u64,
            Ordering::Relaxed,
        );
        tokio::spawn(async move {
            replay(&shared, &Arc::new(sink), limits, false).await;
        });
    }

    /// Delivers everything the spool holds through `sink`, then returns how many records
    /// that was (for `spool replay`).
    pub async fn drain<S>(&self, sink: S, limits: ReplayLimits) -> u64
    where
        S: Sink,
        S::Item: Record,
        S::Output: Delivered,
    {
        replay(&self.shared, &Arc::new(sink), limits, true).await
    }
}

/// The directory of a route's spool: a readable slug of its name and a hash that keeps
/// different names apart (`POST /v1/events` -> `post-v1-events-1a2b3c4d`).
pub fn route_dir(root: &Path, route: &str) -> PathBuf {
    let mut slug = String::new();
    for c in route.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let hash = sha2::Sha256::digest(route.as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    root.join(format!("{}-{hex}", &slug[..slug.len().min(64)]))
}

/// The writer thread: takes every append that is waiting, writes them, syncs once, answers.
fn write_loop(rx: &std_mpsc::Receiver<Job>, shared: &Shared, fsync: Fsync) {
    let mut last_sync = std::time::Instant::now();
    let mut dirty = false;
    loop {
        let first = match fsync {
            Fsync::Interval(every) if dirty => {
                match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(job) => Some(job),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
        };
        let mut jobs: Vec<Job> = first.into_iter().collect();
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut log = shared.log();
        let mut results: Vec<Result<(), SpoolError>> = jobs
            .iter()
            .map(|j| log.append(&j.payloads).map_err(SpoolError::from))
            .collect();
        let due = match fsync {
            Fsync::Always => true,
            Fsync::Interval(every) => last_sync.elapsed() >= every,
        };
        if due && log.is_dirty() {
            match log.sync() {
                Ok(()) => last_sync = std::time::Instant::now(),
                Err(e) => {
                    tracing::error!(route = %shared.route, error = %e, "syncing the spool failed");
                    if fsync == Fsync::Always {
                        // Not durable, so not acknowledged; the records may still be sent.
                        for r in results.iter_mut().filter(|r| r.is_ok()) {
                            *r = Err(SpoolError::Failed(e.to_string()));
                        }
                    }
                }
            }
        }
        dirty = log.is_dirty();
        let status = log.status();
        drop(log);
        shared.publish(status);
        let mut appended = 0;
        for (job, result) in jobs.into_iter().zip(results) {
            if result.is_ok() {
                appended += job.payloads.len() as u64;
            }
            let _ = job.reply.send(result);
        }
        shared.metrics.appended.increment(appended);
        if appended > 0 {
            shared.appended.notify_one();
        }
    }
    if let Err(e) = shared.log().sync() {
        tracing::error!(route = %shared.route, error = %e, "syncing the spool failed");
    }
}

/// A batch on its way: where it ends, its counts, and the task delivering it.
struct Sending {
    end: format::Position,
    records: u64,
    bytes: u64,
    task: tokio::task::JoinHandle<()>,
}

/// Reads batches ahead of the cursor and delivers up to `in_flight` of them at once; moves
/// the cursor over each batch in order, once it and every batch before it are delivered.
/// Waits for appends when there is nothing to read, or returns then if `until_empty`.
/// Returns the records delivered.
async fn replay<S>(
    shared: &Arc<Shared>,
    sink: &Arc<S>,
    limits: ReplayLimits,
    until_empty: bool,
) -> u64
where
    S: Sink,
    S::Item: Record,
    S::Output: Delivered,
{
    sink.prepare().await;
    let mut delivered = 0;
    let mut sending: std::collections::VecDeque<Sending> = std::collections::VecDeque::new();
    let mut next = shared.log().status().cursor;
    loop {
        // Fill the window.
        let mut exhausted = false;
        while sending.len() < limits.in_flight.max(1) {
            let reader = shared.clone();
            let (max_records, max_bytes) = (limits.max_records, limits.max_bytes);
            let read = tokio::task::spawn_blocking(move || {
                reader.log().read_from(next, max_records, max_bytes)
            })
            .await;
            let frames = match read {
                Ok(Ok(frames)) => frames,
                Ok(Err(e)) => {
                    tracing::error!(route = %shared.route, error = %e, "reading the spool failed");
                    tokio::time::sleep(REPLAY_BACKOFF.1).await;
                    break;
                }
                Err(_) => return delivered,
            };
            let Some(last) = frames.last() else {
                exhausted = true;
                break;
            };
            next = last.end;
            let items: Vec<S::Item> = frames
                .iter()
                .filter_map(|f| {
                    let item = S::Item::decode(&f.payload);
                    if item.is_none() {
                        tracing::error!(route = %shared.route, "a spooled record is not a record of this route; skipped");
                    }
                    item
                })
                .collect();
            let (sink, owner) = (sink.clone(), shared.clone());
            sending.push_back(Sending {
                end: last.end,
                records: frames.len() as u64,
                bytes: frames
                    .iter()
                    .map(|f| format::frame_len(f.payload.len()))
                    .sum(),
                task: tokio::spawn(async move { deliver(sink.as_ref(), items, &owner).await }),
            });
        }
        let Some(oldest) = sending.pop_front() else {
            if exhausted && until_empty {
                return delivered;
            }
            tokio::select! {
                () = shared.appended.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        if oldest.task.await.is_err() {
            return delivered;
        }
        let acker = shared.clone();
        let (end, records, bytes) = (oldest.end, oldest.records, oldest.bytes);
        let acked = tokio::task::spawn_blocking(move || {
            let mut log = acker.log();
            log.ack(end, records, bytes).map(|()| log.status())
        })
        .await;
        match acked {
            Ok(Ok(status)) => shared.publish(status),
            Ok(Err(e)) => {
                tracing::error!(route = %shared.route, error = %e, "moving the spool cursor failed")
            }
            Err(_) => return delivered,
        }
        shared.metrics.replayed.increment(records);
        delivered += records;
    }
}

/// How the replayer reads and sends: a batch's limits (the route's), and batches at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Batches sent at once; 1 delivers strictly in order, more may interleave neighbours.
    pub in_flight: usize,
}

/// Sends `items` until the sink has accepted every one, retrying the rest with backoff. A
/// record the sink refuses for good [`DEAD_AFTER`] times moves to the dead letters, so that it
/// cannot hold up the records behind it.
async fn deliver<S>(sink: &S, items: Vec<S::Item>, shared: &Shared)
where
    S: Sink,
    S::Item: Record,
    S::Output: Delivered,
{
    let route = shared.route.as_str();
    let mut wait = REPLAY_BACKOFF.0;
    let mut items: Vec<(S::Item, u32)> = items.into_iter().map(|i| (i, 0)).collect();
    while !items.is_empty() {
        let batch: Vec<S::Item> = items.iter().map(|(i, _)| i.clone()).collect();
        match sink.put(batch, Instant::now() + REPLAY_DEADLINE).await {
            Ok(results) => {
                let mut dead = Vec::new();
                let mut again = Vec::new();
                for ((item, refusals), r) in items.into_iter().zip(results) {
                    if r.delivered() {
                        continue;
                    }
                    let refusals = refusals + u32::from(r.refused());
                    if refusals >= DEAD_AFTER {
                        dead.push(item);
                    } else {
                        again.push((item, refusals));
                    }
                }
                items = again;
                if !dead.is_empty() {
                    bury(shared, &dead).await;
                }
                if items.is_empty() {
                    shared.upstream_ok.store(true, Ordering::Relaxed);
                    return;
                }
                tracing::warn!(
                    route,
                    records = items.len(),
                    "spooled records not accepted yet; retrying"
                );
            }
            Err(e) => {
                tracing::warn!(route, error = %e, "replaying the spool failed; retrying");
            }
        }
        shared.upstream_ok.store(false, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(REPLAY_BACKOFF.1);
    }
}

/// Moves records refused for good to the route's dead letters (`dead-letter.seg`, in the
/// segment format), durably, and says so loudly.
async fn bury<I: Record>(shared: &Shared, items: &[I]) {
    let payloads: Vec<Vec<u8>> = items.iter().map(Record::to_payload).collect();
    let path = shared.dir.join(DEAD_LETTERS);
    let count = payloads.len();
    let written = tokio::task::spawn_blocking(move || log::append_frames(&path, &payloads)).await;
    match written {
        Ok(Ok(())) => {
            shared.metrics.dead_lettered.increment(count as u64);
            tracing::error!(route = %shared.route, records = count, "Spooled records were refused for good and moved to the dead letters (spool inspect --dead-letters).");
        }
        Ok(Err(e)) => {
            tracing::error!(route = %shared.route, error = %e, records = count, "Writing the dead letters failed; the records are dropped.");
        }
        Err(_) => {}
    }
}

/// The file of a route's dead letters.
pub const DEAD_LETTERS: &str = "dead-letter.seg";
/// Dead letters being sent again, set aside from the ones a running gateway adds meanwhile.
pub const RESENDING: &str = "dead-letter.resending.seg";

/// What `spool replay` delivers.
#[derive(Debug, Clone, Copy)]
pub enum Replay<'a> {
    /// Everything a spool holds, until it is empty (the caller holds the spool: no gateway
    /// runs).
    Spool(&'a Spool),
    /// A route's dead letters (in its spool directory), each sent once, once their cause is
    /// fixed: what the upstream accepts leaves them, what it does not stays. A running
    /// gateway may hold the spool meanwhile.
    DeadLetters(&'a Path),
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub delivered: u64,
    /// Dead letters the upstream still did not accept (they stay dead letters).
    pub refused: u64,
}

impl Replay<'_> {
    /// Sends through `sink`, in batches within `limits`.
    pub async fn run<S>(self, sink: S, limits: ReplayLimits) -> io::Result<Replayed>
    where
        S: Sink,
        S::Item: Record,
        S::Output: Delivered,
    {
        match self {
            Replay::Spool(spool) => Ok(Replayed {
                delivered: spool.drain(sink, limits).await,
                refused: 0,
            }),
            Replay::DeadLetters(dir) => resend_dead_letters(dir, &sink, limits).await,
        }
    }
}

/// Sends a route's dead letters once. They are first renamed aside, so that a running
/// gateway's new dead letters go to a fresh file; what is not accepted is appended back; the
/// file aside is removed last, so a run cut short is resumed (sending some again, never
/// losing one).
async fn resend_dead_letters<S>(dir: &Path, sink: &S, limits: ReplayLimits) -> io::Result<Replayed>
where
    S: Sink,
    S::Item: Record,
    S::Output: Delivered,
{
    let aside = dir.join(RESENDING);
    let dead = dir.join(DEAD_LETTERS);
    if !aside.exists() {
        match std::fs::rename(&dead, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
            Err(e) => return Err(e),
        }
    }
    let read = aside.clone();
    let payloads = tokio::task::spawn_blocking(move || log::read_frames(&read, usize::MAX))
        .await
        .map_err(io::Error::other)??;
    let mut out = Replayed::default();
    let mut back: Vec<Vec<u8>> = Vec::new();
    let mut items = Vec::new();
    for p in payloads {
        match S::Item::decode(&p) {
            Some(item) => items.push(item),
            // Not this route's kind of record: kept as it is.
            None => back.push(p),
        }
    }
    let mut start = 0;
    while start < items.len() {
        let (mut end, mut bytes) = (start, 0);
        while end < items.len()
            && end - start < limits.max_records.max(1)
            && (end == start || bytes + S::size(&items[end]) <= limits.max_bytes)
        {
            bytes += S::size(&items[end]);
            end += 1;
        }
        let batch = items[start..end].to_vec();
        match sink.put(batch, Instant::now() + REPLAY_DEADLINE).await {
            Ok(results) => {
                for (item, r) in items[start..end].iter().zip(results) {
                    if r.delivered() {
                        out.delivered += 1;
                    } else {
                        back.push(item.to_payload());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "Resending dead letters failed; they stay dead letters.");
                back.extend(items[start..end].iter().map(Record::to_payload));
            }
        }
        start = end;
    }
    out.refused = back.len() as u64;
    if !back.is_empty() {
        let path = dead.clone();
        tokio::task::spawn_blocking(move || log::append_frames(&path, &back))
            .await
            .map_err(io::Error::other)??;
    }
    std::fs::remove_file(&aside)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_directories_are_readable_and_distinct() {
        let root = Path::new("/s");
        let a = route_dir(root, "POST /v1/events");
        assert!(
            a.to_string_lossy().starts_with("/s/post-v1-events-"),
            "{a:?}"
        );
        assert_ne!(a, route_dir(root, "POST /v1/events/"));
        assert_ne!(a, route_dir(root, "post /v1/events"));
        assert_eq!(a, route_dir(root, "POST /v1/events"));
    }
}
