//! The durable spool: the on-disk log against an in-memory reference (model-based, with
//! crashes simulated by torn writes and reopening), the async spool's group commit and
//! replay, and a real crash: a child process killed with SIGKILL while it appends.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_gateway::batch::Sink;
use ingest_gateway::batch::retry::Outcome;
use ingest_gateway::integrations::IntegrationError;
use ingest_gateway::spool::format::{self, Position};
use ingest_gateway::spool::log::{self, AppendError, Log, Options};
use ingest_gateway::spool::{Fsync, Record, Settings, Spool, SpoolError};
use proptest::prelude::*;

fn fresh_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ingest-gateway-spool-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const OPTIONS: Options = Options {
    segment_bytes: 256,
    max_bytes: 1500,
};

#[derive(Debug, Clone)]
enum Op {
    /// One request's records.
    Append(Vec<Vec<u8>>),
    /// Read up to this many records and acknowledge them.
    Deliver(usize),
    /// Read without acknowledging (a send that crashed before the cursor moved).
    ReadOnly(usize),
    /// Close and open again.
    Reopen,
    /// A crash in the middle of writing a frame: this record, cut after this many bytes.
    TornWrite(Vec<u8>, usize),
    Sync,
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..120)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(record(), 1..5).prop_map(Op::Append),
        2 => (1usize..8).prop_map(Op::Deliver),
        1 => (1usize..8).prop_map(Op::ReadOnly),
        1 => Just(Op::Reopen),
        1 => (record(), any::<prop::sample::Index>()).prop_map(|(r, i)| {
            let cut = i.index(r.len() + 8);
            Op::TornWrite(r, cut)
        }),
        1 => Just(Op::Sync),
    ]
}

