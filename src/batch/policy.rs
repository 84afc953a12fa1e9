//! The batching policy, apart from the plumbing: what fits in a batch, when a batch is full,
//! and how long to back off before retrying failed records. Pure; unit-tested.

use std::time::Duration;

/// Limits of one upstream call and how long to wait for more records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_records: usize,
    pub max_bytes: usize,
    /// How long the first record of a batch may wait for others.
    pub linger: Duration,
    /// Requests that may wait for a batch; beyond, they are refused (backpressure).
    pub queue: usize,
    /// Body bytes requests may hold while their records wait; beyond, a request waits
    /// before its body is read (see `dispatch::Room`).
    pub queue_bytes: usize,
    /// Pack user records into KPL aggregated records (see `integrations::kinesis::kpl`); the limits
    /// above then count user records and bytes, not upstream records.
    pub aggregate: bool,
}

/// Records gathered for one call, from one or more requests.
#[derive(Debug)]
pub struct Batch<T> {
    items: Vec<T>,
    bytes: usize,
    records: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Batch<T> {
        Batch {
            items: Vec::new(),
            bytes: 0,
            records: 0,
        }
    }
}

impl<T> Batch<T> {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether an item of `records` records and `bytes` bytes fits. An empty batch takes any
    /// item, so one that is too big on its own still goes (alone).
    pub fn fits(&self, policy: &BatchPolicy, records: usize, bytes: usize) -> bool {
        self.is_empty()
            || (self.records + records <= policy.max_records
                && self.bytes + bytes <= policy.max_bytes)
    }

    pub fn push(&mut self, item: T, records: usize, bytes: usize) {
        self.items.push(item);
        self.records += records;
        self.bytes += bytes;
    }

    /// Whether no further record could fit.
    pub fn is_full(&self, policy: &BatchPolicy) -> bool {
        self.records >= policy.max_records || self.bytes >= policy.max_bytes
    }

    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.records = 0;
        std::mem::take(&mut self.items)
    }
}

/// Exponential backoff with full jitter: a random wait in `[0, min(cap, base * 2^attempt)]`.
/// `random` is a number in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    ceiling.mul_f64(random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BatchPolicy = BatchPolicy {
        max_records: 5,
        max_bytes: 100,
        linger: Duration::from_millis(5),
        queue: 8,
        queue_bytes: 1 << 20,
        aggregate: false,
    };

    #[test]
    fn records_and_bytes_bound_a_batch() {
        let mut b: Batch<&str> = Batch::default();
        assert!(b.fits(&POLICY, 50, 1_000), "an empty batch takes anything");
        b.push("a", 3, 40);
        assert!(b.fits(&POLICY, 2, 60));
        assert!(!b.fits(&POLICY, 3, 10), "too many records");
        assert!(!b.fits(&POLICY, 1, 61), "too many bytes");
        b.push("b", 2, 10);
        assert!(b.is_full(&POLICY));
        assert_eq!(b.take(), vec!["a", "b"]);
        assert!(b.is_empty() && b.records() == 0 && !b.is_full(&POLICY));
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let base = Duration::from_millis(50);
        let cap = Duration::from_secs(1);
        assert_eq!(backoff(0, base, cap, 1.0), base);
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(10, base, cap, 1.0), cap);
        assert_eq!(backoff(40, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::ZERO);
    }
}