fn frame_bytes(records: &[Vec<u8>]) -> u64 {
    records.iter().map(|r| format::frame_len(r.len())).sum()
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn check(log: &Log, reference: &VecDeque<Vec<u8>>) -> Result<(), TestCaseError> {
    let status = log.status();
    prop_assert_eq!(status.records, reference.len() as u64);
    prop_assert_eq!(
        status.bytes,
        frame_bytes(&reference.iter().cloned().collect::<Vec<_>>())
    );
    let all: Vec<Vec<u8>> = log
        .read(usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|f| f.payload)
        .collect();
    prop_assert_eq!(&all, &reference.iter().cloned().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the order of appends, deliveries, crashes and restarts, the log holds
    /// exactly the records the reference holds: every acknowledged append, minus what was
    /// delivered, in order; a torn write is cut and loses no complete record.
    #[test]
    fn the_log_behaves_like_a_queue_through_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = fresh_dir("model");
        let (mut log, recovered) = Log::open(&dir, OPTIONS).unwrap();
        prop_assert_eq!(recovered, log::Recovered::default());
        let mut reference: VecDeque<Vec<u8>> = VecDeque::new();
        for op in ops {
            match op {
                Op::Append(records) => {
                    let used = frame_bytes(&reference.iter().cloned().collect::<Vec<_>>());
                    let fits = used + frame_bytes(&records) <= OPTIONS.max_bytes;
                    match log.append(&records) {
                        Ok(()) => {
                            prop_assert!(fits);
                            reference.extend(records);
                        }
                        Err(AppendError::Full) => prop_assert!(!fits),
                        Err(e) => return Err(TestCaseError::fail(format!("append: {e}"))),
                    }
                }
                Op::Deliver(n) => {
                    let frames = log.read(n, usize::MAX).unwrap();
                    prop_assert_eq!(frames.len(), n.min(reference.len()));
                    if let Some(last) = frames.last() {
                        let payloads: Vec<Vec<u8>> = frames.iter().map(|f| f.payload.clone()).collect();
                        for p in &payloads {
                            let expected = reference.pop_front();
                            prop_assert_eq!(Some(p), expected.as_ref());
                        }
                        log.ack(last.end, frames.len() as u64, frame_bytes(&payloads)).unwrap();
                    }
                }
                Op::ReadOnly(n) => {
                    let frames = log.read(n, usize::MAX).unwrap();
                    prop_assert_eq!(frames.len(), n.min(reference.len()));
                }
                Op::Reopen => {
                    drop(log);
                    let (l, recovered) = Log::open(&dir, OPTIONS).unwrap();
                    prop_assert_eq!(recovered.torn_bytes, 0);
                    prop_assert_eq!(recovered.records, reference.len() as u64);
                    log = l;
                }
                Op::TornWrite(record, cut) => {
                    drop(log);
                    let mut frame = Vec::new();
                    format::encode_frame(&record, &mut frame);
                    let mut f = std::fs::OpenOptions::new().append(true).open(newest_segment(&dir)).unwrap();
                    f.write_all(&frame[..cut]).unwrap();
                    drop(f);
                    let (l, recovered) = Log::open(&dir, OPTIONS).unwrap();
                    prop_assert_eq!(recovered.torn_bytes, cut as u64);
                    prop_assert_eq!(recovered.lost_bytes, 0);
                    log = l;
                }
                Op::Sync => log.sync().unwrap(),
            }
            check(&log, &reference)?;
        }
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_second_process_cannot_open_a_spool_in_use() {
    let dir = fresh_dir("lock");
    let (_log, _) = Log::open(&dir, OPTIONS).unwrap();
    let err = Log::open(&dir, OPTIONS).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_damaged_cursor_replays_from_the_oldest_segment_and_loses_nothing() {
    let dir = fresh_dir("cursor");
    let (mut log, _) = Log::open(&dir, OPTIONS).unwrap();
    let records: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 40]).collect();
    log.append(&records).unwrap();
    let frames = log.read(3, usize::MAX).unwrap();
    log.ack(frames[2].end, 3, 3 * 48).unwrap();
    drop(log);
    std::fs::write(dir.join("cursor"), b"garbage").unwrap();
    let (log, _) = Log::open(&dir, OPTIONS).unwrap();
    let again: Vec<Vec<u8>> = log
        .read(usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|f| f.payload)
        .collect();
    // Everything not delivered is there; delivered records of surviving segments come back
    // (duplicates, never losses).
    assert!(again.ends_with(&records[3..]), "{again:?}");
    assert!(again.len() >= 7);
}

#[test]
fn a_damaged_frame_in_an_older_segment_is_reported_and_the_rest_is_read() {
    let dir = fresh_dir("damage");
    let (mut log, _) = Log::open(&dir, OPTIONS).unwrap();
    for i in 0..12u8 {
        log.append(&[vec![i; 100]]).unwrap();
    }
    drop(log);
    let first = dir.join(format::segment_name(1));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[format::HEADER as usize + 8 + 108 + 20] ^= 1; // inside the second frame
    std::fs::write(&first, bytes).unwrap();
    let (log, recovered) = Log::open(&dir, OPTIONS).unwrap();
    assert_eq!(recovered.torn_bytes, 0);
    assert_eq!(recovered.lost_bytes, 108);
    let read: Vec<u8> = log
        .read(usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|f| f.payload[0])
        .collect();
    assert_eq!(read, vec![0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
}

/// A sink that fails every other call when `flaky`, refuses "poison" records for good, and
/// remembers what it accepted.
#[derive(Default, Clone)]
struct MemorySink {
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    attempts: Arc<Mutex<u32>>,
    flaky: bool,
    /// Records starting with "poison" are refused for good, and counted.
    refusals: Arc<Mutex<u32>>,
}

#[tokio::test(start_paused = true)]
async fn a_record_refused_for_good_moves_to_the_dead_letters_and_holds_nothing_up() {
    let dir = fresh_dir("dead");
    let (spool, _) = Spool::open("POST /dead", &settings(&dir, Fsync::Always)).unwrap();
    for r in ["a", "poison-1", "b"] {
        spool
            .append(vec![r.as_bytes().to_vec().to_payload()])
            .await
            .unwrap();
    }
    let sink = MemorySink::default();
    let limits = ingest_gateway::spool::ReplayLimits {
        max_records: 10,
        max_bytes: 1 << 20,
        in_flight: 1,
    };
    assert_eq!(spool.drain(sink.clone(), limits).await, 3);
    assert_eq!(spool.backlog(), 0);
    assert_eq!(
        sink.accepted.lock().unwrap().clone(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        *sink.refusals.lock().unwrap(),
        ingest_gateway::spool::DEAD_AFTER,
        "tried a few times first"
    );
    let dead = log::read_frames(
        &ingest_gateway::spool::route_dir(&dir, "POST /dead")
            .join(ingest_gateway::spool::DEAD_LETTERS),
        10,
    )
    .unwrap();
    assert_eq!(dead, vec![b"poison-1".to_vec().to_payload()]);
}

impl Sink for MemorySink {
    type Item = Vec<u8>;
    type Output = Outcome<String>;

    fn size(item: &Vec<u8>) -> usize {
        item.len()
    }

    async fn put(
        &self,
        items: Vec<Vec<u8>>,
        _deadline: tokio::time::Instant,
    ) -> Result<Vec<Outcome<String>>, IntegrationError> {
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            *a += 1;
            *a
        };
        if self.flaky && attempt % 2 == 1 {
            return Err(IntegrationError::Transport {
                action: ingest_gateway::integrations::Action::FirehosePutRecordBatch,
                detail: "refused".into(),
            });
        }
        let mut accepted = self.accepted.lock().unwrap();
        Ok(items
            .into_iter()
            .map(|i| {
                if i.starts_with(b"poison") {
                    *self.refusals.lock().unwrap() += 1;
                    return Outcome::Failed {
                        code: "KMSAccessDeniedException".into(),
                        message: "denied".into(),
                        retryable: false,
                    };
                }
                accepted.push(i);
                Outcome::Ok("id".into())
            })
            .collect())
    }
}

fn settings(dir: &Path, fsync: Fsync) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        fsync,
        replay_in_flight: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_committed_together_and_replayed_in_order_once() {
    for fsync in [Fsync::Always, Fsync::Interval(Duration::from_millis(20))] {
        let dir = fresh_dir("group");
        let (spool, _) = Spool::open("POST /v1/events", &settings(&dir, fsync)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u32 {
                    let record = format!("{t}:{i}\n").into_bytes();
                    spool.append(vec![record.to_payload()]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(spool.backlog(), 400);
        let sink = MemorySink {
            flaky: true,
            ..MemorySink::default()
        };
        let limits = ingest_gateway::spool::ReplayLimits {
            max_records: 64,
            max_bytes: 1 << 20,
            in_flight: 1,
        };
        let delivered = spool.drain(sink.clone(), limits).await;
        assert_eq!(delivered, 400);
        assert_eq!(spool.backlog(), 0);
        let accepted = sink.accepted.lock().unwrap().clone();
        assert_eq!(accepted.len(), 400, "each record once");
        // Each writer's records arrive in the order it appended them.
        for t in 0..8u32 {
            let mine: Vec<String> = accepted
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .filter(|r| r.starts_with(&format!("{t}:")))
                .collect();
            let expected: Vec<String> = (0..50).map(|i| format!("{t}:{i}\n")).collect();
            assert_eq!(mine, expected);
        }
        // Several batches at once (a flaky sink, so they finish out of order): each record
        // still arrives once, and the cursor passes only what was delivered.
        for i in 0..300u32 {
            spool
                .append(vec![format!("w:{i}\n").into_bytes().to_payload()])
                .await
                .unwrap();
        }
        let window = ingest_gateway::spool::ReplayLimits {
            max_records: 16,
            max_bytes: 1 << 20,
            in_flight: 4,
        };
        assert_eq!(spool.drain(sink.clone(), window).await, 300);
        assert_eq!(spool.backlog(), 0);
        let accepted = sink.accepted.lock().unwrap().clone();
        let mut windowed: Vec<String> = accepted[400..]
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        windowed.sort();
        let mut expected: Vec<String> = (0..300).map(|i| format!("w:{i}\n")).collect();
        expected.sort();
        assert_eq!(windowed, expected, "each record once");
        // Nothing is left to replay after a restart.
        drop(spool);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (spool, recovered) = Spool::open("POST /v1/events", &settings(&dir, fsync)).unwrap();
        assert_eq!(recovered.records, 0);
        assert_eq!(spool.backlog(), 0);
    }
}

#[tokio::test]
async fn a_full_spool_refuses_whole_requests() {
    let dir = fresh_dir("full");
    let mut s = settings(&dir, Fsync::Always);
    s.max_bytes = 1000;
    let (spool, _) = Spool::open("POST /full", &s).unwrap();
    let record = vec![7u8; 200].to_payload();
    for _ in 0..4 {
        spool.append(vec![record.clone()]).await.unwrap();
    }
    // A request that does not fit whole is refused whole.
    let refused = spool.append(vec![record.clone(), record.clone()]).await;
    assert!(matches!(refused, Err(SpoolError::Full)), "{refused:?}");
    assert_eq!(spool.backlog(), 4);
    assert_eq!(spool.status().records, 4);
}

/// The crash test's child: appends numbered records as fast as it can and prints the number
/// of each once its append returned (that is, once it is durable). Runs only when started
/// by `a_process_killed_while_appending_loses_no_acknowledged_record`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os("INGEST_GATEWAY_CRASH_CHILD_DIR") else {
        return;
    };
    let mut s = settings(Path::new(&dir), Fsync::Always);
    s.max_bytes = 256 << 20;
    let (spool, _) = Spool::open("POST /crash", &s).unwrap();
    let spool = Arc::new(spool);
    let mut next: u64 = std::env::var("INGEST_GATEWAY_CRASH_CHILD_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    loop {
        // Several appends at once, so that the kill lands amid a group commit.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let n = next;
            next += 1;
            let spool = spool.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                // Sizes vary so that frames straddle page and segment boundaries.
                let mut body = format!("{n:010}:").into_bytes();
                body.resize(11 + (n as usize * 37) % 900, b'x');
                if spool.append(vec![body.to_payload()]).await.is_ok() {
                    let mut out = out.lock().unwrap();
                    let _ = writeln!(out, "{n}");
                    let _ = out.flush();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[test]
fn a_process_killed_while_appending_loses_no_acknowledged_record() {
    let dir = fresh_dir("crash");
    let mut acked = std::collections::BTreeSet::new();
    for round in 0..5u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("INGEST_GATEWAY_CRASH_CHILD_DIR", &dir)
            .env(
                "INGEST_GATEWAY_CRASH_CHILD_FIRST",
                (round * 1_000_000).to_string(),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse::<u64>() {
                    seen.push(n);
                }
            }
            seen
        });
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let seen = reader.join().unwrap();
        assert!(
            !seen.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        acked.extend(seen);

        let spooled = ingest_gateway::spool::route_dir(&dir, "POST /crash");
        let (log, recovered) = Log::open(&spooled, OPTIONS_BIG).unwrap();
        assert_eq!(recovered.lost_bytes, 0);
        let stored: std::collections::BTreeSet<u64> = log
            .read(usize::MAX, usize::MAX)
            .unwrap()
            .iter()
            .map(|f| {
                let body = Vec::<u8>::decode(&f.payload).expect("a record");
                std::str::from_utf8(&body[..10]).unwrap().parse().unwrap()
            })
            .collect();
        let missing: Vec<&u64> = acked.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but not in the spool: {missing:?}"
        );
        eprintln!(
            "round {round}: {} acknowledged in all, {} stored, torn tail {} bytes",
            acked.len(),
            stored.len(),
            recovered.torn_bytes
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const OPTIONS_BIG: Options = Options {
    segment_bytes: 4096,
    max_bytes: 1 << 20,
};

#[test]
fn peek_reads_a_spool_in_use_without_changing_it() {
    let dir = fresh_dir("peek");
    let (mut log, _) = Log::open(&dir, OPTIONS).unwrap();
    let records: Vec<Vec<u8>> = (1..=6u8).map(|i| vec![i; 90]).collect();
    log.append(&records).unwrap();
    let frames = log.read(2, usize::MAX).unwrap();
    log.ack(frames[1].end, 2, 196).unwrap();
    assert_eq!(log::peek(&dir, 100).unwrap(), records[2..].to_vec());
    assert_eq!(log::peek(&dir, 1).unwrap(), records[2..3].to_vec());
    let survey = log::survey(&dir).unwrap();
    let waiting: u64 = survey.segments.iter().map(|s| s.records).sum();
    assert_eq!(waiting, 4);
    assert_eq!(
        log.status().cursor,
        Position {
            segment: frames[1].end.segment,
            offset: frames[1].end.offset
        }
    );
}

/// A drained active segment is replaced by a new one (its space comes back at once), and a
/// reader holding the old segment's end reads on into the new one: positions only grow.
#[test]
fn a_drained_active_segment_is_replaced_and_reading_on_loses_nothing() {
    let dir = fresh_dir("drained");
    let options = Options {
        segment_bytes: 4096,
        max_bytes: 1 << 20,
    };
    let (mut log, _) = Log::open(&dir, options).unwrap();
    log.append(&[vec![1u8; 600], vec![2u8; 600]]).unwrap();
    log.sync().unwrap();
    let frames = log.read(10, 1 << 20).unwrap();
    let end = frames.last().unwrap().end;
    let first = newest_segment(&dir);
    log.ack(end, 2, frame_bytes(&[vec![1u8; 600], vec![2u8; 600]]))
        .unwrap();
    assert!(!first.exists(), "the drained segment is gone");
    assert_ne!(newest_segment(&dir), first);
    assert_eq!(log.status().records, 0);
    log.append(&[vec![3u8; 10]]).unwrap();
    log.sync().unwrap();
    let next = log.read_from(end, 10, 1 << 20).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, vec![3u8; 10]);
    drop(log);
    // And a restart finds just that record waiting.
    let (log, recovered) = Log::open(&dir, options).unwrap();
    assert_eq!(recovered.records, 1);
    assert_eq!(log.read(10, 1 << 20).unwrap()[0].payload, vec![3u8; 10]);
}
